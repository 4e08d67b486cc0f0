"""The ImageNet recipe's input steps, from a dataset's settings: each image cropped (random-resized for
training, resize and centre crop for evaluation), then each training batch flipped, RandAugmented,
randomly erased and mixed (mixup or cutmix on label-smoothed targets). The same functions run in the
tf.data pipeline (TensorFlow) and in `ArrayBatches` (any other backend): `keras.ops` and Keras's own
layers, on the backend's tensors."""

import keras
import numpy as np
from keras import ops

from ngl_keras import imagenet_recipe


def crop(image, settings, training, uniforms=None):
    """One (H, W, C) image of any size as (image_size, image_size, C) float32: a random-resized crop
    from `uniforms` (shape (imagenet_recipe.CROP_ATTEMPTS, 4), in [0, 1)) when `training`, else the
    evaluation's resize to `crop.evaluation_resize` and centre crop."""
    size, box = settings.image_size, settings.crop
    if not training:
        return imagenet_recipe.center_crop_for_evaluation(image, box.evaluation_resize, size)
    shape = ops.shape(image)
    top, left, height, width = imagenet_recipe.random_resized_crop_box(shape[0], shape[1], uniforms,
                                                                       box.scale, box.ratio)
    return imagenet_recipe.crop_and_resize(image, top, left, height, width, size)


def crop_on_host(image, settings, training, rng):
    """`crop` of one uint8 numpy image on the host (`ArrayBatches`): the same box (torchvision's rule,
    `imagenet_recipe.random_resized_crop_box`, from `rng`; or the evaluation's centred square), resampled
    by PIL (bilinear, as the reference's PIL resampling; tf.data uses `crop`'s), uint8 out."""
    from PIL import Image

    height, width = image.shape[:2]
    size, box = settings.image_size, settings.crop
    if training:
        uniforms = rng.random((imagenet_recipe.CROP_ATTEMPTS, 4)).astype("float32")
        top, left, box_h, box_w = (float(ops.convert_to_numpy(v)) for v in imagenet_recipe.random_resized_crop_box(
            height, width, uniforms, box.scale, box.ratio))
    else:
        box_h = box_w = min(height, width) * size / box.evaluation_resize
        top, left = (height - box_h) / 2, (width - box_w) / 2
    channels = image.shape[-1]
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = picture.resize((size, size), Image.BILINEAR, box=(left, top, left + box_w, top + box_h))
    return np.asarray(out).reshape(size, size, channels)


class BatchAugmentation:
    """(images in [0, 255], class ids) of a training batch -> (augmented images, targets): flip,
    RandAugment, random erasing (each when its setting is given, per image), then mixup or cutmix
    (`imagenet_recipe.MixUpOrCutMix`) or one-hot targets."""

    def __init__(self, settings, classes, seed=None):
        seeds = [None if seed is None else seed + i for i in range(4)]
        self.classes = classes
        self.layers = []
        if settings.flip:
            self.layers.append(keras.layers.RandomFlip("horizontal", seed=seeds[0]))
        if settings.randaugment is not None:
            self.layers.append(keras.layers.RandAugment(
                value_range=(0, 255), num_ops=settings.randaugment.num_ops,
                factor=settings.randaugment.strength, seed=seeds[1]))
        if settings.random_erasing:
            probability = settings.random_erasing  # Keras draws the probability from a range: one point fixes it
            self.layers.append(keras.layers.RandomErasing(
                factor=(probability, probability), scale=imagenet_recipe.RANDOM_ERASING_AREA,
                value_range=(0, 255), seed=seeds[2]))
        mix = settings.mix
        self.mix = None if mix is None else imagenet_recipe.MixUpOrCutMix(
            classes, mixup_alpha=mix.mixup_alpha, cutmix_alpha=mix.cutmix_alpha,
            switch_probability=mix.switch_probability, label_smoothing=mix.label_smoothing, seed=seeds[3])

    def __call__(self, images, labels):
        images = ops.cast(images, "float32")
        for layer in self.layers:
            images = layer(images, training=True)
        if self.mix is not None:
            return self.mix(images, labels)
        return images, ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.classes)


def as_numpy(images, targets):
    return np.asarray(ops.convert_to_numpy(images), "float32"), np.asarray(ops.convert_to_numpy(targets), "float32")
