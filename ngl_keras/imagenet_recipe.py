"""The ImageNet training recipe (the published Swin recipe, microsoft/Swin-Transformer config.py,
main.py, lr_scheduler.py and data/build.py; SPEC §7): the learning rate scaled with the global batch,
linear warm-up then cosine decay per step, AdamW without weight decay on norms, biases and position
tables, gradient clipping, mixup or cutmix with label smoothing, random-resized crop, RandAugment,
random erasing, and the evaluation's resize and centre crop.

Keras's own pieces where they exist (`CosineDecay` with `warmup_steps`, `AdamW` with
`exclude_from_weight_decay` and `global_clipnorm`, `MixUp`, `CutMix`, `RandAugment`, `RandomFlip`,
`RandomErasing`); written here only what Keras lacks: the mixup-or-cutmix switch and the crops.
Every setting is an explicit argument, ready to be filled from a config.

    lr = learning_rate_schedule(global_batch=1024, steps_per_epoch=1251)
    optimizer = adamw(model, lr)
    mix = MixUpOrCutMix(num_classes=1000, seed=0)        # (images, int labels) -> (images, soft targets)
    augment = train_augmentation(seed=0)                 # one decoded image -> 224 x 224 x 3

Differs from the published code, on purpose (Keras's layers draw their own way):
- Mixup weights are drawn per sample (Keras `MixUp`), where timm's 'batch' mode draws one per batch;
  cutmix's weight follows the box that was cut, as timm's `correct_lam`.
- RandAugment is Keras's (two operations, strength 0.9 for m9 of 10); timm's magnitude noise
  (mstd 0.5) has no Keras setting. Colour jitter is absent as in the reference, where timm
  disables it whenever RandAugment is on.
- The crops resample bilinearly without anti-aliasing (two 1-D interpolations: a fixed output
  shape on every backend and under jit, images of any size in tf.data); the reference resizes with PIL bicubic.
- Random erasing runs on [0, 255] images before normalisation with Keras's noise fill; the
  reference erases normalised images with per-pixel normal noise.
"""

import math

import keras
from keras import ops

from ngl_keras.losses.base import PACKAGE

# The published Swin recipe (config.py): per 512 images, scaled linearly with the global batch (main.py).
BASE_LR_PER_512 = 5e-4
WARMUP_LR_PER_512 = 5e-7
MIN_LR_PER_512 = 5e-6
EPOCHS = 300
WARMUP_EPOCHS = 20
WEIGHT_DECAY = 0.05
BETAS = (0.9, 0.999)
EPSILON = 1e-8
GLOBAL_CLIPNORM = 5.0
MIXUP_ALPHA = 0.8
CUTMIX_ALPHA = 1.0
SWITCH_PROBABILITY = 0.5
LABEL_SMOOTHING = 0.1
RANDAUGMENT_OPS = 2
RANDAUGMENT_STRENGTH = 0.9          # m9 of timm's 10
RANDOM_ERASING_PROBABILITY = 0.25
RANDOM_ERASING_AREA = (0.02, 1 / 3)
CROP_SIZE = 224
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
EVALUATION_RESIZE = 256
CROP_ATTEMPTS = 10                  # torchvision's RandomResizedCrop tries ten boxes, then a centre crop

NO_WEIGHT_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def linear_scaled(value_per_512, global_batch):
    """A learning rate given per 512 images, for `global_batch` images per step (Goyal et al. 2017)."""
    return value_per_512 * global_batch / 512


def learning_rate_schedule(global_batch, steps_per_epoch, epochs=EPOCHS, warmup_epochs=WARMUP_EPOCHS,
                           base_lr_per_512=BASE_LR_PER_512, warmup_lr_per_512=WARMUP_LR_PER_512,
                           min_lr_per_512=MIN_LR_PER_512):
    """Per step: linear from the warm-up lr to the base lr over the warm-up, then cosine down to the
    minimum lr at the last step (timm's CosineLRScheduler with warmup_prefix, as the reference):

        lr(t) = warmup + (base - warmup) t / W                           for t < W
        lr(t) = min + (base - min) (1 + cos(pi (t - W) / (T - W))) / 2   for W <= t <= T
    """
    base = linear_scaled(base_lr_per_512, global_batch)
    warmup_steps = warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=linear_scaled(warmup_lr_per_512, global_batch), warmup_target=base,
        warmup_steps=warmup_steps, decay_steps=epochs * steps_per_epoch - warmup_steps,
        alpha=linear_scaled(min_lr_per_512, global_batch) / base)


