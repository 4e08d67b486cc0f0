"""The seven datasets of the paper's evaluation and the tf.data input pipeline.

The dataset registry below holds the facts (tfds name, classes, which splits exist); the
settings (split fractions for train-only datasets, augmentation, epochs) are config data in
`configs/datasets/`. Fashion-MNIST is read from the Debian package's IDX files when they are
installed, so the default run needs no download.
"""

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("NGL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    tfds_name: str
    classes: int
    splits: tuple      # the splits tfds has
    channels: int
    fixed_size: int    # image side, 0 for variable-size images
    sizes: dict        # examples per tfds split


DATASETS = {d.name: d for d in (
    DatasetInfo("malaria", "malaria", 2, ("train",), 3, 0, {"train": 27558}),
    DatasetInfo("patch_camelyon", "patch_camelyon", 2, ("train", "validation", "test"), 3, 96,
                {"train": 262144, "validation": 32768, "test": 32768}),
    DatasetInfo("colorectal_histology", "colorectal_histology", 8, ("train",), 3, 150, {"train": 5000}),
    DatasetInfo("cifar10", "cifar10", 10, ("train", "test"), 3, 32, {"train": 50000, "test": 10000}),
    DatasetInfo("fashion_mnist", "fashion_mnist", 10, ("train", "test"), 1, 28,
                {"train": 60000, "test": 10000}),
    DatasetInfo("cifar100", "cifar100", 100, ("train", "test"), 3, 32, {"train": 50000, "test": 10000}),
    DatasetInfo("caltech101", "caltech101", 102, ("train", "test"), 3, 0, {"train": 3060, "test": 6084}),
)}


def info(name):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name]


# Reading.

def _read_idx(path):
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    offset = 4 + 4 * len(dims)
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def fashion_mnist_idx(directory=FASHION_MNIST_DIR):
    """{"train": (images, labels), "test": (...)} from the IDX files, or None if absent."""
    files = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    directory = Path(directory)
    if not all((directory / f).exists() for pair in files.values() for f in pair):
        return None
    return {split: (_read_idx(directory / images)[..., None], _read_idx(directory / labels).astype("int64"))
            for split, (images, labels) in files.items()}


def _slice_fraction(count, spec):
    """Rows of a tfds-style split slice 'train[a%:b%]' over `count` examples."""
    inside = spec[spec.index("[") + 1: spec.index("]")]
    start, _, stop = inside.partition(":")

    def position(text, default):
        if not text:
            return default
        return int(round(count * float(text.rstrip("%")) / 100.0)) if text.endswith("%") else int(text)

    return position(start, 0), position(stop, count)


def split_base(spec):
    return spec.split("[", 1)[0]


def load_split(name, spec, data_dir=None, limit=None):
    """(images, labels) or a tf.data.Dataset of (image, label) for a split such as 'train[:90%]'.

    Fashion-MNIST from the IDX files comes back as numpy arrays; other datasets as a
    tf.data.Dataset streamed by tfds (nothing is downloaded: a dataset that is not prepared in
    `data_dir` raises a one-line error).
    """
    dataset = info(name)
    if split_base(spec) not in dataset.splits:
        raise ValueError(f"dataset {name!r} has no split {split_base(spec)!r}; it has "
                         f"{', '.join(dataset.splits)}.")
    if name == "fashion_mnist":
        arrays = fashion_mnist_idx()
        if arrays is not None:
            images, labels = arrays[split_base(spec)]
            start, stop = _slice_fraction(len(labels), spec) if "[" in spec else (0, len(labels))
            stop = stop if limit is None else min(stop, start + limit)
            return images[start:stop], labels[start:stop]
    return _load_tfds(dataset, spec, data_dir, limit)


