"""Datasets and the tf.data input pipeline.

A dataset is one of three kinds of `DatasetInfo`, all trained through the same code: the seven
of the paper's evaluation (the registry below holds their facts: tfds name, classes, which splits
exist), any other tfds image-classification dataset by name (`tfds_info`: the facts read offline
from its prepared `DatasetInfo`), and in-memory arrays (`from_arrays`, the Python API's). The
settings (split fractions for train-only datasets, augmentation, epochs) are config data in
`configs/datasets/`. Fashion-MNIST is read from the Debian package's IDX files when they are
installed, so the default run needs no download.
"""

import functools
import gzip
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ngl_keras import settings as settings_module
from ngl_keras.settings import finite

FASHION_MNIST_DIR = Path(os.environ.get("NGL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    tfds_name: str     # None for in-memory arrays
    classes: int
    splits: tuple      # the splits tfds has
    channels: int      # 0: the examples are not images (in-memory arrays only)
    fixed_size: int    # image side, 0 for variable-size (or non-square) images
    sizes: dict        # examples per tfds split
    image_key: str = "image"   # the example's features that hold the image and its class
    label_key: str = "label"
    registered: bool = True    # one of the paper's seven: settings in configs/datasets/<name>.yaml
    version: str = None        # tfds version of a dataset read by name (part of a run's identity)
    fingerprint: str = None    # content hash of in-memory arrays (part of a run's identity)
    arrays: dict = field(default=None, compare=False, repr=False)  # split -> (x, int64 labels)

    @property
    def is_images(self):
        return self.channels > 0


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


def info(name, data_dir=None):
    """The `DatasetInfo` of `name`: one of the paper's datasets, else a tfds dataset prepared in
    `data_dir` (`tfds_info`). A `DatasetInfo` is returned as it is."""
    if isinstance(name, DatasetInfo):
        return name
    if name in DATASETS:
        return DATASETS[name]
    return tfds_info(name, data_dir)


@functools.cache
def tfds_info(name, data_dir=None):
    """A tfds image-classification dataset by name, its facts read offline from the `DatasetInfo`
    of its prepared files in `data_dir` (nothing is downloaded): classes from its ClassLabel,
    splits and their sizes, image shape. A name tfds does not know, a dataset that is not prepared
    there, or one that is not image classification raises a one-line ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset must be a name; got {name!r}.")
    known = ", ".join(sorted(DATASETS))
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and its relatives; the first line says which
        raise ValueError(f"unknown dataset {name!r}: not one of the paper's ({known}) and tfds does not know it "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); accepted: those, or the "
                         "name of a tfds image-classification dataset prepared in --data-dir.") from None
    where = data_dir or "~/tensorflow_datasets"
    if not builder.is_prepared():
        raise ValueError(f"dataset {name!r} (tfds) is not prepared in {where}: nothing is downloaded; prepare it "
                         f"on a machine with internet (`tfds build {name}`; for the JAX backend add "
                         "--file_format=array_record) and copy it there, or pass --data-dir.")
    features = builder.info.features
    image_key, label_key = _image_and_label(name, builder.info)
    image, label = features[image_key], features[label_key]
    height, width, channels = (tuple(image.shape) + (None,) * 3)[:3]
    if not channels:
        raise ValueError(f"dataset {name!r}: image feature {image_key!r} has shape {image.shape}; accepted: "
                         "images with a known number of channels (height, width, channels).")
    splits = {split: int(value.num_examples) for split, value in builder.info.splits.items()}
    return DatasetInfo(name, name, int(label.num_classes), tuple(splits), int(channels),
                       int(height) if height and height == width else 0, splits, image_key=image_key,
                       label_key=label_key, registered=False, version=str(builder.info.version))


def _image_and_label(name, dataset_info):
    """The keys of the image and the class label: the supervised keys when they are those, else
    the one Image and the one ClassLabel feature."""
    import tensorflow_datasets as tfds

    features = dataset_info.features
    is_image = lambda key: isinstance(features[key], tfds.features.Image)  # noqa: E731
    is_label = lambda key: isinstance(features[key], tfds.features.ClassLabel)  # noqa: E731
    keys = dataset_info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) and k in features for k in keys) \
            and is_image(keys[0]) and is_label(keys[1]):
        return keys
    images = [k for k in features.keys() if is_image(k)]
    labels = [k for k in features.keys() if is_label(k)]
    if len(images) == 1 and len(labels) == 1:
        return images[0], labels[0]
    raise ValueError(f"dataset {name!r} is not image classification: it has {len(images)} image and {len(labels)} "
                     f"class-label features (features: {', '.join(features.keys())}); accepted: a dataset with one "
                     "Image and one ClassLabel feature.")


# In-memory arrays (the Python API's data).

ARRAY_SPLITS = ("train", "validation", "test")


def from_arrays(splits, name="arrays", classes=None):
    """In-memory data as a `DatasetInfo`: `splits` maps "train", "validation" (and "test") to
    (x, y) with x of shape (N, ...) (images: (N, H, W, C)) and y integer labels (N,) or one-hot
    (N, C). Every value is checked here, with a one-line ValueError naming the split and what is
    accepted; `classes` defaults to the one-hot width or the largest label + 1. The fingerprint
    (a hash of the contents) makes a run's identity say which data it was trained on."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name must be a non-empty string of letters, digits, '_' or '-'; got {name!r}.")
    arrays = {split: _checked_pair(split, pair) for split, pair in splits.items()}
    if "train" not in arrays:
        raise ValueError(f"the splits must include train; got {', '.join(arrays)}.")
    widths = {split: width for split, (_, _, width) in arrays.items() if width is not None}
    if len(set(widths.values())) > 1:
        raise ValueError(f"one-hot labels of different widths: {widths}; give every split the same classes.")
    given = classes is not None
    if classes is None:
        classes = next(iter(widths.values()), int(arrays["train"][1].max()) + 1)
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
        raise ValueError(f"classes must be an integer >= 2; got {classes!r}"
                         f"{'' if given else ' (the largest training label + 1)'}.")
    for split, (_, y, width) in arrays.items():
        if width is not None and width != classes:
            raise ValueError(f"{split}: one-hot labels of width {width}, but classes is {classes}.")
        if int(y.max()) >= classes:
            origin = "" if given else " (the classes of train; give classes= for more)"
            raise ValueError(f"{split}: labels must lie in [0, {classes}){origin}; found {int(y.max())}.")
    shapes = {split: x.shape[1:] for split, (x, _, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"examples of different shapes across splits: "
                         f"{', '.join(f'{k} {v}' for k, v in shapes.items())}; give every split the same shape.")
    shape = next(iter(shapes.values()))
    images = len(shape) == 3
    digest = hashlib.sha256()
    for split in sorted(arrays):
        x, y, _ = arrays[split]
        for array in (x, y):
            digest.update(f"{split} {array.dtype.str} {array.shape};".encode())
            digest.update(np.ascontiguousarray(array).data)
    return DatasetInfo(name, None, classes, tuple(arrays), shape[-1] if images else 0,
                       shape[0] if images and shape[0] == shape[1] else 0,
                       {split: len(y) for split, (_, y, _) in arrays.items()}, registered=False,
                       fingerprint=digest.hexdigest()[:16],
                       arrays={split: (x, y) for split, (x, y, _) in arrays.items()})


def _checked_pair(split, pair):
    """(x, int64 labels, one-hot width or None) of one split's (x, y), or a ValueError."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{split} must be a pair (x, y) of arrays; got {type(pair).__name__}"
                         f"{f' of length {len(pair)}' if isinstance(pair, (tuple, list)) else ''}.")
    x, y = np.asarray(pair[0]), np.asarray(pair[1])
    if x.dtype.kind not in "uif" or x.ndim < 2:
        raise ValueError(f"{split}: x must be a numeric array of shape (N, ...) with N examples; got dtype "
                         f"{x.dtype} and shape {x.shape}.")
    if len(x) == 0:
        raise ValueError(f"{split}: x is empty; give at least one example.")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"{split}: x holds NaN or infinite values; give finite numbers.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    width = None
    if y.ndim == 2:
        if y.dtype.kind not in "uifb" or not np.isin(y, (0, 1)).all() or not (y.sum(axis=1) == 1).all():
            raise ValueError(f"{split}: 2-D labels must be one-hot (each row one 1 and zeros); got shape {y.shape} "
                             "with other values.")
        y, width = y.argmax(axis=1), y.shape[1]
    elif y.ndim != 1 or y.dtype.kind not in "ui":
        raise ValueError(f"{split}: y must be integer class labels of shape (N,) or one-hot (N, classes); got "
                         f"dtype {y.dtype} and shape {y.shape}.")
    if len(y) != len(x):
        raise ValueError(f"{split}: x has {len(x)} examples and y {len(y)} labels; give one label per example.")
    if y.min() < 0:
        raise ValueError(f"{split}: labels must be >= 0; found {int(y.min())}.")
    return x, y.astype("int64"), width


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


# Split specs: tfds's grammar for one split (`tfds.core.ReadInstruction.from_spec`), parsed here so
# that a config is checked, and in-memory arrays are sliced, exactly as tfds reads it.
_SPLIT_SPEC = re.compile(r"^(?P<base>[\w-]+)(?:\[(?P<start>[\d\w%.-]*):(?P<stop>[\d\w%.-]*)\])?$")
_BOUND = re.compile(r"^(?P<value>-?[\d_.]+)(?P<unit>%)?$")
SPLIT_FORMS = "a split such as 'train', 'train[:90%]', 'train[-10%:]' or 'test[1000:]'"


@dataclass(frozen=True)
class Split:
    """A split spec: base split, and bounds in examples (int) or percent (float), None: the end."""

    base: str
    start: object = None
    stop: object = None
    percent: bool = False

    @classmethod
    def parse(cls, spec):
        """The `Split` of `spec`, or ValueError (one line) when tfds would not read it as one split
        slice: 'train[:100.5]' (a fraction of an example), 'a+b', 'train[5]'. Bounds outside the
        split ('train[:101%]') are found by `rows`, which knows its size."""
        match = _SPLIT_SPEC.match(spec) if isinstance(spec, str) else None
        bounds = [match.group(k) or None for k in ("start", "stop")] if match else []
        parsed = [_BOUND.match(b) if b else None for b in bounds]
        if not match or any(b and not p for b, p in zip(bounds, parsed)) or (
                "[" in spec and not any(bounds)):
            raise ValueError(f"split {spec!r} is not {SPLIT_FORMS}.")
        percent = any(p is not None and p.group("unit") for p in parsed)  # tfds: one unit for both
        values = []
        for p in parsed:
            try:
                values.append(None if p is None else float(p.group("value")) if percent else int(p.group("value")))
            except ValueError:
                raise ValueError(f"split {spec!r} is not {SPLIT_FORMS}: a bound without % counts whole "
                                 "examples.") from None
        return cls(match.group("base"), *values, percent)

    def rows(self, count):
        """(first row, end row) of this split over `count` examples, as tfds computes them
        (percentages rounded to the closest row, negative bounds from the end); None when the
        bounds lie outside the `count` examples."""
        def row(value, default):
            if value is None:
                return default
            return int(round(value * count / 100.0)) if self.percent else value

        start, stop = row(self.start, 0), row(self.stop, count)
        if abs(start) > count or abs(stop) > count:
            return None
        return start + count if start < 0 else start, stop + count if stop < 0 else stop


def load_split(name, spec, data_dir=None, limit=None):
    """(images, labels), a tf.data.Dataset or a `RecordSource` for a split such as 'train[:90%]'
    of dataset `name` (a name or a `DatasetInfo`).

    In-memory arrays, and Fashion-MNIST from the IDX files, come back as numpy arrays (no
    TensorFlow needed). Other
    datasets come from tfds, nothing downloaded: on the TensorFlow backend a tf.data.Dataset
    streamed by `tfds.load`; on any other backend a random-access `RecordSource` over
    `tfds.data_source` (array_record files, no TensorFlow needed). A dataset that is not prepared
    in `data_dir` raises a one-line error saying how to prepare it.
    """
    dataset, split = info(name, data_dir), Split.parse(spec)
    if split.base not in dataset.splits:
        raise ValueError(f"dataset {dataset.name!r} has no split {split.base!r}; it has "
                         f"{', '.join(dataset.splits)}.")
    arrays = dataset.arrays if dataset.arrays is not None else \
        fashion_mnist_idx() if dataset.name == "fashion_mnist" and dataset.registered else None
    if arrays is not None:
        images, labels = arrays[split.base]
        start, stop = split.rows(len(labels)) or (0, 0)
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
    return RecordSource(source, limit, dataset.image_key, dataset.label_key)


class RecordSource:
    """A tfds data source (random access to decoded examples) as (image, label) pairs, at most
    `limit` of them: what `ArrayBatches` reads a batch from when the data is not in memory."""

    def __init__(self, source, limit=None, image_key="image", label_key="label"):
        self.source, self.image_key, self.label_key = source, image_key, label_key
        self.size = len(source) if limit is None else min(limit, len(source))

    def __len__(self):
        return self.size

    def read(self, indices):
        """(list of uint8 images, int64 labels) of the examples at `indices`."""
        examples = [self.source[int(i)] for i in indices]
        return ([np.asarray(e[self.image_key]) for e in examples],
                np.array([e[self.label_key] for e in examples], "int64"))


def _load_tfds(dataset, spec, data_dir, limit):
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(dataset.tfds_name, split=spec, data_dir=data_dir, download=False, shuffle_files=False)
    except Exception as error:  # tfds raises several types for a missing, unprepared dataset
        raise _not_prepared(dataset, data_dir, error,
                            "prepare it there with tfds on a machine with internet") from None
    ds = ds.map(lambda example: (example[dataset.image_key], example[dataset.label_key]))
    return ds.take(limit) if limit is not None else ds


def check_labels(labels, classes, where):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{where}: labels must lie in [0, {classes}); found {labels.min()}..{labels.max()}.")


# The input pipeline.

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


def input_pipeline(source, *, classes, image_size, channels, preprocess, batch_size,
                   augmentation=None, shuffle_seed=None, cache=True):
    """A batched tf.data pipeline of (preprocessed float images, one-hot labels).

    Raw uint8 examples are cached (variable-size images first resized, so that they batch),
    shuffled when `shuffle_seed` is given, batched, and then resized, given `channels`,
    augmented (training only) and preprocessed a whole batch at a time, in parallel with
    training (prefetch). `image_size` None keeps the examples' shape (in-memory arrays that are
    not images).
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
        if image_size is not None and (x.shape[1] != image_size or x.shape[2] != image_size):
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
