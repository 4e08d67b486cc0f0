"""Where the package's config files are: `configs/` at the top of the repository, shipped inside
the wheel as `ngl_keras/configs` (pyproject.toml maps the package `ngl_keras.configs` to that
directory), so that a wheel install, an editable install and a plain checkout read the same files."""

import importlib.resources
from pathlib import Path

CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # a checkout (plain, or installed editable)


def configs_dir():
    """The directory of the package's configs (datasets/, search/, api/, quick.yaml, ...)."""
    installed = Path(str(importlib.resources.files("ngl_keras"))) / "configs"  # a wheel install
    return installed if installed.is_dir() else CHECKOUT_CONFIGS
