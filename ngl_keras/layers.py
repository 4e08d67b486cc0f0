"""Keras layers for input on the accelerator, on any Keras backend."""

import keras
from keras import ops

from ngl_keras.data import Augmentation
from ngl_keras.losses.base import PACKAGE


def affine_transform(images, flip, shift_x, shift_y, zoom_x, zoom_y):
    """`ngl_keras.data.affine_transform` in keras.ops: the same flip, shift and zoom per image in
    one separable bilinear resampling with nearest fill, for any backend and inside jit.

    images: (batch, height, width, channels) with static height and width; the rest: (batch,).
    """
    images = ops.cast(images, "float32")
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"affine_transform needs static image height and width; got shape {images.shape}.")
    zoom_x, zoom_y = ops.cast(zoom_x, "float32"), ops.cast(zoom_y, "float32")
    sign = ops.where(flip, -1.0, 1.0)
    origin = ops.where(flip, float(width - 1), 0.0)
    ax, bx = zoom_x * sign, _offset(zoom_x, width, shift_x) + zoom_x * origin
    ay, by = zoom_y, _offset(zoom_y, height, shift_y)

    def taps(a, b, n):
        s = ops.clip(a[:, None] * ops.arange(n, dtype="float32")[None, :] + b[:, None], 0.0, float(n - 1))
        low = ops.floor(s)
        index = ops.cast(low, "int32")
        return index, ops.minimum(index + 1, n - 1), s - low

    y0, y1, wy = taps(ay, by, height)
    x0, x1, wx = taps(ax, bx, width)
    top = ops.take_along_axis(images, y0[:, :, None, None], axis=1)
    rows = top + wy[:, :, None, None] * (ops.take_along_axis(images, y1[:, :, None, None], axis=1) - top)
    left = ops.take_along_axis(rows, x0[:, None, :, None], axis=2)
    return left + wx[:, None, :, None] * (ops.take_along_axis(rows, x1[:, None, :, None], axis=2) - left)


def _offset(zoom, size, shift):
    centre = (size - 1) / 2.0
    return centre - zoom * centre + ops.cast(shift, "float32") * float(size)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomAffine(keras.layers.Layer):
    """ImageDataGenerator-style augmentation as a layer: random horizontal flip, shifts (fractions
    of width and height) and independent x/y zoom, fill "nearest", resampled once per image.

    The same transforms and parameter distribution as `ngl_keras.data.Augmentation` (the tf.data
    pipeline's), drawn from a Keras SeedGenerator, so it runs in the model on any backend and under
    jit_compile (Keras's RandomTranslation and RandomZoom turn jit off). Active in training only.
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


def input_layers(x, *, image_size, channels, preprocess, augmentation=None, seed=None):
    """The input pipeline's per-batch transforms as layers applied to `x`: resize (bilinear), gray to
    `channels`, `augmentation` (a `data.Augmentation`; training only) and `preprocess`, the same
    steps in the same order as `ngl_keras.data.input_pipeline`. All in float32 whatever the dtype
    policy: the model after them casts to its compute dtype.
    """
    if x.shape[1] != image_size or x.shape[2] != image_size:
        x = keras.layers.Resizing(image_size, image_size, interpolation="bilinear", dtype="float32")(x)
    if x.shape[-1] == 1 and channels == 3:
        x = keras.layers.Concatenate(dtype="float32")([x, x, x])
    if augmentation is not None:
        x = RandomAffine(augmentation.horizontal_flip, augmentation.width_shift, augmentation.height_shift,
                         augmentation.zoom, seed=seed, dtype="float32")(x)
    return keras.layers.Lambda(preprocess, name="preprocess", dtype="float32")(x)