def no_weight_decay_variables(model, names=NO_WEIGHT_DECAY_NAMES):
    """The reference's exclusions: every 1-D variable (norms' scales and offsets, biases) and the
    variables whose path holds one of `names` (the position tables)."""
    return [v for v in model.trainable_variables
            if len(v.shape) <= 1 or any(name in v.path for name in names)]


def adamw(model, learning_rate, weight_decay=WEIGHT_DECAY, global_clipnorm=GLOBAL_CLIPNORM, betas=BETAS,
          epsilon=EPSILON):
    """AdamW with PyTorch's ε, the gradient clipped to a global norm, and no weight decay on
    `no_weight_decay_variables(model)`."""
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, beta_1=betas[0],
                                       beta_2=betas[1], epsilon=epsilon, global_clipnorm=global_clipnorm)
    optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return optimizer


def smoothed_one_hot(labels, num_classes, label_smoothing):
    """Class ids -> targets 1 - ε + ε/K on the class and ε/K elsewhere (timm's mixup targets)."""
    one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), num_classes)
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


@keras.saving.register_keras_serializable(package=PACKAGE)
class MixUpOrCutMix(keras.layers.Layer):
    """Every batch gets mixup or cutmix, cutmix with probability `switch_probability` (timm's Mixup
    with both on): (images, class ids) -> (mixed images, soft targets that sum to one). Label
    smoothing is applied to the targets before they are mixed. Keras's `MixUp` and `CutMix` do the
    mixing; both run and the batch keeps one, so it runs under jit on every backend."""

    def __init__(self, num_classes, mixup_alpha=MIXUP_ALPHA, cutmix_alpha=CUTMIX_ALPHA,
                 switch_probability=SWITCH_PROBABILITY, label_smoothing=LABEL_SMOOTHING, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= switch_probability <= 1.0:
            raise ValueError(f"MixUpOrCutMix: switch_probability {switch_probability} is not in [0, 1]")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.switch_probability, self.label_smoothing, self.seed = switch_probability, label_smoothing, seed
        other_seed = None if seed is None else seed + 1
        self.mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed)
        # A fixed Beta(α, α) as timm: CutMix draws α itself from its `factor` range, so the range is one point.
        self.cutmix = keras.layers.CutMix(factor=(cutmix_alpha, cutmix_alpha), seed=other_seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, labels):
        targets = smoothed_one_hot(labels, self.num_classes, self.label_smoothing)
        data = {"images": ops.cast(images, self.compute_dtype), "labels": targets}
        mixed, cut = self.mixup(data), self.cutmix(data)
        use_cutmix = keras.random.uniform((), seed=self.seed_generator) < self.switch_probability
        return (ops.where(use_cutmix, cut["images"], mixed["images"]),
                ops.where(use_cutmix, cut["labels"], mixed["labels"]))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "mixup_alpha": self.mixup_alpha,
                "cutmix_alpha": self.cutmix_alpha, "switch_probability": self.switch_probability,
                "label_smoothing": self.label_smoothing, "seed": self.seed}


def crop_and_resize(image, top, left, height, width, size):
    """The box (top, left, height, width) of one (H, W, C) image, resampled bilinearly to
    (size, size, C) with pixel centres aligned (as `ops.image.resize`); the box may be fractional.
    Samples outside the image take the nearest pixel (as `ops.image.map_coordinates` with
    fill_mode "nearest"); done as two 1-D interpolations with `take`, so that the image's size may be
    unknown until run time (a tf.data pipeline of images of any size)."""
    steps = (ops.arange(size, dtype="float32") + 0.5) / size
    rows = ops.cast(top, "float32") + steps * ops.cast(height, "float32") - 0.5
    cols = ops.cast(left, "float32") + steps * ops.cast(width, "float32") - 0.5
    shape = ops.shape(image)
    image = ops.cast(image, "float32")
    image = _interpolate(image, rows, shape[0], axis=0)
    return _interpolate(image, cols, shape[1], axis=1)


def _interpolate(image, coordinates, length, axis):
    """Linear interpolation of `image` along `axis` at `coordinates`, clamped to [0, length - 1]."""
    last = ops.cast(length, "float32") - 1.0
    coordinates = ops.clip(coordinates, 0.0, last)
    below = ops.floor(coordinates)
    above = ops.minimum(below + 1.0, last)
    weight = coordinates - below
    weight = ops.reshape(weight, (-1, 1, 1) if axis == 0 else (1, -1, 1))
    low = ops.take(image, ops.cast(below, "int32"), axis=axis)
    high = ops.take(image, ops.cast(above, "int32"), axis=axis)
    return low * (1.0 - weight) + high * weight


