"""The training recipe: a dataset's optimizer, learning-rate schedule and dtype policy."""

import keras

from ngl_keras.settings import shown

def optimizer(settings, model=None, steps_per_epoch=None, global_batch=None, steps=None):
    """The dataset's optimizer: SGD with momentum, Adam, or AdamW (the ImageNet recipes: no weight
    decay on `model`'s 1-D variables and those named in `no_weight_decay`, gradient clipped to a
    global norm), at its learning rate or its `schedule` over `steps_per_epoch` steps per epoch;
    rates scaled for `global_batch` images per step when the optimizer gives a `reference_batch`.
    With `poly_power` the learning rate follows the poly schedule lr · (1 − iteration / steps)^power
    over the run's `steps` iterations (DeepLab's); SGD's and Adam's `weight_decay` is Keras's
    decoupled weight decay."""
    opt = settings.optimizer
    rate = learning_rate(settings, steps_per_epoch, global_batch)
    if opt.poly_power is not None:
        if not steps:
            raise ValueError("a poly schedule needs the run's number of iterations.")
        rate = keras.optimizers.schedules.PolynomialDecay(rate, decay_steps=steps, end_learning_rate=0.0,
                                                          power=opt.poly_power)
    if opt.name in ("sgd", "adam"):
        decay = {"weight_decay": opt.weight_decay} if opt.weight_decay else {}
        if opt.name == "sgd":
            return keras.optimizers.SGD(rate, momentum=opt.momentum, **decay)
        return keras.optimizers.Adam(rate, **decay)
    from ngl_keras import imagenet_recipe

    # Keras's defaults where the config is silent (weight decay 0.004, epsilon 1e-7: not PyTorch's)
    given = {k: getattr(opt, k) for k in ("weight_decay", "beta_1", "beta_2", "epsilon", "global_clipnorm")
             if getattr(opt, k) is not None}
    adamw = keras.optimizers.AdamW(rate, **given)
    if opt.no_weight_decay is not None:
        adamw.exclude_from_weight_decay(var_list=imagenet_recipe.no_weight_decay_variables(
            model, tuple(opt.no_weight_decay)))
    return adamw


def learning_rate(settings, steps_per_epoch=None, global_batch=None):
    """The optimizer's learning rate (scaled for `global_batch`), or its schedule: warm-up then
    cosine (`imagenet_recipe.learning_rate_schedule`, the Swin recipe's formula)."""
    opt, schedule = settings.optimizer, getattr(settings, "schedule", None)  # segmentation's have none
    batch = global_batch or settings.batch_size
    if schedule is None:
        return opt.learning_rate * opt.scale(batch)
    from ngl_keras import imagenet_recipe

    per_512 = 512 / (opt.reference_batch or batch)  # the formula takes rates per 512 images and scales them
    return imagenet_recipe.learning_rate_schedule(
        batch, steps_per_epoch, epochs=settings.epochs, warmup_epochs=schedule.warmup_epochs,
        base_lr_per_512=opt.learning_rate * per_512, warmup_lr_per_512=schedule.warmup_learning_rate * per_512,
        min_lr_per_512=schedule.min_learning_rate * per_512)


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
