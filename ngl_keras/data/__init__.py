"""Datasets: which exist (`registry`), how a split is named (`splits`), read (`readers`), augmented
(`augmentation`) and batched (`input`), and where each input step runs on the current backend
(`placement`). The names other modules use are re-exported here (`data.info`, `data.load_split`, ...).
Only `input` needs Keras, and its names load on first use: a config naming datasets is checked
before any framework loads.
"""

import importlib

from ngl_keras.data.augmentation import Augmentation, affine_transform
from ngl_keras.data.placement import Placement, placement
from ngl_keras.data.readers import (FASHION_MNIST_DIR, Datasets, RecordSource, check_labels, fashion_mnist_idx,
                                    load_split)
from ngl_keras.data.registry import ARRAY_SPLITS, DATASETS, DatasetInfo, from_arrays, info, tfds_info
from ngl_keras.data.splits import SPLIT_FORMS, Split

_WITH_KERAS = ("ArrayBatches", "input_pipeline")  # ngl_keras.data.input's

__all__ = [
    "ARRAY_SPLITS", "DATASETS", "FASHION_MNIST_DIR", "SPLIT_FORMS", "ArrayBatches", "Augmentation", "DatasetInfo",
    "Datasets", "Placement", "RecordSource", "Split", "affine_transform", "check_labels", "fashion_mnist_idx",
    "from_arrays", "info", "input_pipeline", "load_split", "placement", "tfds_info",
]


def __getattr__(name):
    if name in _WITH_KERAS:
        return getattr(importlib.import_module("ngl_keras.data.input"), name)
    raise AttributeError(f"module 'ngl_keras.data' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
