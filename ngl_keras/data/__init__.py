"""Datasets: which exist (`registry`), how a split is named (`splits`), read (`readers`), augmented
(`augmentation`) and batched (`input`), and where each input step runs on the current backend
(`placement`). The names other modules use are re-exported here (`data.info`, `data.load_split`, ...).
"""

from ngl_keras.data.augmentation import Augmentation, affine_transform
from ngl_keras.data.input import ArrayBatches, input_pipeline
from ngl_keras.data.placement import Placement, placement
from ngl_keras.data.readers import (FASHION_MNIST_DIR, Datasets, RecordSource, check_labels, fashion_mnist_idx,
                                    load_split)
from ngl_keras.data.registry import ARRAY_SPLITS, DATASETS, DatasetInfo, from_arrays, info, tfds_info
from ngl_keras.data.splits import SPLIT_FORMS, Split

__all__ = [
    "ARRAY_SPLITS", "DATASETS", "FASHION_MNIST_DIR", "SPLIT_FORMS", "ArrayBatches", "Augmentation", "DatasetInfo",
    "Datasets", "Placement", "RecordSource", "Split", "affine_transform", "check_labels", "fashion_mnist_idx",
    "from_arrays", "info", "input_pipeline", "load_split", "placement", "tfds_info",
]
