"""Config files are data: the evaluation's settings (a grid, a dataset's training settings) as
`ngl_keras.settings` dataclasses, read from YAML and built where they enter.

Augmentation is `ngl_keras.data.Augmentation`, the class that consumes it.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import yaml

from ngl_keras import data as data_module
from ngl_keras.settings import (NON_NEGATIVE, POSITIVE, POSITIVE_INT, RANGE, Settings, build, check, finite, shown,
                                validate)

OPTIMIZERS = ("adam", "sgd", "adamw")
ADAMW_ONLY = ("beta_1", "beta_2", "epsilon", "global_clipnorm", "no_weight_decay")
SCHEDULES = ("cosine",)
METRICS = ("top1", "top5")  # what a run records besides test_accuracy (ImageNet's Table 3: top-1, top-5)
UNIT = check(finite(lambda v: 0 <= v < 1), "in [0, 1)")
STRATEGIES = ("auto", "mirrored", "multiworker", "none")
MONITORS = ("val_accuracy", "val_loss", "accuracy", "loss")  # what `fit` logs with metrics=["accuracy"]
SEGMENTATION_MONITORS = ("val_miou", "val_loss", "miou", "loss")  # ... with the mean-IoU metric
TASKS = ("classification", "segmentation")  # the registry is ngl_keras.tasks; listed here to check a config


@dataclass(frozen=True)
class Optimizer(Settings):
    name: str = field(metadata=check(lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"))
    learning_rate: float = field(metadata=POSITIVE)
    momentum: float = field(default=0.0, metadata=UNIT)
    # The ImageNet recipes (absent from the paper's datasets' configs, so their records do not change):
    # AdamW's settings, no weight decay on 1-D variables (norms, biases) and on variables whose path
    # holds one of `no_weight_decay`; `learning_rate` given per `reference_batch` images and scaled
    # linearly with the global batch (Goyal et al. 2017).
    weight_decay: Optional[float] = field(default=None, metadata=NON_NEGATIVE)  # SGD/Adam: Keras's decoupled decay
    poly_power: Optional[float] = field(default=None, metadata=POSITIVE)  # lr · (1 − step/steps)^power, per iteration
    beta_1: Optional[float] = field(default=None, metadata=UNIT)
    beta_2: Optional[float] = field(default=None, metadata=UNIT)
    epsilon: Optional[float] = field(default=None, metadata=POSITIVE)
    global_clipnorm: Optional[float] = field(default=None, metadata=POSITIVE)
    no_weight_decay: Optional[list[str]] = None
    reference_batch: Optional[int] = field(default=None, metadata=POSITIVE_INT)

    def check(self):
        given = [key for key in ADAMW_ONLY if getattr(self, key) is not None]
        if given and self.name != "adamw":
            raise ValueError(f"optimizer {self.name!r} takes no {', '.join(given)}: they are AdamW's (name: adamw).")

    def scale(self, global_batch):
        """The factor on the learning rates for `global_batch` images per step (1 without `reference_batch`)."""
        return 1.0 if self.reference_batch is None else global_batch / self.reference_batch


@dataclass(frozen=True)
class Schedule(Settings):
    """A learning-rate schedule per step: linear warm-up from `warmup_learning_rate` to the optimizer's
    learning rate over `warmup_epochs`, then cosine decay to `min_learning_rate` at the last step
    (rates per the optimizer's `reference_batch`, scaled as it is)."""

    name: str = field(metadata=check(lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"))
    warmup_epochs: int = field(default=0, metadata=check(lambda v: v >= 0, "an integer >= 0"))
    warmup_learning_rate: float = field(default=0.0, metadata=NON_NEGATIVE)
    min_learning_rate: float = field(default=0.0, metadata=NON_NEGATIVE)


@dataclass(frozen=True)
class Crop(Settings):
    """Images of any size: training takes a random-resized crop of side `image_size` (area fraction
    uniform in `scale`, aspect ratio log-uniform in `ratio`: torchvision's rule); evaluation resizes
    the shorter side to `evaluation_resize` and takes the centre `image_size` crop."""

    scale: tuple[float, ...] = field(default=(0.08, 1.0), metadata=RANGE)
    ratio: tuple[float, ...] = field(default=(3 / 4, 4 / 3), metadata=RANGE)
    evaluation_resize: int = field(default=256, metadata=POSITIVE_INT)


@dataclass(frozen=True)
class Mix(Settings):
    """Mixup or cutmix on every training batch (cutmix with `switch_probability`), on targets
    label-smoothed by `label_smoothing` first (timm's Mixup, as the Swin recipe)."""

    mixup_alpha: float = field(default=0.8, metadata=POSITIVE)
    cutmix_alpha: float = field(default=1.0, metadata=POSITIVE)
    switch_probability: float = field(default=0.5, metadata=check(finite(lambda v: 0 <= v <= 1), "in [0, 1]"))
    label_smoothing: float = field(default=0.0, metadata=UNIT)


@dataclass(frozen=True)
class RandAugment(Settings):
    """Keras's RandAugment on every training image: `num_ops` operations of strength `strength`."""

    num_ops: int = field(default=2, metadata=POSITIVE_INT)
    strength: float = field(default=0.9, metadata=check(finite(lambda v: 0 <= v <= 1), "in [0, 1]"))


@dataclass(frozen=True)
class ReduceLR(Settings):
    monitor: str = field(metadata=check(lambda v: v in MONITORS, f"one of {', '.join(MONITORS)}"))
    factor: float = field(metadata=check(finite(lambda v: 0 < v < 1), "in (0, 1)"))
    patience: int = field(metadata=check(lambda v: v >= 0, "an integer >= 0"))
    min_lr: float = field(metadata=NON_NEGATIVE)


@dataclass(frozen=True)
class SegmentationReduceLR(ReduceLR):
    monitor: str = field(metadata=check(lambda v: v in SEGMENTATION_MONITORS,
                                        f"one of {', '.join(SEGMENTATION_MONITORS)}"))


def _is_split(spec):
    try:
        data_module.Split.parse(spec)
    except ValueError:
        return False
    return True


SPLIT_SPEC = check(_is_split, data_module.SPLIT_FORMS)


@dataclass(frozen=True)
class Splits(Settings):
    train: str = field(metadata=SPLIT_SPEC)
    validation: str = field(metadata=SPLIT_SPEC)
    test: Optional[str] = field(metadata=SPLIT_SPEC)  # null: runs that are not tested (a search's fitness)
    # ImageNet: its test labels are not public, so the labelled validation split is both the one watched
    # per epoch and the one reported (Table 3, Figure 2); true allows validation and test to be the same.
    report_on_validation: Optional[bool] = None

    def roles(self):
        """{role: spec} of the splits given (test left out when null)."""
        return {role: spec for role, spec in (("train", self.train), ("validation", self.validation),
                                              ("test", self.test)) if spec is not None}


@dataclass(frozen=True)
class DatasetSettings(Settings):
    """configs/datasets/<name>.yaml, and a grid's `settings: {<name>: ...}` on top of it."""

    epochs: int = field(metadata=POSITIVE_INT)
    image_size: Optional[int] = field(metadata=POSITIVE_INT)  # null: the data's own (see `dataset_settings`)
    batch_size: int = field(metadata=POSITIVE_INT)
    cache: bool
    optimizer: Optimizer
    reduce_lr: Optional[ReduceLR]  # null turns the plateau schedule off (Table B.2.1: "–" for the SGD group)
    augmentation: data_module.Augmentation
    splits: Splits
    limit_train: Optional[int] = field(default=None, metadata=POSITIVE_INT)  # the grid's, set by `plan`
    # The ImageNet recipes' (none of them in the paper's datasets' configs: their records stay as they were).
    schedule: Optional[Schedule] = None        # null: the optimizer's learning rate, changed only by reduce_lr
    crop: Optional[Crop] = None                # null: images resized whole to image_size
    flip: Optional[bool] = None                # a horizontal flip of each training image (with crop)
    randaugment: Optional[RandAugment] = None
    random_erasing: Optional[float] = field(default=None, metadata=check(finite(lambda v: 0 <= v <= 1),
                                                                         "a probability in [0, 1]"))
    mix: Optional[Mix] = None
    # Symmetric label noise: this share of the training and validation labels (both drawn from the training
    # data) replaced by another class chosen uniformly; the test labels stay clean (`data.readers.label_noise`).
    label_noise: Optional[float] = field(default=None, metadata=check(finite(lambda v: 0 <= v < 1),
                                                                      "a share of the labels in [0, 1)"))
    metrics: Optional[list[str]] = field(default=None, metadata=check(
        lambda v: v and all(m in METRICS for m in v), f"a non-empty list of {', '.join(METRICS)}"))

    @property
    def recipe_augmentation(self):
        """Whether the ImageNet recipe's input steps (crop, flip, RandAugment, erasing, mix) are on."""
        return any(v is not None for v in (self.crop, self.flip, self.randaugment, self.random_erasing, self.mix))

    def check(self):
        if self.recipe_augmentation and self.augmentation.active:
            raise ValueError("augmentation (shifts, zoom, horizontal_flip) and the ImageNet recipe's crop/flip/"
                             "randaugment/random_erasing/mix are two augmentations: turn augmentation off.")


@dataclass(frozen=True)
class SegmentationSplits(Settings):
    """The splits of a dataset on disk, by the layout's names (VOC: train, val, train_aug; COCO-Stuff:
    train2017, val2017). VOC has no public test labels: the paper reports on val, so test is val."""

    train: str
    validation: str
    test: str


@dataclass(frozen=True)
class SegmentationSettings(Settings):
    """configs/datasets/<name>.yaml of a segmentation dataset, and a grid's `settings: {<name>: ...}`.

    Training reads random crops (`crop_size`, `scales`, `flip`: the reference's augmentation, padded
    with `mean`); evaluation reads full images, `eval_batch_size` at a time (1 where sizes differ).
    `iterations_per_epoch` (null: one pass over the training split) counts a schedule in iterations:
    the reference's 20,000 iterations are e.g. 20 epochs of 1,000."""

    epochs: int = field(metadata=POSITIVE_INT)
    batch_size: int = field(metadata=POSITIVE_INT)
    crop_size: int = field(metadata=POSITIVE_INT)
    scales: tuple[float, ...] = field(metadata=check(lambda v: bool(v) and all(x > 0 for x in v),
                                                    "a non-empty list of numbers > 0"))
    mean: tuple[float, ...] = field(metadata=check(lambda v: len(v) == 3, "three numbers (R, G, B)"))
    flip: bool
    optimizer: Optimizer
    reduce_lr: Optional[SegmentationReduceLR]
    splits: SegmentationSplits
    iterations_per_epoch: Optional[int] = field(default=None, metadata=POSITIVE_INT)
    eval_batch_size: int = field(default=1, metadata=POSITIVE_INT)
    limit_train: Optional[int] = field(default=None, metadata=POSITIVE_INT)  # the grid's, set by `plan`

    def check(self):
        if self.optimizer.poly_power is not None and self.reduce_lr is not None:
            raise ValueError("a poly schedule (optimizer.poly_power) and reduce_lr both set the learning rate; "
                             "give one of them (reduce_lr: null with a poly schedule).")


@dataclass(frozen=True)
class Grid(Settings):
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
    task: str = field(default="classification", metadata=check(lambda v: v in TASKS, f"one of {', '.join(TASKS)}"))
    data_dir: Optional[str] = None  # segmentation: the directory holding the dataset's tree (VOCdevkit, ...)
    settings: dict = field(default_factory=dict, metadata=check(
        lambda v: all(isinstance(x, dict) for x in v.values()),
        "a mapping from dataset name to a mapping of its settings"))


MAX_CONFIG_BYTES = 1_000_000  # a config is a page of settings; more is a mistake, or an attack on memory
MAX_CONFIG_VALUES = 100_000   # the largest in configs/ holds 74; building 100,000 takes about a second


# libyaml's loader when PyYAML has it: the pure-Python one takes 20 s on a 1 MB list.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigLoader(_SAFE_LOADER):
    """YAML's safe loader, with floats written as `1e-3` read as numbers. YAML 1.1 reads `1e-3`
    and `1.0e3` as text (its floats need a dot and a signed exponent); every such value in a
    config is meant as a number."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _check_events(text, path):
    """Raise a one-line ValueError at the first alias (`*name`) of `text`, or at its value number
    `MAX_CONFIG_VALUES` + 1. An alias repeats a node without copying it, so a 2 KB file of nested
    aliases ("billion laughs") stands for 10^9 strings that a check or a message would walk;
    configs do not need them. Reads events only: nothing is built."""
    values = 0
    for event in yaml.parse(text, Loader=_SAFE_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError(f"config file {str(path)!r}{_at(event)}: aliases (&/*) are not accepted in "
                             "config files; write the value out.")
        values += isinstance(event, yaml.ScalarEvent)
        if values > MAX_CONFIG_VALUES:
            raise ValueError(f"config file {str(path)!r}{_at(event)}: more than {MAX_CONFIG_VALUES:,} values; "
                             "config files are limited to that.")


def _at(event):
    return f" at line {event.start_mark.line + 1}, column {event.start_mark.column + 1}"


def read_yaml(path):
    """The data of YAML file `path`, read with `ConfigLoader`: a file above `MAX_CONFIG_BYTES` is
    refused unread, one with aliases or too many values before anything is built."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {str(path)!r} does not exist.")
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} is not a file.")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {str(path)!r} is {size:,} bytes; config files are limited to "
                         f"{MAX_CONFIG_BYTES:,} bytes.")
    try:
        text = path.read_text()
        _check_events(text, path)
        try:
            data = yaml.load(text, Loader=ConfigLoader)
        except ValueError as error:  # an integer longer than Python converts (sys.get_int_max_str_digits)
            raise ValueError(f"config file {str(path)!r} holds a value YAML cannot read: {error}") from None
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
    name, split = dataset.name, data_module.Split.parse(spec)
    if split.base not in dataset.splits:
        raise ValueError(f"dataset {shown(name)} has no split {shown(split.base)} (in {shown(spec)}); it has "
                         f"{', '.join(dataset.splits)}.")
    count = dataset.sizes[split.base]
    start, stop = split.rows(count) or (0, 0)
    if not 0 <= start < stop <= count:
        raise ValueError(f"split {shown(spec)} of dataset {shown(name)} selects no rows or rows outside the "
                         f"{count} of split {shown(split.base)}.")
    return split.base, start, stop


