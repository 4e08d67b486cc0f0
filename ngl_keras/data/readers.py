"""Readers: a dataset split as arrays, a tf.data.Dataset or a random-access `RecordSource`.

Fashion-MNIST is read from the Debian package's IDX files when they are installed (decoded once per
process), so the default run needs no download; other datasets come from tfds, nothing downloaded.
"""

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ngl_keras.data.placement import placement
from ngl_keras.data.registry import info
from ngl_keras.data.splits import Split
from ngl_keras.settings import shown

FASHION_MNIST_DIR = Path(os.environ.get("NGL_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def _read_idx(path):
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    offset = 4 + 4 * len(dims)
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def fashion_mnist_idx(directory=FASHION_MNIST_DIR):
    """{"train": (images, labels), "test": (...)} from the IDX files, or None if absent; decoded
    once per process and directory (read-only arrays, shared by every caller)."""
    return _idx_arrays(str(directory))


@functools.cache
def _idx_arrays(directory):
    files = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    directory = Path(directory)
    if not all((directory / f).exists() for pair in files.values() for f in pair):
        return None
    return {split: (_read_idx(directory / images)[..., None], _read_idx(directory / labels).astype("int64"))
            for split, (images, labels) in files.items()}


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
        raise ValueError(f"dataset {shown(dataset.name)} has no split {shown(split.base)}; it has "
                         f"{', '.join(dataset.splits)}.")
    arrays = dataset.arrays if dataset.arrays is not None else \
        fashion_mnist_idx() if dataset.name == "fashion_mnist" and dataset.registered else None
    if arrays is not None:
        images, labels = arrays[split.base]
        start, stop = split.rows(len(labels)) or (0, 0)
        stop = stop if limit is None else min(stop, start + limit)
        return images[start:stop], labels[start:stop]
    if placement().tf_data:
        return _load_tfds(dataset, spec, data_dir, limit)
    return _load_data_source(dataset, spec, data_dir, limit)


def _not_prepared(dataset, data_dir, file_format=""):
    """The one line for a dataset tfds cannot read offline: the command that prepares it. tfds's
    own message is left out: it is long, suggests download=True, which is never used here, and
    cut short it says nothing."""
    where = data_dir or "~/tensorflow_datasets"
    command = f"tfds build {dataset.tfds_name}{file_format}{' --data_dir ' + data_dir if data_dir else ''}"
    return ValueError(
        f"dataset {shown(dataset.name)} (tfds {shown(dataset.tfds_name)}) is not available offline in {where}: "
        f"nothing is downloaded; prepare it on a machine with internet with `{command}` and copy it there, "
        "or pass --data-dir")


def _load_data_source(dataset, spec, data_dir, limit):
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(dataset.tfds_name, split=spec, data_dir=data_dir, download=False)
    except Exception:  # tfds raises several types for a missing or unprepared dataset
        # without TensorFlow, tfds reads only the array_record file format
        raise _not_prepared(dataset, data_dir, " --file_format=array_record") from None
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
    except Exception:  # tfds raises several types for a missing, unprepared dataset
        raise _not_prepared(dataset, data_dir) from None
    ds = ds.map(lambda example: (example[dataset.image_key], example[dataset.label_key]))
    return ds.take(limit) if limit is not None else ds


def noise_offsets(size, rate, classes, split):
    """Symmetric label noise as per-example offsets: exactly round(rate·size) examples, chosen at random,
    get an offset drawn uniformly from 1..classes−1 (label + offset mod classes: every other class equally
    likely), the rest 0. Seeded by the split's name only, so that every run and loss of a grid, on any
    backend, sees the same corrupted labels (paired comparisons), and train and validation differ."""
    rng = np.random.default_rng(zlib.crc32(str(split).encode()))
    offsets = np.zeros(size, "int64")
    chosen = rng.permutation(size)[:int(round(rate * size))]
    offsets[chosen] = rng.integers(1, classes, len(chosen))
    return offsets


def label_noise(source, rate, classes, split):
    """`source` (arrays, a `RecordSource` or a tf.data.Dataset of (image, label)) with `noise_offsets`
    applied to its labels."""
    if isinstance(source, tuple):
        images, labels = source
        return images, (labels + noise_offsets(len(labels), rate, classes, split)) % classes
    if isinstance(source, RecordSource):
        return NoisyRecordSource(source, noise_offsets(len(source), rate, classes, split), classes)
    import tensorflow as tf

    size = int(source.cardinality())
    if size < 0:
        raise ValueError(f"label_noise needs the size of split {shown(split)}, which tf.data does not know "
                         f"(cardinality {size}); give limit_train or a split with a known size.")
    offsets = tf.constant(noise_offsets(size, rate, classes, split))
    return source.enumerate().map(lambda i, example: (example[0], (tf.cast(example[1], tf.int64) + offsets[i]) % classes))


class NoisyRecordSource(RecordSource):
    """A `RecordSource` whose labels carry `noise_offsets`."""

    def __init__(self, source, offsets, classes):
        super().__init__(source.source, source.size, source.image_key, source.label_key)
        self.offsets, self.classes = offsets, classes

    def read(self, indices):
        images, labels = super().read(indices)
        return images, (labels + self.offsets[np.asarray(indices, "int64")]) % self.classes


def check_labels(labels, classes, where):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{where}: labels must lie in [0, {classes}); found {labels.min()}..{labels.max()}.")



class Datasets:
    """Loads each dataset split once per process, and gives a run its batches (`placement` decides
    which kind)."""

    def __init__(self, data_dir=None):
        self.data_dir = data_dir
        self._cache = {}

    def split(self, dataset, spec, limit=None):
        """Split `spec` of `dataset` (a name or a `DatasetInfo`), at most `limit` examples."""
        dataset = info(dataset, self.data_dir)
        key = (dataset.name, dataset.fingerprint, spec, limit)
        if key not in self._cache:
            source = load_split(dataset, spec, self.data_dir, limit)
            if isinstance(source, tuple):
                check_labels(source[1], dataset.classes, f"{dataset.name} {spec}")
            self._cache[key] = source
        return self._cache[key]

    def pipelines(self, run, replicas=1, test=True):
        """(train, validation, test) inputs of `run` (a `grid.RunSpec`; test None unless `test`)."""
        dataset, settings = run.dataset_info, run.settings
        splits = settings.splits
        sources = (self.split(dataset, splits.train, settings.limit_train), self.split(dataset, splits.validation),
                   self.split(dataset, splits.test) if test else None)
        rate = getattr(settings, "label_noise", None)
        if rate:
            sources = (label_noise(sources[0], rate, dataset.classes, splits.train),
                       label_noise(sources[1], rate, dataset.classes, splits.validation), sources[2])
        return placement().inputs(sources, dataset=dataset, settings=settings, seed=run.seed, model=run.model_info,
                                  replicas=replicas)
