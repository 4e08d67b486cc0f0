"""Keras layers for input on the accelerator, on any Keras backend: the evaluation's augmentation
and the backbones' preprocessing, registered so that a model built with them saves and reloads."""

import keras
from keras import ops

from ngl_keras import models
from ngl_keras.data.augmentation import Augmentation, affine_transform
from ngl_keras.losses.base import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomAffine(keras.layers.Layer):
    """ImageDataGenerator-style augmentation as a layer: random horizontal flip, shifts (fractions
    of width and height) and independent x/y zoom, fill "nearest", resampled once per image.

    The same kernel (`data.affine_transform`) and parameter distribution (`data.Augmentation`) as
    the tf.data pipeline's, drawn from a Keras SeedGenerator, so it runs in the model on any
    backend and under jit_compile (Keras's RandomTranslation and RandomZoom turn jit off).
    Active in training only.
    """

    def __init__(self, horizontal_flip=True, width_shift=0.1, height_shift=0.1, zoom=0.2, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.augmentation = Augmentation(horizontal_flip, width_shift, height_shift, zoom)  # checks ranges
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        u = keras.random.uniform((ops.shape(images)[0], 5), seed=self.seed_generator)
        out = affine_transform(images, *self.augmentation.parameters(u))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        aug = self.augmentation
        return {**super().get_config(), "horizontal_flip": aug.horizontal_flip, "width_shift": aug.width_shift,
                "height_shift": aug.height_shift, "zoom": aug.zoom, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Preprocess(keras.layers.Layer):
    """The input preprocessing of a registered model (`models.info(model).preprocess`: the
    backbone's keras.applications preprocess_input, or scaling to [0, 1]) as a layer that
    serializes by the model's name, where a Lambda layer would serialize Python bytecode."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model_name = models.info(model).name  # checks the name

    def call(self, images):
        return models.info(self.model_name).preprocess(ops.cast(images, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "model": self.model_name}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GrayToRGB(keras.layers.Layer):
    """One gray channel repeated to three, as tf.image.grayscale_to_rgb."""

    def call(self, images):
        return ops.concatenate([images, images, images], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)


def input_layers(x, *, image_size, channels, model, augmentation=None, seed=None):
    """The input pipeline's per-batch transforms as layers applied to `x`: resize (bilinear), gray to
    `channels`, `augmentation` (a `data.Augmentation`; training only) and `model`'s preprocessing, the
    same steps in the same order as `ngl_keras.data.input_pipeline`. All in float32 whatever the
    dtype policy: the model after them casts to its compute dtype.
    """
    if x.shape[1] != image_size or x.shape[2] != image_size:
        x = keras.layers.Resizing(image_size, image_size, interpolation="bilinear", dtype="float32")(x)
    if x.shape[-1] == 1 and channels == 3:
        x = GrayToRGB(dtype="float32")(x)
    if augmentation is not None:
        x = RandomAffine(augmentation.horizontal_flip, augmentation.width_shift, augmentation.height_shift,
                         augmentation.zoom, seed=seed, dtype="float32")(x)
    return Preprocess(model, name="preprocess", dtype="float32")(x)
