"""The training recipe: a dataset's optimizer, learning-rate schedule and dtype policy."""

import keras

from ngl_keras.settings import shown


def optimizer(settings):
    """The dataset's optimizer: SGD with momentum, or Adam, at its learning rate."""
    opt = settings.optimizer
    if opt.name == "sgd":
        return keras.optimizers.SGD(opt.learning_rate, momentum=opt.momentum)
    return keras.optimizers.Adam(opt.learning_rate)


def schedule_callbacks(settings):
    """ReduceLROnPlateau with the dataset's settings (none when `reduce_lr` is null: Table
    B.2.1's SGD datasets), and a stop on a NaN loss."""
    reduce = settings.reduce_lr
    plateau = [] if reduce is None else [keras.callbacks.ReduceLROnPlateau(
        monitor=reduce.monitor, factor=reduce.factor, patience=reduce.patience, min_lr=reduce.min_lr)]
    return plateau + [keras.callbacks.TerminateOnNaN()]


def dtype_policy(mixed_precision):
    """The Keras dtype policy for a `mixed_precision` setting: False, True (mixed_float16) or a name."""
    if mixed_precision in (False, None):
        return "float32"
    if mixed_precision is True:
        return "mixed_float16"
    if mixed_precision not in DTYPE_POLICIES:
        raise ValueError(f"mixed_precision must be true, false or one of {', '.join(DTYPE_POLICIES)}; "
                         f"got {shown(mixed_precision)}.")
    return mixed_precision


DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
