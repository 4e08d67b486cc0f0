"""The Keras backend choice: which backend Keras loads when the user named none.

Keras reads `KERAS_BACKEND` (else ~/.keras/keras.json, else TensorFlow) once, on its first import.
A `[jax]` install has no TensorFlow, so Keras's default would fail with a traceback ending in
"No module named 'tensorflow'": `choose` sets `KERAS_BACKEND=jax` first in that case, and
`require` turns a missing backend into one line naming the extra to install. Neither imports a
framework (they look the modules up with `importlib.util.find_spec`).
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

ENVIRONMENT = "KERAS_BACKEND"
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}
EXTRAS = {"tensorflow": "tf", "jax": "jax"}  # the backends pyproject.toml has an extra for
INSTALL = 'pip install "ngl_keras[tf]" (TensorFlow) or "ngl_keras[jax]" (JAX)'

_choice = {"set_here": False, "said": False}  # whether `choose` set JAX, and whether that was said


class NoBackend(ImportError):
    """No backend Keras could load is installed; the message is one line naming the extra."""


def installed(backend):
    try:
        return importlib.util.find_spec(MODULES.get(backend, backend)) is not None
    except (ImportError, ValueError):  # a finder that refuses the module: as good as absent
        return False


def _configured():
    """The backend the user named: KERAS_BACKEND, else keras.json's (None when neither says)."""
    if os.environ.get(ENVIRONMENT):
        return os.environ[ENVIRONMENT]
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    try:
        return json.loads((Path(home) / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def choose():
    """Before Keras is first imported, with KERAS_BACKEND unset and TensorFlow absent but JAX
    present: set KERAS_BACKEND=jax. Returns the backend Keras will load (None: none installed)."""
    if "keras" in sys.modules:  # too late to choose: Keras has read its backend
        return sys.modules["keras"].backend.backend()
    named = os.environ.get(ENVIRONMENT)
    if named:
        return named
    configured = _configured()
    # keras.json names tensorflow by default (Keras writes it on its first import), also where it is absent
    if configured and configured != "tensorflow" and installed(configured):
        return configured
    if installed("tensorflow"):
        return "tensorflow"
    if installed("jax"):
        os.environ[ENVIRONMENT] = "jax"
        _choice["set_here"] = True
        return "jax"
    return None


def require(verbose=False):
    """The backend Keras will load (`choose`), or NoBackend with one line: which extra to install.
    With `verbose`, says on stderr (once) that JAX was chosen because TensorFlow is absent."""
    backend = choose()
    if backend is None:
        raise NoBackend(f"no Keras backend is installed (neither TensorFlow nor JAX): {INSTALL}.")
    if backend in EXTRAS and "keras" not in sys.modules and not installed(backend):
        raise NoBackend(f"{ENVIRONMENT}={backend}, but {backend} is not installed: "
                        f'pip install "ngl_keras[{EXTRAS[backend]}]", or set {ENVIRONMENT} to an installed '
                        "backend.")
    if verbose and _choice["set_here"] and not _choice["said"]:
        _choice["said"] = True
        print("ngl_keras: TensorFlow is not installed; using the JAX backend (set KERAS_BACKEND to choose).",
              file=sys.stderr)
    return backend
