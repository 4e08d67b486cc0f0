"""The training recipe: a dataset's optimizer, learning-rate schedule and dtype policy."""

import keras


def optimizer(settings, model=None, steps_per_epoch=None, global_batch=None):
    """The dataset's optimizer: SGD with momentum, Adam, or AdamW (the ImageNet recipes: no weight
    decay on `model`'s 1-D variables and those named in `no_weight_decay`, gradient clipped to a
    global norm), at its learning rate or its `schedule` over `steps_per_epoch` steps per epoch;
    rates scaled for `global_batch` images per step when the optimizer gives a `reference_batch`."""
    opt = settings.optimizer
    rate = learning_rate(settings, steps_per_epoch, global_batch)
    if opt.name == "sgd":
        return keras.optimizers.SGD(rate, momentum=opt.momentum)
    if opt.name == "adam":
        return keras.optimizers.Adam(rate)
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
    opt, schedule = settings.optimizer, settings.schedule
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
                         f"got {mixed_precision!r}.")
    return mixed_precision


DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