def _check_splits(name, splits, where):
    given = splits.roles()
    rows = {role: split_rows(name, spec) for role, spec in given.items()}
    roles = list(rows)
    for i, first in enumerate(roles):
        for second in roles[i + 1:]:
            if splits.report_on_validation and (first, second) == ("validation", "test") \
                    and given[first] == given[second]:
                continue
            (a, a0, a1), (b, b0, b1) = rows[first], rows[second]
            if a == b and a0 < b1 and b0 < a1:
                raise ValueError(f"{where}: splits {first} {shown(given[first])} and {second} "
                                 f"{shown(given[second])} overlap: the same images would be used for both.")


DEFAULTS_FILE = "defaults.yaml"  # configs/datasets/: the settings of a tfds dataset read by name
# tfds datasets read by name that have their own settings file: configs/datasets/<file>.yaml
SETTINGS_FILES = {"imagenet2012": "imagenet2012", "imagenet2012_subset": "imagenet2012"}
ARRAYS_FILE = "arrays.yaml"      # configs/datasets/: the settings of in-memory arrays (Python API)


def dataset_settings(name, configs_dir, override=None):
    """The settings of dataset `name` (a name or a `data.DatasetInfo`) with the grid's overrides
    on top: for the paper's datasets configs/datasets/<name>.yaml; for in-memory arrays
    arrays.yaml; for any other tfds dataset defaults.yaml, whose splits follow the first of its
    `splits_by_available` rules that the dataset's splits allow. `image_size: null` becomes the
    dataset's own (square, fixed) image side."""
    dataset = data_module.info(name)
    name, directory = dataset.name, Path(configs_dir) / "datasets"
    own = SETTINGS_FILES.get(name.split("/")[0].split(":")[0])
    path = directory / (f"{name}.yaml" if dataset.registered else f"{own}.yaml" if own else
                        ARRAYS_FILE if dataset.arrays is not None else DEFAULTS_FILE)
    settings = read_yaml(path)
    rules = settings.pop("splits_by_available", None) if isinstance(settings, dict) else None
    settings = validate(settings, DatasetSettings, str(path), partial=True)
    override = override or {}
    if rules is not None and "splits" not in override:
        settings = {**settings, "splits": _default_splits(dataset, rules, path)}
    settings = build(DatasetSettings, merge(settings, override), f"settings for {name}")
    if settings.image_size is None and dataset.is_images:
        if not dataset.fixed_size:
            raise ValueError(f"settings for {name}: its images vary in size (or are not square): give image_size, "
                             f"e.g. settings: {{{name}: {{image_size: 64}}}} in the grid config.")
        settings = settings.replace(image_size=dataset.fixed_size)
    if settings.augmentation.active and not dataset.is_images:
        raise ValueError(f"settings for {name}: augmentation needs images (N, height, width, channels); the "
                         "examples are not images: turn it off (horizontal_flip false, shifts and zoom 0).")
    _check_splits(dataset, settings.splits, f"settings for {name}")
    return settings


