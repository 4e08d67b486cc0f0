"""ngl_keras: NGL, AnyLoss and the paper's baselines as Keras 3 losses, the seven-dataset
evaluation, and the genetic-programming loss search.

Importing the package loads nothing else: every name below loads on first use. The losses
register with Keras (so that saved models reload without `custom_objects`) when
`ngl_keras.losses` is imported, which any of the loss names here does (`ngl_keras.NGL`, ...);
`ngl_keras.formula` and `ngl_keras.gp.engine` import no Keras at all.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("calibration", "config", "console", "data", "distribution", "files", "formula", "gp", "grid",
               "layers", "losses", "models", "own_data", "plots", "progress", "recipe", "records", "report",
               "resume", "settings", "tasks", "training")
_LOSSES = ("NGL", "AnyLoss", "BiTemperedLogisticLoss", "ExpressionLoss", "SoftDice", "SymmetricCrossEntropy")

__all__ = [*_LOSSES, "evaluate", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ngl_keras.{name}")
    if name in _LOSSES:
        return getattr(importlib.import_module("ngl_keras.losses"), name)
    if name == "evaluate":  # losses on your own arrays and model (ngl_keras.own_data); the search: ngl_keras.gp.search
        return importlib.import_module("ngl_keras.own_data").evaluate
    raise AttributeError(f"module 'ngl_keras' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
