"""ngl_keras: NGL, AnyLoss and the paper's baselines as Keras 3 losses, the seven-dataset
evaluation, and the genetic-programming loss search.

The losses are imported (and registered with Keras, so that saved models reload) with the package;
the other submodules load on first use (`ngl_keras.plots`, `ngl_keras.training`, ...).
"""

import importlib

from ngl_keras import losses
from ngl_keras.losses import (
    NGL, AnyLoss, BiTemperedLogisticLoss, ExpressionLoss, SoftDice, SymmetricCrossEntropy,
)

__version__ = "0.1.0"

_SUBMODULES = ("config", "data", "files", "gp", "layers", "models", "own_data", "plots", "report", "training")

__all__ = [
    "NGL", "AnyLoss", "BiTemperedLogisticLoss", "ExpressionLoss", "SoftDice",
    "SymmetricCrossEntropy", "evaluate", "losses", *_SUBMODULES,
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ngl_keras.{name}")
    if name == "evaluate":  # losses on your own arrays and model (ngl_keras.own_data); the search: ngl_keras.gp.search
        return importlib.import_module("ngl_keras.own_data").evaluate
    raise AttributeError(f"module 'ngl_keras' has no attribute {name!r}")
