"""Where the package's config files are: `configs/` at the top of the repository, shipped inside
the wheel as `ngl_keras.configs` (pyproject.toml maps the package to that directory), so that a
plain checkout, an editable install and a wheel install read the same files."""

import importlib.resources
import importlib.util
from pathlib import Path

CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # a plain checkout (nothing installed)


def configs_dir():
    """The directory of the package's configs (datasets/, search/, api/, quick.yaml, ...)."""
    try:
        spec = importlib.util.find_spec("ngl_keras.configs")
    except ModuleNotFoundError:
        spec = None
    if spec is not None:
        found = Path(str(importlib.resources.files("ngl_keras.configs")))
        if (found / "quick.yaml").is_file():
            return found
    return CHECKOUT_CONFIGS
