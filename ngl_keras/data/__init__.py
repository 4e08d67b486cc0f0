"""Datasets: which exist (`registry`), how a split is named (`splits`), read (`readers`), augmented
(`augmentation`) and batched (`input`), and where each input step runs on the current backend
(`placement`). The names other modules use are re-exported here (`data.info`, `data.load_split`, ...),
each loaded on first use: the registry, the splits and the augmentation settings need no Keras, so
that a config is checked before any framework loads.
"""

import importlib

_HOMES = {
    "augmentation": ("Augmentation", "affine_transform"),
    "input": ("ArrayBatches", "input_pipeline"),
    "placement": ("Placement", "placement"),
    "readers": ("FASHION_MNIST_DIR", "Datasets", "RecordSource", "check_labels", "fashion_mnist_idx", "load_split"),
    "registry": ("ARRAY_SPLITS", "DATASETS", "DatasetInfo", "from_arrays", "info", "tfds_info"),
    "splits": ("SPLIT_FORMS", "Split"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"ngl_keras.data.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'ngl_keras.data' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