def _default_splits(dataset, rules, path):
    """The splits of the first rule of `splits_by_available` ({"has": [...], "use": {role: split}})
    whose splits the dataset has."""
    for rule in rules:
        if set(rule["has"]) <= set(dataset.splits):
            return rule["use"]
    raise ValueError(f"dataset {shown(dataset.name)} has splits {', '.join(dataset.splits)}; no rule of {path} fits "
                     f"them: give its splits in the grid config, settings: {{{dataset.name}: {{splits: "
                     "{train: ..., validation: ..., test: ...}}}.")


def grid(path):
    """A grid config file, checked key by key (keys may be left to the command line)."""
    return validate(read_yaml(path), Grid, str(path), partial=True)


def check_grid(data, overrides=None, where="grid"):
    """The `Grid` of a grid mapping with the command line's `overrides` (None: not given) applied:
    complete and valid. Datasets chosen there drop the config's settings of the others."""
    overrides = overrides or {}
    data = _registered_names({**data, **{k: v for k, v in overrides.items() if v is not None}})
    if overrides.get("datasets") and isinstance(data.get("settings"), dict):
        data["settings"] = {k: v for k, v in data["settings"].items() if k in data["datasets"]}
    return build(Grid, data, where)


def _registered_names(data):
    """Dataset and model names in any capitals as registered (`CIFAR10` is `cifar10`); others as given."""
    from ngl_keras.names import MODELS, registered

    spell = {"datasets": data_module.DATASETS, "models": MODELS}
    out = {key: [registered(n, spell[key]) or n for n in value] if key in spell and isinstance(value, list)
           else value for key, value in data.items()}
    if isinstance(out.get("settings"), dict):
        out["settings"] = {registered(k, data_module.DATASETS) or k: v for k, v in out["settings"].items()}
    return out