def _load_tfds(dataset, spec, data_dir, limit):
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(dataset.tfds_name, split=spec, data_dir=data_dir, as_supervised=True,
                       download=False, shuffle_files=False)
    except Exception as error:  # tfds raises several types for a missing, unprepared dataset
        where = data_dir or "~/tensorflow_datasets"
        raise ValueError(
            f"dataset {dataset.name!r} (tfds {dataset.tfds_name!r}) is not available offline in "
            f"{where}: prepare it there with tfds on a machine with internet, or pass --data-dir "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    return ds.take(limit) if limit is not None else ds


def check_labels(labels, classes, where):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{where}: labels must lie in [0, {classes}); found {labels.min()}..{labels.max()}.")


# The input pipeline.

@dataclass(frozen=True)
class Augmentation:
    """ImageDataGenerator-style augmentation (the published example's settings by default).

    The same transforms as Keras's RandomFlip("horizontal"), RandomTranslation and RandomZoom
    with fill_mode "nearest", and as ImageDataGenerator(horizontal_flip, width_shift_range,
    height_shift_range, zoom_range), composed into one axis-aligned resampling per image, so a
    batch is resampled once instead of once per layer.
    """

    horizontal_flip: bool = True
    width_shift: float = 0.1
    height_shift: float = 0.1
    zoom: float = 0.2

    def __post_init__(self):
        for name in ("width_shift", "height_shift", "zoom"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"augmentation {name} must lie in [0, 1); got {getattr(self, name)!r}.")

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
        import tensorflow as tf

        return affine_transform(images, *self.random_parameters(tf.shape(images)[0], seed))


def affine_transform(images, flip, shift_x, shift_y, zoom_x, zoom_y):
    """Flip (bool per image), shift (fraction of width/height) and zoom (coordinate scale,
    < 1 zooms in) each image of a batch in one bilinear resampling, nearest-pixel fill.

    Output pixel (x, y) reads input (ax·x + bx, ay·y + by), the coordinate clamped to the image
    (nearest fill), bilinearly: the same image as ImageProjectiveTransformV3 with that matrix.
    The transform is axis-aligned, so the resampling is done as two 1-D interpolations (rows,
    then columns: two gathers and a lerp each), compiled by XLA into one pass; about 3x faster
    than the general projective kernel on a CPU (benchmarks/input_pipeline.py).
    """
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        height, width = tf.shape(images)[1], tf.shape(images)[2]
    sign = tf.where(flip, -1.0, 1.0)
    origin = tf.where(flip, tf.cast(width, tf.float32) - 1.0, 0.0)
    return _separable_resample(tf.cast(images, tf.float32), zoom_x * sign,
                               _offset(zoom_x, width, shift_x) + zoom_x * origin,
                               zoom_y, _offset(zoom_y, height, shift_y))


def _offset(zoom, size, shift):
    """b of the source coordinate a·x + b that zooms about the centre and shifts by shift·size."""
    import tensorflow as tf

    size = tf.cast(size, tf.float32)
    centre = (size - 1.0) / 2.0
    return centre - zoom * centre + shift * size


def _resample_impl(images, ax, bx, ay, by):
    import tensorflow as tf

    def taps(a, b, n):
        x = tf.range(n, dtype=tf.float32)
        s = tf.clip_by_value(a[:, None] * x[None, :] + b[:, None], 0.0, tf.cast(n - 1, tf.float32))
        low = tf.floor(s)
        index = tf.cast(low, tf.int32)
        return index, tf.minimum(index + 1, n - 1), s - low

    y0, y1, wy = taps(ay, by, tf.shape(images)[1])
    x0, x1, wx = taps(ax, bx, tf.shape(images)[2])
    top = tf.gather(images, y0, axis=1, batch_dims=1)
    rows = top + wy[:, :, None, None] * (tf.gather(images, y1, axis=1, batch_dims=1) - top)
    left = tf.gather(rows, x0, axis=2, batch_dims=1)
    return left + wx[:, None, :, None] * (tf.gather(rows, x1, axis=2, batch_dims=1) - left)


@functools.cache
def _compiled_resample():
    """One XLA-compiled resampling function per process, shared by every pipeline."""
    import tensorflow as tf

    return tf.function(_resample_impl, jit_compile=True, reduce_retracing=True)


def _separable_resample(*args):
    return _compiled_resample()(*args)


def input_pipeline(source, *, classes, image_size, channels, preprocess, batch_size,
                   augmentation=None, shuffle_seed=None, cache=True):
    """A batched tf.data pipeline of (preprocessed float images, one-hot labels).

    Raw uint8 examples are cached (variable-size images first resized, so that they batch),
    shuffled when `shuffle_seed` is given, batched, and then resized, given `channels`,
    augmented (training only) and preprocessed a whole batch at a time, in parallel with
    training (prefetch).
    """
    import tensorflow as tf

    if isinstance(source, tuple):
        images, labels = source
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        fixed = True
    else:
        ds = source
        shape = ds.element_spec[0].shape
        fixed = shape[0] is not None and shape[1] is not None
    if not fixed:
        ds = ds.map(lambda x, y: (tf.cast(tf.image.resize(x, (image_size, image_size)), tf.uint8), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmentation is not None:
        # One stateless seed per batch: reproducible for a given seed, new in every epoch.
        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda xy, s: (xy[0], xy[1], s))
    else:
        ds = ds.map(lambda x, y: (x, y, tf.constant(0, tf.int64)))

    def transform(x, y, seed):
        x = tf.cast(x, tf.float32)
        if x.shape[1] != image_size or x.shape[2] != image_size:
            x = tf.image.resize(x, (image_size, image_size))
        if x.shape[-1] == 1 and channels == 3:
            x = tf.image.grayscale_to_rgb(x)
        if augmentation is not None:
            x = augmentation(x, seed)
        return preprocess(x), tf.one_hot(tf.cast(y, tf.int32), classes)

    return ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