def random_resized_crop_box(height, width, uniforms, scale=CROP_SCALE, ratio=CROP_RATIO):
    """torchvision's RandomResizedCrop box for an image of (height, width) from `uniforms` of shape
    (CROP_ATTEMPTS, 4): the first of the attempts whose area fraction (from `scale`) and aspect ratio
    (log-uniform in `ratio`) fit the image, else the centre crop at the nearest allowed ratio.
    Returns (top, left, box height, box width) as float scalars of whole pixels."""
    height, width = ops.cast(height, "float32"), ops.cast(width, "float32")
    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniforms[:, 0])
    aspect = ops.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniforms[:, 1])
    box_w, box_h = ops.round(ops.sqrt(area * aspect)), ops.round(ops.sqrt(area / aspect))
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = ops.argmax(ops.cast(fits, "int32"))
    image_ratio = width / height
    fallback_w = ops.where(image_ratio > ratio[1], ops.round(height * ratio[1]), width)
    fallback_h = ops.where(image_ratio < ratio[0], ops.round(width / ratio[0]), height)
    found = ops.any(fits)
    box_h = ops.where(found, ops.take(box_h, first), fallback_h)
    box_w = ops.where(found, ops.take(box_w, first), fallback_w)
    top = ops.where(found, ops.floor(ops.take(uniforms[:, 2], first) * (height - box_h + 1)),
                    ops.floor((height - box_h) / 2))
    left = ops.where(found, ops.floor(ops.take(uniforms[:, 3], first) * (width - box_w + 1)),
                     ops.floor((width - box_w) / 2))
    return top, left, box_h, box_w


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomResizedCrop(keras.layers.Layer):
    """Inception-style random-resized crop of one (H, W, C) image of any size to (size, size, C):
    area fraction uniform in `scale`, aspect ratio log-uniform in `ratio` (torchvision's rule).
    At inference: `center_crop_for_evaluation`."""

    def __init__(self, size=CROP_SIZE, scale=CROP_SCALE, ratio=CROP_RATIO, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.size, self.scale, self.ratio, self.seed = size, tuple(scale), tuple(ratio), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, image, training=True):
        if not training:
            return center_crop_for_evaluation(image, crop=self.size)
        uniforms = keras.random.uniform((CROP_ATTEMPTS, 4), seed=self.seed_generator)
        shape = ops.shape(image)
        box = random_resized_crop_box(shape[0], shape[1], uniforms, self.scale, self.ratio)
        return crop_and_resize(image, *box, self.size)

    def compute_output_shape(self, input_shape):
        return (self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "scale": self.scale, "ratio": self.ratio,
                "seed": self.seed}


def center_crop_for_evaluation(image, resize=EVALUATION_RESIZE, crop=CROP_SIZE):
    """The evaluation transform of one (H, W, C) image: shorter side resized to `resize`, then the
    centre `crop` x `crop`; done as one resampling of the centred square of side
    min(H, W) * crop / resize."""
    shape = ops.shape(image)
    height, width = ops.cast(shape[0], "float32"), ops.cast(shape[1], "float32")
    side = ops.minimum(height, width) * (crop / resize)
    return crop_and_resize(image, (height - side) / 2, (width - side) / 2, side, side, crop)


def train_augmentation(size=CROP_SIZE, randaugment_ops=RANDAUGMENT_OPS, randaugment_strength=RANDAUGMENT_STRENGTH,
                       erasing_probability=RANDOM_ERASING_PROBABILITY, erasing_area=RANDOM_ERASING_AREA, seed=None):
    """The per-image training transform of the recipe on one decoded [0, 255] image: random-resized
    crop, horizontal flip, RandAugment, random erasing. Mixup/cutmix then acts on the batch."""
    seeds = [None if seed is None else seed + i for i in range(4)]
    return keras.Sequential([
        RandomResizedCrop(size, seed=seeds[0]),
        keras.layers.RandomFlip("horizontal", seed=seeds[1]),
        keras.layers.RandAugment(value_range=(0, 255), num_ops=randaugment_ops, factor=randaugment_strength,
                                 seed=seeds[2]),
        # `factor` is the probability of erasing, drawn from its range: a one-point range fixes it.
        keras.layers.RandomErasing(factor=(erasing_probability, erasing_probability), scale=erasing_area,
                                   value_range=(0, 255), seed=seeds[3]),
    ], name="train_augmentation")
