"""The genetic-programming loss search: a generic tree GP engine (`engine`), the search loop as a
resumable state machine (`evolution`), screening and fitness of loss candidates, the keras-tuner
oracle that spreads evaluations over workers (`oracle`), and a search from its settings
(`search_settings`) through its run (`search_run`) to its directory (`search_directory`).

`ngl_keras.gp.search(model_fn, train, validation, out=...)` searches a loss for your own arrays
and model (`api.search`); search_gp.py runs `search_run.run` on a search config.
"""

import importlib

_SUBMODULES = ("api", "engine", "evolution", "fitness", "interpreter", "oracle", "screening", "search_directory", "search_run",
               "search_settings")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ngl_keras.gp.{name}")
    if name == "search":  # loaded on first use: importing the package (or its engine) loads no Keras
        return importlib.import_module("ngl_keras.gp.api").search
    raise AttributeError(f"module 'ngl_keras.gp' has no attribute {name!r}")
