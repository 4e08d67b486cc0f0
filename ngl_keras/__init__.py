"""ngl_keras: NGL, AnyLoss and the paper's baselines as Keras 3 losses, the seven-dataset
evaluation, and the genetic-programming loss search.

The losses are imported (and registered with Keras, so that saved models reload) with the package;
the other submodules load on first use (`ngl_keras.plots`, `ngl_keras.training`, ...).
"""

import importlib

from ngl_keras import console

console.load_frameworks()  # before anything imports Keras: the frameworks' start-up banners filtered

from ngl_keras import losses  # noqa: E402
from ngl_keras.losses import (  # noqa: E402
    NGL, AnyLoss, BiTemperedLogisticLoss, ExpressionLoss, SoftDice, SymmetricCrossEntropy,
)

__version__ = "0.1.0"

_SUBMODULES = ("config", "console", "data", "files", "gp", "layers", "models", "own_data", "plots", "report",
               "training")

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
