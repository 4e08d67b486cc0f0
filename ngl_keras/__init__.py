"""ngl_keras: NGL, AnyLoss and the paper's baselines as Keras 3 losses, the seven-dataset
evaluation, and the genetic-programming loss search.

Importing the package loads nothing else: every name below loads on first use. The losses
register with Keras (so that saved models reload without `custom_objects`) when
`ngl_keras.losses` is imported, which any of the loss names here does (`ngl_keras.NGL`, ...);
`ngl_keras.formula` and `ngl_keras.gp.engine` import no Keras at all.

The Keras backend: with KERAS_BACKEND unset and TensorFlow absent but JAX installed, importing the
package sets KERAS_BACKEND=jax (before Keras loads, `backend_choice.choose`); with no backend at
all, a name that needs Keras raises an ImportError of one line naming the extra to install.
"""

import importlib

from ngl_keras import backend_choice

__version__ = "0.1.0"

_SUBMODULES = ("backend_choice", "calibration", "config", "console", "data", "distribution", "files", "formula",
               "gp", "grid", "layers", "losses", "models", "names", "own_data", "plots", "progress", "recipe",
               "records", "report", "resources", "resume", "settings", "tasks", "training")
_LOSSES = ("NGL", "AnyLoss", "BiTemperedLogisticLoss", "ExpressionLoss", "SoftDice", "SymmetricCrossEntropy")

__all__ = [*_LOSSES, "evaluate", *_SUBMODULES]


backend_choice.choose()  # before Keras is first imported: JAX where TensorFlow is absent


def __getattr__(name):
    if name in (*_LOSSES, "evaluate"):
        backend_choice.require()  # one line naming the extra, not Keras's traceback, when no backend is installed
    if name in _SUBMODULES:
        try:
            return importlib.import_module(f"ngl_keras.{name}")
        except ModuleNotFoundError as missing:  # `from ngl_keras import losses` comes here too
            if missing.name and missing.name.split(".")[0] in backend_choice.MODULES:
                backend_choice.require()
            raise
    if name in _LOSSES:
        return getattr(importlib.import_module("ngl_keras.losses"), name)
    if name == "evaluate":  # losses on your own arrays and model (ngl_keras.own_data); the search: ngl_keras.gp.search
        return importlib.import_module("ngl_keras.own_data").evaluate
    raise AttributeError(f"module 'ngl_keras' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
