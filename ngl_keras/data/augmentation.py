"""Augmentation: its settings and the one affine kernel that applies it, in tf.data or in a layer."""

import functools
from dataclasses import dataclass, field

from ngl_keras import settings as settings_module
from ngl_keras.settings import finite

_SHIFT = settings_module.check(finite(lambda v: 0.0 <= v < 1.0), "in [0, 1)",
                               "augmentation {key} must lie in [0, 1); got {value!r}.")


@dataclass(frozen=True)
class Augmentation(settings_module.Settings):
    """ImageDataGenerator-style augmentation (the published example's settings by default).

    The same transforms as Keras's RandomFlip("horizontal"), RandomTranslation and RandomZoom
    with fill_mode "nearest", and as ImageDataGenerator(horizontal_flip, width_shift_range,
    height_shift_range, zoom_range), composed into one axis-aligned resampling per image, so a
    batch is resampled once instead of once per layer.
    """

    horizontal_flip: bool = True
    width_shift: float = field(default=0.1, metadata=_SHIFT)
    height_shift: float = field(default=0.1, metadata=_SHIFT)
    zoom: float = field(default=0.2, metadata=_SHIFT)

    @property
    def active(self):
        """Whether it changes images at all (in-memory arrays have it off by default)."""
        return bool(self.horizontal_flip or self.width_shift or self.height_shift or self.zoom)

    def parameters(self, u):
        """(flip, shift_x, shift_y, zoom_x, zoom_y) per image from uniforms `u` in [0, 1) of shape
        (batch, 5); plain arithmetic, so TensorFlow tensors and keras.ops tensors both work."""
        flip = u[:, 0] < (0.5 if self.horizontal_flip else 0.0)  # never true without flips
        return (flip, (2.0 * u[:, 1] - 1.0) * self.width_shift, (2.0 * u[:, 2] - 1.0) * self.height_shift,
                1.0 + (2.0 * u[:, 3] - 1.0) * self.zoom, 1.0 + (2.0 * u[:, 4] - 1.0) * self.zoom)

    def random_parameters(self, batch, seed):
        """`parameters` drawn from a stateless seed."""
        import tensorflow as tf

        seeds = tf.stack([seed, tf.constant(0, tf.int64)])
        return self.parameters(tf.random.stateless_uniform((batch, 5), seeds))

    def __call__(self, images, seed):
        """The augmented batch, in a tf.data pipeline (TensorFlow backend)."""
        import tensorflow as tf

        return _compiled_affine_transform()(images, *self.random_parameters(tf.shape(images)[0], seed))


def affine_transform(images, flip, shift_x, shift_y, zoom_x, zoom_y):
    """Flip (bool per image), shift (fraction of width/height) and zoom (coordinate scale,
    < 1 zooms in) each image of a batch in one bilinear resampling, nearest-pixel fill.

    Output pixel (x, y) reads input (ax·x + bx, ay·y + by), the coordinate clamped to the image
    (nearest fill), bilinearly: the same image as ImageProjectiveTransformV3 with that matrix.
    The transform is axis-aligned, so the resampling is done as two 1-D interpolations (rows,
    then columns), each two row gathers from the flattened batch and a lerp. Written once in
    keras.ops: the tf.data pipeline runs it XLA-compiled on TensorFlow, and `layers.RandomAffine`
    runs it on the device on any backend. About 3x faster than the general projective kernel
    on a CPU (benchmarks/input_pipeline.py).

    images: (batch, height, width, channels) with static height and width; the rest: (batch,).
    """
    from keras import ops

    images = ops.cast(images, "float32")
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"affine_transform needs static image height and width; got shape {images.shape}.")
    zoom_x, zoom_y = ops.cast(zoom_x, "float32"), ops.cast(zoom_y, "float32")
    sign = ops.where(flip, -1.0, 1.0)
    origin = ops.where(flip, float(width - 1), 0.0)
    rows = _resample_rows(images, zoom_y, _offset(zoom_y, height, shift_y))
    columns = _resample_rows(ops.transpose(rows, (0, 2, 1, 3)), zoom_x * sign,
                             _offset(zoom_x, width, shift_x) + zoom_x * origin)
    return ops.transpose(columns, (0, 2, 1, 3))


def _offset(zoom, size, shift):
    """b of the source coordinate a·x + b that zooms about the centre and shifts by shift·size."""
    from keras import ops

    centre = (size - 1) / 2.0
    return centre - zoom * centre + ops.cast(shift, "float32") * float(size)


def _resample_rows(images, a, b):
    """Axis 1 of (batch, n, ...) images read at a·i + b (per image), clamped, bilinear.

    A gather of whole rows from the batch flattened to (batch·n, ...): one plain gather per tap,
    which XLA compiles to a copy, instead of a broadcast take_along_axis (6x slower on a CPU).
    """
    from keras import ops

    n = images.shape[1]
    s = ops.clip(a[:, None] * ops.arange(n, dtype="float32")[None, :] + b[:, None], 0.0, float(n - 1))
    low = ops.floor(s)
    first = ops.cast(low, "int32")
    base = (ops.arange(ops.shape(images)[0], dtype="int32") * n)[:, None]
    flat = ops.reshape(images, (-1,) + tuple(images.shape[2:]))

    def rows(index):
        return ops.reshape(ops.take(flat, ops.reshape(index + base, (-1,)), axis=0), ops.shape(images))

    top = rows(first)
    weight = ops.reshape(s - low, tuple(ops.shape(s)) + (1,) * (len(images.shape) - 2))
    return top + weight * (rows(ops.minimum(first + 1, n - 1)) - top)


@functools.cache
def _compiled_affine_transform():
    """One XLA-compiled `affine_transform` per process, shared by every tf.data pipeline; traced
    once per image size (the kernel needs static height and width, so no shape relaxation)."""
    import tensorflow as tf

    return tf.function(affine_transform, jit_compile=True)

