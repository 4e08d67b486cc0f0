"""Grid planning: a grid config's datasets × models × losses × runs as a list of `RunSpec`s, every
name and setting checked up front."""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ngl_keras import config as config_module
from ngl_keras import data as data_module
from ngl_keras import formula
from ngl_keras import losses as losses_module
from ngl_keras import models as models_module
from ngl_keras.settings import shown
from ngl_keras import names, tasks


class LossOverflows(ValueError):
    """A formula that is inf or NaN on the probe batch: a user's loss is refused with it before the
    grid trains; the search's fitness counts such a candidate as diverged, as training would."""


@dataclass(frozen=True)
class LossSpec:
    """A loss of the grid: its label in tables, registry name and arguments, and what the loss
    built from them is (built once, by `parse`): its config and whether it takes logits."""

    label: str
    name: str
    kwargs: dict = field(default_factory=dict)
    config: dict = field(default=None, compare=False, repr=False)  # the built loss's config, less its name
    logits: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def parse(cls, item, task_arguments=None):
        """A grid's loss entry, built once so that an unknown name, a formula that does not parse
        or a bad argument fails now, before any run trains. `task_arguments` (the task's, e.g.
        segmentation's ignore_class=255) are added to its arguments; a loss that cannot take them
        is refused by name."""
        if isinstance(item, str):  # a name in any capitals (labelled by its registered name), `ngl(alpha=3.0)`, a formula
            label, name, kwargs = names.parse_loss(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            kwargs = {k: v for k, v in item.items() if k not in ("name", "label")}
            name = names.registered(item["name"], names.LOSSES) or item["name"]
            label = str(item.get("label", name))
        else:
            raise ValueError(f"a loss must be a registry name, a formula, or a mapping with 'name'; "
                             f"got {shown(item)}.")
        for key, value in (task_arguments or {}).items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(f"loss {label!r}: {key} {kwargs[key]!r} is not the task's {value!r}; leave it out.")
        kwargs = {**kwargs, **(task_arguments or {})}
        loss = losses_module.get(name, **kwargs)
        if isinstance(loss, losses_module.ExpressionLoss) and formula.probe_overflows(loss.tree, loss.get_config()["epsilon"]):
            raise LossOverflows(f"loss {shown(name)} is inf or NaN in float32 on a probe batch (p in (0, 1), y one-hot): "
                             "it overflows at the first training step; scale its constants down.")
        config = {k: v for k, v in loss.get_config().items() if k != "name"}
        return cls(label, name, kwargs, config, takes_logits(loss))

    def build(self):
        return losses_module.get(self.name, **self.kwargs)

    def kernel_l2(self):
        return losses_module.kernel_l2(self.name, **self.kwargs)

    def identity(self):
        """What decides the loss's values: its full config (defaults included) and kernel L2."""
        return {"name": self.name, "config": self.config, "kernel_l2": self.kernel_l2()}


def takes_logits(loss):
    """Whether `loss` expects logits, so that the model ends with a linear output."""
    return bool(loss.get_config().get("from_logits")) or isinstance(loss, losses_module.BiTemperedLogisticLoss)


@dataclass(frozen=True)
class Sources:
    """Datasets and models known by name besides the registries: in-memory arrays
    (`data.from_arrays`) and model functions (`models.from_function`) of the Python API. A grid
    names them like any other dataset or model."""

    datasets: dict = field(default_factory=dict)  # name -> data.DatasetInfo
    models: dict = field(default_factory=dict)    # name -> models.ModelFunction

    def dataset(self, name, data_dir=None):
        return self.datasets[name] if name in self.datasets else data_module.info(name, data_dir)

    def model(self, name):
        return self.models[name] if name in self.models else models_module.info(name)


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: a dataset, a model, a loss, its index among the runs and its seed, with
    the dataset's settings. Its identity for the records: `records.identity`."""

    dataset: str
    model: str
    loss: LossSpec
    run: int
    seed: int
    settings: config_module.DatasetSettings
    weights: str = None
    data: data_module.DatasetInfo = None             # the dataset, resolved by `plan`
    model_source: models_module.ModelFunction = None  # a model function, for a model not in the registry
    task: str = "classification"                     # the grid's (`tasks.TASKS`)

    @property
    def dataset_info(self):
        return self.data or tasks.get(self.task).dataset(self.dataset)

    @property
    def model_info(self):
        return self.model_source or tasks.get(self.task).model(self.model)

    @property
    def key(self):
        return f"{self.dataset}/{self.model}/{self.loss.label}/{self.run}"

    @property
    def directory(self):
        """The run's directory name: readable, short whatever the loss label (a formula can be
        hundreds of characters), and unique through a hash of the key."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:10]
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.loss.label).strip("_.")[:32] or "loss"
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset)  # a tfds name may hold '/' and ':'
        return f"{dataset}__{self.model}__{label}__{self.run}__{digest}"


def plan(grid, configs_dir, overrides=None, data_dir=None, sources=None):
    """The list of runs of a grid config, with every name and setting checked up front.

    A dataset is one of the paper's, a tfds dataset prepared in `data_dir` (read offline), or one
    of `sources` (a `Sources`: in-memory arrays, model functions)."""
    sources = sources or Sources()
    if not isinstance(grid, config_module.Grid):
        grid = config_module.check_grid(grid, overrides)
    if grid.task != "classification":
        return _plan_task(grid, configs_dir, tasks.get(grid.task))
    datasets, model_names = grid.datasets, grid.models
    resolved = {name: sources.dataset(name, data_dir) for name in datasets}
    weights = grid.weights
    for name in model_names:
        backbone = sources.model(name).build_backbone  # unknown names fail here
        if weights is not None and backbone is None:
            raise ValueError(f"model {shown(name)} has no pretrained weights; use weights: null with it "
                             f"(got {shown(weights)}).")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ValueError(f"weights must be null, 'imagenet' or a weights file; {shown(weights)} is none of them.")
    loss_specs = [LossSpec.parse(item) for item in grid.losses]
    labels = [spec.label for spec in loss_specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"loss labels must be unique in a grid; got {labels}.")
    for name in model_names:
        logits = [spec.label for spec in loss_specs if spec.logits]
        if isinstance(sources.model(name), models_module.ModelFunction) and logits:
            raise ValueError(f"loss {shown(logits[0])} takes logits, and model {shown(name)} (a model function) ends in "
                             "softmax; give losses on probabilities with a model function.")
    runs, seed = grid.runs, grid.seed
    unknown = set(grid.settings) - set(datasets)
    if unknown:
        raise ValueError(f"settings given for datasets not in the grid: {sorted(unknown)}; "
                         f"grid datasets: {datasets}.")
    specs = []
    for dataset in datasets:
        settings = config_module.dataset_settings(resolved[dataset], configs_dir, grid.settings.get(dataset))
        settings = settings.replace(**({"epochs": grid.epochs} if grid.epochs else {}), limit_train=grid.limit_train)
        _, first, end = config_module.split_rows(resolved[dataset], settings.splits.train)
        if settings.limit_train is not None and settings.limit_train > end - first:
            raise ValueError(f"limit_train {settings.limit_train} exceeds the {end - first} images of "
                             f"{dataset}'s training split {shown(settings.splits.train)}.")
        for model in model_names:
            size = settings.image_size
            source = sources.model(model)
            models_module.check_image_size(source, size, dataset)
            function = source if isinstance(source, models_module.ModelFunction) else None
            for spec in loss_specs:
                for run in range(runs):
                    specs.append(RunSpec(dataset, model, spec, run, seed + run, settings,
                                         grid.weights, resolved[dataset], function))
    return specs



def _plan_task(grid, configs_dir, task):
    """The runs of a grid of another task than classification (segmentation): its datasets,
    settings, models and loss arguments are the task's (`tasks.Task`)."""
    resolved = {name: task.dataset(name) for name in grid.datasets}
    for name in grid.models:
        entry = task.model(name)  # unknown names fail here
        if grid.weights not in (None, *entry.weights) and not Path(grid.weights).is_file():
            raise ValueError(f"weights for {name} must be null{''.join(f', {w!r}' for w in entry.weights)} or a "
                             f"weights file; got {grid.weights!r}.")
    loss_specs = [LossSpec.parse(item, task.loss_arguments) for item in grid.losses]
    labels = [spec.label for spec in loss_specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"loss labels must be unique in a grid; got {labels}.")
    unknown = set(grid.settings) - set(grid.datasets)
    if unknown:
        raise ValueError(f"settings given for datasets not in the grid: {sorted(unknown)}; "
                         f"grid datasets: {grid.datasets}.")
    specs = []
    for dataset in grid.datasets:
        settings = task.settings(resolved[dataset], configs_dir, grid.settings.get(dataset))
        settings = settings.replace(**({"epochs": grid.epochs} if grid.epochs else {}), limit_train=grid.limit_train)
        for model in grid.models:
            for spec in loss_specs:
                for run in range(grid.runs):
                    specs.append(RunSpec(dataset, model, spec, run, grid.seed + run, settings, grid.weights,
                                         resolved[dataset], task=task.name))
    return specs
