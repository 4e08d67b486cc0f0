"""Config files are data: YAML checked against a schema, with unknown keys and wrong types
rejected by name where they enter."""

from pathlib import Path

import yaml

OPTIMIZER = {"name": str, "learning_rate": float, "momentum": float}
REDUCE_LR = {"monitor": str, "factor": float, "patience": int, "min_lr": float}
AUGMENTATION = {"horizontal_flip": bool, "width_shift": float, "height_shift": float, "zoom": float}
SPLITS = {"train": str, "validation": str, "test": str}
# reduce_lr: null turns the plateau schedule off (Table B.2.1: "–" for the SGD datasets).
DATASET = {"epochs": int, "batch_size": int, "image_size": int, "cache": bool,
           "optimizer": OPTIMIZER, "reduce_lr": (REDUCE_LR, type(None)), "augmentation": AUGMENTATION,
           "splits": SPLITS}
GRID = {"datasets": [str], "models": [str], "losses": list, "runs": int, "seed": int,
        "weights": (str, type(None)), "strategy": str, "mixed_precision": bool,
        "jit_compile": (str, bool), "limit_train": (int, type(None)), "settings": dict}

OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("auto", "mirrored", "multiworker", "none")


def _type_name(expected):
    if isinstance(expected, tuple):
        return " or ".join(_type_name(t) for t in expected)
    if isinstance(expected, list):
        return f"a list of {_type_name(expected[0])}"
    if isinstance(expected, dict):
        return "a mapping"
    return {type(None): "null", float: "a number", int: "an integer", str: "a string",
            bool: "true/false", list: "a list", dict: "a mapping"}[expected]


def _matches(value, expected):
    if isinstance(expected, tuple):
        return any(_matches(value, t) for t in expected)
    if isinstance(expected, list):
        return isinstance(value, list) and all(_matches(v, expected[0]) for v in value)
    if isinstance(expected, dict):
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def validate(data, schema, where):
    """Check `data` against `schema` (key → type, nested mapping or list type)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {type(data).__name__}.")
    for key, value in data.items():
        if key not in schema:
            raise ValueError(f"{where}: unknown key {key!r}; accepted keys: {', '.join(schema)}.")
        expected = schema[key]
        if not _matches(value, expected):
            raise ValueError(f"{where}: {key!r} must be {_type_name(expected)}; got {value!r}.")
        if isinstance(expected, tuple):  # a nested mapping or null: check the mapping's keys
            expected = next((t for t in expected if isinstance(t, dict) and isinstance(value, dict)), None)
        if isinstance(expected, dict) and expected:
            validate(value, expected, f"{where}: {key}")
    return data


def read_yaml(path):
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"config file {str(path)!r} is not valid YAML{where}: "
                         f"{getattr(error, 'problem', error)}.") from None
    return {} if data is None else data


def merge(base, override):
    """`override` on top of `base`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dataset_settings(name, configs_dir, override=None):
    """The settings of dataset `name`: its config file with the grid's overrides on top."""
    path = Path(configs_dir) / "datasets" / f"{name}.yaml"
    settings = validate(read_yaml(path), DATASET, str(path))
    settings = validate(merge(settings, override or {}), DATASET, f"settings for {name}")
    missing = set(DATASET) - set(settings)
    if missing:
        raise ValueError(f"{path}: missing keys {sorted(missing)}.")
    if settings["reduce_lr"] is not None and set(REDUCE_LR) - set(settings["reduce_lr"]):
        raise ValueError(f"settings for {name}: reduce_lr needs {', '.join(REDUCE_LR)} (or null for "
                         f"no schedule); got {settings['reduce_lr']!r}.")
    if settings["optimizer"]["name"] not in OPTIMIZERS:
        raise ValueError(f"{path}: optimizer name must be one of {OPTIMIZERS}; "
                         f"got {settings['optimizer']['name']!r}.")
    return settings


def grid(path):
    data = validate(read_yaml(path), GRID, str(path))
    if data.get("strategy", "auto") not in STRATEGIES:
        raise ValueError(f"{path}: strategy must be one of {STRATEGIES}; got {data['strategy']!r}.")
    return data
