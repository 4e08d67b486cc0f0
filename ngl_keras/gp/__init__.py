"""The genetic-programming loss search: a generic tree GP engine (`engine`), the search
loop as a resumable state machine (`evolution`), screening and fitness of loss candidates,
and the keras-tuner oracle that spreads evaluations over workers.

`ngl_keras.gp.search(model_fn, train, validation, out=...)` searches a loss for your own arrays
and model (`ngl_keras.own_data.search`); `ngl_keras.gp.search` is also the module search_gp.py uses.
"""

import importlib

_SUBMODULES = ("engine", "evolution", "fitness", "oracle", "screening", "search")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ngl_keras.gp.{name}")
    raise AttributeError(f"module 'ngl_keras.gp' has no attribute {name!r}")
