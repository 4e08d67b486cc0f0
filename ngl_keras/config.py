"""Config files are data: YAML checked against one schema per concept, with unknown keys, wrong
types and out-of-range values rejected by name where they enter.

Each concept is a dataclass: its fields are the accepted keys, their annotations the types, and a
field's `check` (metadata) the accepted values. Augmentation is `ngl_keras.data.Augmentation`, the
class that consumes it; the others are consumed as plain mappings by `ngl_keras.training`.
"""

import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from ngl_keras import data as data_module

OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("auto", "mirrored", "multiworker", "none")
MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")  # what `fit` logs with metrics=["accuracy"]


def check(test, accepted):
    """Field metadata: `test(value)` must hold; `accepted` says what is accepted, for the message."""
    return {"check": (test, accepted)}


def _finite(test):
    return lambda v: math.isfinite(v) and test(v)


POSITIVE_INT = check(lambda v: v >= 1, "an integer >= 1")
POSITIVE = check(_finite(lambda v: v > 0), "a finite number > 0")
NON_NEGATIVE = check(_finite(lambda v: v >= 0), "a finite number >= 0")


@dataclass(frozen=True)
class Optimizer:
    name: str = field(metadata=check(lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"))
    learning_rate: float = field(metadata=POSITIVE)
    momentum: float = field(default=0.0, metadata=check(_finite(lambda v: 0 <= v < 1), "in [0, 1)"))


@dataclass(frozen=True)
class ReduceLR:
    monitor: str = field(metadata=check(lambda v: v in MONITORS, f"one of {', '.join(MONITORS)}"))
    factor: float = field(metadata=check(_finite(lambda v: 0 < v < 1), "in (0, 1)"))
    patience: int = field(metadata=check(lambda v: v >= 0, "an integer >= 0"))
    min_lr: float = field(metadata=NON_NEGATIVE)


_SPLIT = re.compile(r"^([a-z]+)(?:\[(-?\d+(?:\.\d+)?%?)?:(-?\d+(?:\.\d+)?%?)?\])?$")
SPLIT_SPEC = check(lambda v: bool(_SPLIT.match(v)), "a split such as 'train', 'train[:90%]' or 'test[1000:]'")


@dataclass(frozen=True)
class Splits:
    train: str = field(metadata=SPLIT_SPEC)
    validation: str = field(metadata=SPLIT_SPEC)
    test: Optional[str] = field(metadata=SPLIT_SPEC)  # null: runs that are not tested (a search's fitness)


@dataclass(frozen=True)
class DatasetSettings:
    """configs/datasets/<name>.yaml, and a grid's `settings: {<name>: ...}` on top of it."""

    epochs: int = field(metadata=POSITIVE_INT)
    image_size: Optional[int] = field(metadata=POSITIVE_INT)  # null: the data's own (see `dataset_settings`)
    batch_size: int = field(metadata=POSITIVE_INT)
    cache: bool
    optimizer: Optimizer
    reduce_lr: Optional[ReduceLR]  # null turns the plateau schedule off (Table B.2.1: "–" for the SGD group)
    augmentation: data_module.Augmentation
    splits: Splits


@dataclass(frozen=True)
class Grid:
    """A grid config (configs/quick.yaml, ...): the runs of train_small.py."""

    datasets: list[str] = field(metadata=check(bool, "a non-empty list"))
    models: list[str] = field(metadata=check(bool, "a non-empty list"))
    losses: list = field(metadata=check(bool, "a non-empty list"))
    runs: int = field(default=1, metadata=POSITIVE_INT)
    seed: int = field(default=0, metadata=check(lambda v: 0 <= v < 2 ** 31, "an integer in [0, 2**31)"))
    weights: Optional[str] = None
    strategy: str = field(default="auto", metadata=check(lambda v: v in STRATEGIES,
                                                         f"one of {', '.join(STRATEGIES)}"))
    mixed_precision: Union[bool, str] = field(default=False, metadata=check(
        lambda v: v in (True, False, "mixed_float16", "mixed_bfloat16"),
        "true (mixed_float16), false, mixed_float16 or mixed_bfloat16"))
    jit_compile: Union[str, bool] = field(default="auto", metadata=check(
        lambda v: v in ("auto", True, False), "auto, true or false"))
    epochs: Optional[int] = field(default=None, metadata=POSITIVE_INT)  # every dataset's, if set
    limit_train: Optional[int] = field(default=None, metadata=POSITIVE_INT)
    settings: dict = field(default_factory=dict, metadata=check(
        lambda v: all(isinstance(x, dict) for x in v.values()),
        "a mapping from dataset name to a mapping of its settings"))


# Checking a mapping against a dataclass.

def _type_name(expected):
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if isinstance(expected, tuple):  # the mapping form of a schema (below): alternatives
        return " or ".join(_type_name(t) for t in expected)
    if isinstance(expected, list):
        return f"a list of {_type_name(expected[0])}"
    if isinstance(expected, dict):
        return "a mapping"
    if origin is Union:
        return " or ".join(_type_name(t) for t in args)
    if origin is list:
        return ("a list of strings" if args[0] is str else f"a list of {_type_name(args[0])}") if args else "a list"
    if is_dataclass(expected):
        return "a mapping"
    return {type(None): "null", float: "a number", int: "an integer", str: "a string",
            bool: "true/false", list: "a list", dict: "a mapping"}[expected]


def _matches(value, expected):
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if isinstance(expected, tuple):
        return any(_matches(value, t) for t in expected)
    if isinstance(expected, list):
        return isinstance(value, list) and all(_matches(v, expected[0]) for v in value)
    if isinstance(expected, dict):
        return isinstance(value, dict)
    if origin is Union:
        return any(_matches(value, t) for t in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if is_dataclass(expected):
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def keys(schema):
    return [f.name for f in fields(schema)]


def validate(data, schema, where, partial=False):
    """Check mapping `data` against dataclass `schema`: keys, types, accepted values, and (unless
    `partial`) that every field without a default is given. Returns `data` unchanged."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got "
                         f"{'nothing' if data is None else type(data).__name__}.")
    if isinstance(schema, dict):
        return _validate_mapping(data, schema, where)
    hints = typing.get_type_hints(schema)
    by_name = {f.name: f for f in fields(schema)}
    types = {name: hints[name] for name in by_name}
    for key, value in data.items():
        expected = _checked_type(key, value, types, where)
        test, accepted = by_name[key].metadata.get("check", (None, None))
        if test is not None and value is not None and not test(value):
            raise ValueError(f"{where}: {key!r} must be {accepted}; got {value!r}.")
        nested = next((t for t in (typing.get_args(expected) or (expected,)) if is_dataclass(t)), None)
        if nested is not None and isinstance(value, dict):  # a dataclass, or Optional[dataclass]
            validate(value, nested, f"{where}: {key}", partial)
    if not partial:
        missing = [f.name for f in fields(schema) if f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}.")
        if schema is data_module.Augmentation:
            data_module.Augmentation(**data)  # its own range checks, with its own messages
    return data


def _checked_type(key, value, types, where):
    """The type `types` gives `key`, once `key` is known there and `value` is of that type."""
    if key not in types:
        raise ValueError(f"{where}: unknown key {key!r}; accepted keys: {', '.join(types)}.")
    expected = types[key]
    if not _matches(value, expected):
        raise ValueError(f"{where}: {key!r} must be {_type_name(expected)}; got {value!r}.")
    return expected


def _validate_mapping(data, schema, where):
    """The mapping form of a schema (key -> type, nested mapping, [type] or (types...)): keys and
    types only; kept for the configs that have no dataclass yet."""
    for key, value in data.items():
        expected = _checked_type(key, value, schema, where)
        if isinstance(expected, tuple):  # a nested mapping or null: check the mapping's keys
            expected = next((t for t in expected if isinstance(t, dict) and isinstance(value, dict)), None)
        if isinstance(expected, dict) and expected:
            validate(value, expected, f"{where}: {key}")
    return data


def read_yaml(path):
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {str(path)!r} does not exist.")
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} is not a file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"config file {str(path)!r} is not valid YAML{where}: "
                         f"{getattr(error, 'problem', error)}.") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {str(path)!r} is not a text file.") from None
    if data is None:
        raise ValueError(f"config file {str(path)!r} is empty: it must hold a mapping of settings.")
    return data


def merge(base, override):
    """`override` on top of `base`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def split_rows(name, spec):
    """(base split, first row, end row) of split `spec` of dataset `name` (a name or a
    `data.DatasetInfo`), checked."""
    dataset = data_module.info(name)
    name = dataset.name
    match = _SPLIT.match(spec)
    base = match.group(1)
    if base not in dataset.splits:
        raise ValueError(f"dataset {name!r} has no split {base!r} (in {spec!r}); it has "
                         f"{', '.join(dataset.splits)}.")
    count = dataset.sizes[base]

    def row(text, default):
        if text is None:
            return default
        value = count * float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        return int(round(value + count if value < 0 else value))

    start, stop = row(match.group(2), 0), row(match.group(3), count)
    if not 0 <= start < stop <= count:
        raise ValueError(f"split {spec!r} of dataset {name!r} selects no rows or rows outside the "
                         f"{count} of split {base!r}.")
    return base, start, stop


def _check_splits(name, splits, where):
    rows = {role: split_rows(name, spec) for role, spec in splits.items() if spec is not None}
    roles = list(rows)
    for i, first in enumerate(roles):
        for second in roles[i + 1:]:
            (a, a0, a1), (b, b0, b1) = rows[first], rows[second]
            if a == b and a0 < b1 and b0 < a1:
                raise ValueError(f"{where}: splits {first} {splits[first]!r} and {second} "
                                 f"{splits[second]!r} overlap: the same images would be used for both.")


DEFAULTS_FILE = "defaults.yaml"  # configs/datasets/: the settings of a tfds dataset read by name
ARRAYS_FILE = "arrays.yaml"      # configs/datasets/: the settings of in-memory arrays (Python API)


def dataset_settings(name, configs_dir, override=None):
    """The settings of dataset `name` (a name or a `data.DatasetInfo`) with the grid's overrides
    on top: for the paper's datasets configs/datasets/<name>.yaml; for in-memory arrays
    arrays.yaml; for any other tfds dataset defaults.yaml, whose splits follow the first of its
    `splits_by_available` rules that the dataset's splits allow. `image_size: null` becomes the
    dataset's own (square, fixed) image side."""
    dataset = data_module.info(name)
    name, directory = dataset.name, Path(configs_dir) / "datasets"
    path = directory / (f"{name}.yaml" if dataset.registered else
                        ARRAYS_FILE if dataset.arrays is not None else DEFAULTS_FILE)
    settings = read_yaml(path)
    rules = settings.pop("splits_by_available", None) if isinstance(settings, dict) else None
    settings = validate(settings, DatasetSettings, str(path), partial=True)
    override = override or {}
    if rules is not None and "splits" not in override:
        settings = {**settings, "splits": _default_splits(dataset, rules, path)}
    settings = validate(merge(settings, override), DatasetSettings, f"settings for {name}")
    if settings["image_size"] is None and dataset.is_images:
        if not dataset.fixed_size:
            raise ValueError(f"settings for {name}: its images vary in size (or are not square): give image_size, "
                             f"e.g. settings: {{{name}: {{image_size: 64}}}} in the grid config.")
        settings["image_size"] = dataset.fixed_size
    if settings["augmentation"] and data_module.Augmentation(**settings["augmentation"]).active \
            and not dataset.is_images:
        raise ValueError(f"settings for {name}: augmentation needs images (N, height, width, channels); the "
                         "examples are not images: turn it off (horizontal_flip false, shifts and zoom 0).")
    _check_splits(dataset, settings["splits"], f"settings for {name}")
    return settings


def _default_splits(dataset, rules, path):
    """The splits of the first rule of `splits_by_available` ({"has": [...], "use": {role: split}})
    whose splits the dataset has."""
    for rule in rules:
        if set(rule["has"]) <= set(dataset.splits):
            return rule["use"]
    raise ValueError(f"dataset {dataset.name!r} has splits {', '.join(dataset.splits)}; no rule of {path} fits "
                     f"them: give its splits in the grid config, settings: {{{dataset.name}: {{splits: "
                     "{train: ..., validation: ..., test: ...}}}.")


def grid(path):
    """A grid config file, checked key by key (keys may be left to the command line)."""
    return validate(read_yaml(path), Grid, str(path), partial=True)


def check_grid(data, where="grid"):
    """A grid with the command line's overrides applied: complete and valid."""
    return validate(data, Grid, where)
