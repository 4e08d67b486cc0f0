"""The dataset registry: every dataset a grid can name, as a `DatasetInfo`.

A dataset is one of three kinds, all trained through the same code: the seven of the paper's
evaluation (`DATASETS`: tfds name, classes, which splits exist), any other tfds image-classification
dataset by name (`tfds_info`: the facts read offline from its prepared `DatasetInfo`), and in-memory
arrays (`from_arrays`, the Python API's). The settings (split fractions for train-only datasets,
augmentation, epochs) are config data in `configs/datasets/`.
"""

import functools
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from ngl_keras.settings import shown


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
    if isinstance(name, str) and name.lower() in DATASETS:  # any capitals
        return DATASETS[name.lower()]
    return tfds_info(name, data_dir)


# tfds datasets whose archives are downloaded by hand (`tfds build NAME --manual_dir DIR`).
MANUAL_DOWNLOAD = ("imagenet2012", "imagenet2012_subset")


def known_name(name, data_dir=None):
    """`name` as a grid gives it, checked without loading tfds: one of the paper's datasets (any
    capitals: its registered name), or a tfds dataset whose directory exists in the data directory
    (the full check, `tfds_info`, comes later); otherwise a one-line ValueError."""
    from ngl_keras.names import did_you_mean, registered

    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset must be a name; got {name!r}.")
    if registered(name, DATASETS):
        return registered(name, DATASETS)
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    base = name.split(":")[0].split("/")[0]
    if "://" in str(where) or os.path.isdir(os.path.join(where, base)) or base in MANUAL_DOWNLOAD:
        return name  # ImageNet unprepared: the full check names its `tfds build --manual_dir` command
    raise ValueError(f"unknown dataset {shown(name)}{did_you_mean(name, DATASETS)}: not one of the paper's "
                     f"({', '.join(sorted(DATASETS))}) and not prepared in {where}: nothing is downloaded; prepare a "
                     f"tfds dataset on a machine with internet (`tfds build {base}`; for the JAX backend add "
                     "--file_format=array_record) and copy it there, or pass --data-dir.")


@functools.cache
def tfds_info(name, data_dir=None):
    """A tfds image-classification dataset by name, its facts read offline from the `DatasetInfo`
    of its prepared files in `data_dir` (nothing is downloaded): classes from its ClassLabel,
    splits and their sizes, image shape. A name tfds does not know, a dataset that is not prepared
    there, or one that is not image classification raises a one-line ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset must be a name; got {shown(name)}.")
    known = ", ".join(sorted(DATASETS))
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and its relatives; the first line says which
        raise ValueError(f"unknown dataset {shown(name)}: not one of the paper's ({known}) and tfds does not know it "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); accepted: those, or the "
                         "name of a tfds image-classification dataset prepared in --data-dir.") from None
    where = data_dir or "~/tensorflow_datasets"
    if not builder.is_prepared():
        manual = name.split("/")[0].split(":")[0] in MANUAL_DOWNLOAD
        how = (f"prepare it from the archives you downloaded (`tfds build {name} --manual_dir DIR`, DIR holding "
               "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" if manual else
               f"prepare it on a machine with internet (`tfds build {name}`")
        raise ValueError(f"dataset {shown(name)} (tfds) is not prepared in {where}: nothing is downloaded; {how}; for "
                         "the JAX backend add --file_format=array_record) and copy it there, or pass --data-dir.")
    features = builder.info.features
    image_key, label_key = _image_and_label(name, builder.info)
    image, label = features[image_key], features[label_key]
    height, width, channels = (tuple(image.shape) + (None,) * 3)[:3]
    if not channels:
        raise ValueError(f"dataset {shown(name)}: image feature {shown(image_key)} has shape {image.shape}; accepted: "
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
    raise ValueError(f"dataset {shown(name)} is not image classification: it has {len(images)} image and {len(labels)} "
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
        raise ValueError(f"name must be a non-empty string of letters, digits, '_' or '-'; got {shown(name)}.")
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
        raise ValueError(f"classes must be an integer >= 2; got {shown(classes)}"
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

