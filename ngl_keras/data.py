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

import keras
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
    """(images, labels), a tf.data.Dataset or a `RecordSource` for a split such as 'train[:90%]'.

    Fashion-MNIST from the IDX files comes back as numpy arrays (no TensorFlow needed). Other
    datasets come from tfds, nothing downloaded: on the TensorFlow backend a tf.data.Dataset
    streamed by `tfds.load`; on any other backend a random-access `RecordSource` over
    `tfds.data_source` (array_record files, no TensorFlow needed). A dataset that is not prepared
    in `data_dir` raises a one-line error saying how to prepare it.
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
    if uses_tf_data():
        return _load_tfds(dataset, spec, data_dir, limit)
    return _load_data_source(dataset, spec, data_dir, limit)


def uses_tf_data():
    """Whether input goes through tf.data (the TensorFlow backend) or `ArrayBatches` (any other)."""
    import keras

    return keras.backend.backend() == "tensorflow"


def _not_prepared(dataset, data_dir, error, how):
    where = data_dir or "~/tensorflow_datasets"
    return ValueError(
        f"dataset {dataset.name!r} (tfds {dataset.tfds_name!r}) is not available offline in {where}: "
        f"{how}, or pass --data-dir ({type(error).__name__}: {str(error).splitlines()[0][:200]})")


def _load_data_source(dataset, spec, data_dir, limit):
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(dataset.tfds_name, split=spec, data_dir=data_dir, download=False)
    except Exception as error:  # tfds raises several types for a missing or unprepared dataset
        raise _not_prepared(dataset, data_dir, error, (
            f"without TensorFlow it must be prepared as array_record, on a machine with internet: "
            f"`tfds build {dataset.tfds_name} --file_format=array_record"
            f"{' --data_dir ' + data_dir if data_dir else ''}`")) from None
    return RecordSource(source, limit)


class RecordSource:
    """A tfds data source (random access to decoded examples) as (image, label) pairs, at most
    `limit` of them: what `ArrayBatches` reads a batch from when the data is not in memory."""

    def __init__(self, source, limit=None):
        self.source = source
        self.size = len(source) if limit is None else min(limit, len(source))

    def __len__(self):
        return self.size

    def read(self, indices):
        """(list of uint8 images, int64 labels) of the examples at `indices`."""
        examples = [self.source[int(i)] for i in indices]
        return [np.asarray(e["image"]) for e in examples], np.array([e["label"] for e in examples], "int64")


def _load_tfds(dataset, spec, data_dir, limit):
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(dataset.tfds_name, split=spec, data_dir=data_dir, as_supervised=True,
                       download=False, shuffle_files=False)
    except Exception as error:  # tfds raises several types for a missing, unprepared dataset
        raise _not_prepared(dataset, data_dir, error,
                            "prepare it there with tfds on a machine with internet") from None
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


# Input on any backend: batches from arrays (or a RecordSource) for the model's input layers.

def _resized(image, size):
    """`image` (h, w, c) uint8 at size × size, bilinear (variable-size datasets only)."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    channels = image.shape[-1]
    out = Image.fromarray(image[..., 0] if channels == 1 else image).resize((size, size), Image.BILINEAR)
    return np.asarray(out).reshape(size, size, channels)


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (float32 images, one-hot labels) for `model.fit` on any Keras backend.

    The images stay as they are stored (native size and channels, uint8 until batched): resizing,
    channels, augmentation and preprocessing are the model's input layers (`layers.input_layers`),
    so they run on the accelerator. Variable-size images are resized to `image_size` here, on the
    host, so that they batch. With `shuffle_seed`, epoch e visits the examples in the order of
    `np.random.default_rng([shuffle_seed, e])`: the same order whether a run went straight through
    or was resumed at epoch e (`set_epoch`). `multiple` trims a batch to a multiple of the replica
    count (data parallelism splits each batch evenly): the last batch loses at most
    `multiple` − 1 examples (other ones each epoch when shuffled).
    """

    def __init__(self, source, *, classes, batch_size, image_size=None, shuffle_seed=None, multiple=1):
        super().__init__()
        self.source, self.classes, self.batch_size = source, classes, batch_size
        self.image_size, self.shuffle_seed, self.multiple = image_size, shuffle_seed, multiple
        self.epoch, self._order = 0, None
        first = self._read(np.arange(min(1, len(self))))[0]
        self.image_shape = tuple(first.shape[1:])

    @property
    def size(self):
        source = self.source
        return len(source[1]) if isinstance(source, tuple) else len(source)

    @property
    def used(self):
        """Examples per epoch: all of them, less what makes the last batch a multiple of `multiple`."""
        rest = self.size % self.batch_size
        return self.size - rest % self.multiple

    def __len__(self):
        return -(-self.used // self.batch_size)

    def set_epoch(self, epoch):
        if epoch != self.epoch:
            self.epoch, self._order = epoch, None

    def order(self):
        if self._order is None:
            self._order = np.arange(self.size) if self.shuffle_seed is None else \
                np.random.default_rng([self.shuffle_seed, self.epoch]).permutation(self.size)
        return self._order

    def _read(self, indices):
        if isinstance(self.source, tuple):
            images, labels = self.source[0][indices], self.source[1][indices]
        else:
            images, labels = self.source.read(indices)
            size = self.image_size or images[0].shape[0]
            images = np.stack([_resized(image, size) for image in images])
        return images.astype("float32"), np.eye(self.classes, dtype="float32")[labels]

    def __getitem__(self, index):
        start = index * self.batch_size
        return self._read(self.order()[start: min(start + self.batch_size, self.used)])

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)
