"""The training recipe: a dataset's optimizer, learning-rate schedule and dtype policy."""

import keras

from ngl_keras.settings import shown


def optimizer(settings, steps=None):
    """The dataset's optimizer: SGD with momentum, or Adam, at its learning rate; with `poly_power`
    the learning rate follows the poly schedule lr · (1 − iteration / steps)^power over the run's
    `steps` iterations (DeepLab's), and `weight_decay` is Keras's decoupled weight decay."""
    opt = settings.optimizer
    rate = opt.learning_rate
    if opt.poly_power is not None:
        if not steps:
            raise ValueError("a poly schedule needs the run's number of iterations.")
        rate = keras.optimizers.schedules.PolynomialDecay(rate, decay_steps=steps, end_learning_rate=0.0,
                                                          power=opt.poly_power)
    decay = {"weight_decay": opt.weight_decay} if opt.weight_decay else {}
    if opt.name == "sgd":
        return keras.optimizers.SGD(rate, momentum=opt.momentum, **decay)
    return keras.optimizers.Adam(rate, **decay)


def schedule_callbacks(settings):
    """ReduceLROnPlateau with the dataset's settings (none when `reduce_lr` is null: Table
    B.2.1's SGD datasets), and a stop on a NaN loss."""
    reduce = settings.reduce_lr
    # Keras's "auto" mode takes a monitor without "acc" in its name for a loss: mean IoU is maximised
    mode = {"mode": "max"} if reduce is not None and "miou" in reduce.monitor else {}
    plateau = [] if reduce is None else [keras.callbacks.ReduceLROnPlateau(
        monitor=reduce.monitor, factor=reduce.factor, patience=reduce.patience, min_lr=reduce.min_lr, **mode)]
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
