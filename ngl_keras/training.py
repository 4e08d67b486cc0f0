"""The evaluation protocol: a grid of datasets × models × losses × runs, each run trained,
tested and appended to OUT/runs.jsonl, so that a re-run resumes where it stopped."""

import hashlib
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ngl_keras import config as config_module
from ngl_keras import data as data_module
from ngl_keras.files import append_json_line, output_directory, read_json_lines
from ngl_keras import losses as losses_module
from ngl_keras import models as models_module


@dataclass(frozen=True)
class LossSpec:
    """A loss of the grid: its label in tables, registry name and arguments."""

    label: str
    name: str
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, item):
        """A grid's loss entry, built once so that an unknown name, a formula that does not parse
        or a bad argument fails now, before any run trains."""
        if isinstance(item, str):
            spec = cls(item, item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            kwargs = {k: v for k, v in item.items() if k not in ("name", "label")}
            spec = cls(str(item.get("label", item["name"])), item["name"], kwargs)
        else:
            raise ValueError(f"a loss must be a registry name, a formula, or a mapping with 'name'; "
                             f"got {item!r}.")
        spec.build()
        return spec

    def build(self):
        return losses_module.get(self.name, **self.kwargs)

    def kernel_l2(self):
        return losses_module.kernel_l2(self.name, **self.kwargs)

    def identity(self):
        """What decides the loss's values: its full config (defaults included) and kernel L2."""
        config = {k: v for k, v in self.build().get_config().items() if k != "name"}
        return {"name": self.name, "config": config, "kernel_l2": self.kernel_l2()}


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str
    loss: LossSpec
    run: int
    seed: int
    settings: dict
    weights: str = None

    @property
    def key(self):
        return f"{self.dataset}/{self.model}/{self.loss.label}/{self.run}"

    def identity(self, mixed_precision=False):
        """Every setting that changes the run's result, as plain JSON data (see `run_grid`)."""
        return _plain({"dataset": self.dataset, "model": self.model, "loss": self.loss.identity(),
                       "run": self.run, "seed": self.seed, "weights": self.weights,
                       "settings": self.settings, "mixed_precision": bool(mixed_precision)})

    @property
    def directory(self):
        """The run's directory name: readable, short whatever the loss label (a formula can be
        hundreds of characters), and unique through a hash of the key."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:10]
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.loss.label).strip("_.")[:32] or "loss"
        return f"{self.dataset}__{self.model}__{label}__{self.run}__{digest}"


def _plain(value):
    """`value` as it reads back from JSON (tuples become lists), so identities compare equal."""
    return json.loads(json.dumps(value))


def plan(grid, configs_dir, overrides=None):
    """The list of runs of a grid config, with every name and setting checked up front."""
    overrides = overrides or {}
    grid = {**grid, **{k: v for k, v in overrides.items() if v is not None}}
    config_module.check_grid(grid)
    datasets, model_names = grid["datasets"], grid["models"]
    for name in datasets:
        data_module.info(name)
    weights = grid.get("weights")
    for name in model_names:
        backbone = models_module.info(name).build_backbone  # unknown names fail here
        if weights is not None and backbone is None:
            raise ValueError(f"model {name!r} has no pretrained weights; use weights: null with it "
                             f"(got {weights!r}).")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ValueError(f"weights must be null, 'imagenet' or a weights file; {weights!r} is none of them.")
    loss_specs = [LossSpec.parse(item) for item in grid.get("losses", [])]
    labels = [spec.label for spec in loss_specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"loss labels must be unique in a grid; got {labels}.")
    runs, seed = grid.get("runs", 1), grid.get("seed", 0)
    unknown = set(grid.get("settings", {})) - set(datasets)
    if unknown:
        raise ValueError(f"settings given for datasets not in the grid: {sorted(unknown)}; "
                         f"grid datasets: {datasets}.")
    specs = []
    for dataset in datasets:
        settings = config_module.dataset_settings(dataset, configs_dir,
                                                  grid.get("settings", {}).get(dataset))
        if grid.get("epochs"):
            settings["epochs"] = grid["epochs"]
        settings["limit_train"] = grid.get("limit_train")
        _, first, end = config_module.split_rows(dataset, settings["splits"]["train"])
        if settings["limit_train"] is not None and settings["limit_train"] > end - first:
            raise ValueError(f"limit_train {settings['limit_train']} exceeds the {end - first} images of "
                             f"{dataset}'s training split {settings['splits']['train']!r}.")
        for model in model_names:
            size = settings["image_size"]
            models_module.check_image_size(model, size)
            for spec in loss_specs:
                for run in range(runs):
                    specs.append(RunSpec(dataset, model, spec, run, seed + run, dict(settings),
                                         grid.get("weights")))
    return specs


# runs.jsonl: append-only, fsynced; read by `files.read_json_lines` (a truncated last line is
# skipped with a warning, and removed by the next append).

RECORD_KEYS = ("key", "dataset", "model", "loss", "run", "status", "test_accuracy", "history")


def read_records(path):
    """The records of a grid's runs.jsonl; a line without the keys a record has raises ValueError."""
    return read_json_lines(path, required=RECORD_KEYS)


def append_record(path, record):
    append_json_line(path, record)


def check_one_setting_per_dataset(records, path):
    """Refuse records of one dataset trained with different settings: a table of them would
    compare losses trained differently."""
    seen = {}
    for record in records:
        settings = _plain({k: record.get(k) for k in ("config", "weights", "mixed_precision")})
        first = seen.setdefault(record["dataset"], (record["key"], settings))
        if first[1] != settings:
            raise ValueError(f"{path} would mix settings for dataset {record['dataset']!r}: "
                             f"{first[0]} and {record['key']} differ in "
                             f"{_differences(first[1], settings)}; a table of them would compare "
                             "losses trained differently (use another --out for other settings).")


def _differences(a, b):
    """The settings that differ between mappings `a` and `b` (at most four), with both values."""

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            return [found for key in sorted(set(x) | set(y), key=str)
                    for found in walk(x.get(key), y.get(key), f"{prefix}{key}.")]
        return [] if x == y else [f"{prefix[:-1]} ({json.dumps(x)} vs {json.dumps(y)})"]

    return ", ".join(walk(a, b, "")[:4])


def finished_keys(runs, records, path, mixed_precision=False):
    """Keys of `runs` already in `records`; refuses a directory whose records were trained with
    other settings, for the same run or for the same dataset (the table would mix them)."""
    planned = {run.key: run.identity(mixed_precision) for run in runs}
    for record in records:
        identity = planned.get(record["key"])
        if identity is None:
            continue
        if "identity" not in record:
            raise ValueError(f"{path} holds {record['key']} without the settings it was trained with "
                             "(written by an earlier version); train into another --out.")
        if record["identity"] != identity:
            raise ValueError(f"{path} already holds {record['key']} trained with other settings: "
                             f"{_differences(record['identity'], identity)} (there vs now); train into "
                             "another --out, or use the settings of that directory.")
    planned_records = [{"key": run.key, "dataset": run.dataset, "config": run.settings,
                        "weights": run.weights, "mixed_precision": bool(mixed_precision)} for run in runs]
    check_one_setting_per_dataset(records + planned_records, path)
    return {record["key"] for record in records if record["key"] in planned}


def versions():
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


# Training one run.

def _replica_devices():
    """Every GPU, or else every logical CPU device (several only when split on purpose)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(name):
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = _replica_devices()
        if devices[0].upper().find("GPU") >= 0:
            return tf.distribute.MirroredStrategy(devices)
        # Logical CPU devices: reduce on one device; collective ops there keep instance keys
        # across strategies of one process and clash when a second strategy is made.
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multiworker' needs TF_CONFIG describing the cluster.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()

    raise ValueError(f"unknown strategy {name!r}; accepted: {', '.join(config_module.STRATEGIES)}.")


def _optimizer(settings):
    import keras

    opt = settings["optimizer"]
    if opt["name"] == "sgd":
        return keras.optimizers.SGD(opt["learning_rate"], momentum=opt.get("momentum", 0.0))
    return keras.optimizers.Adam(opt["learning_rate"])


def takes_logits(loss):
    """Whether `loss` expects logits, so that the model ends with a linear output."""
    return bool(loss.get_config().get("from_logits")) or isinstance(loss, losses_module.BiTemperedLogisticLoss)


def schedule_callbacks(settings):
    """ReduceLROnPlateau with the dataset's settings, and a stop on a NaN loss."""
    import keras

    reduce = settings["reduce_lr"]
    return [keras.callbacks.ReduceLROnPlateau(monitor=reduce["monitor"], factor=reduce["factor"],
                                              patience=reduce["patience"], min_lr=reduce["min_lr"]),
            keras.callbacks.TerminateOnNaN()]


class Datasets:
    """Loads each dataset split once per process and builds its pipelines per run."""

    def __init__(self, data_dir=None):
        self.data_dir = data_dir
        self._cache = {}

    def split(self, dataset, spec, limit=None):
        key = (dataset, spec, limit)
        if key not in self._cache:
            source = data_module.load_split(dataset, spec, self.data_dir, limit)
            if isinstance(source, tuple):
                data_module.check_labels(source[1], data_module.info(dataset).classes,
                                         f"{dataset} {spec}")
            self._cache[key] = source
        return self._cache[key]

    def pipelines(self, run):
        dataset, settings = data_module.info(run.dataset), run.settings
        model = models_module.info(run.model)
        common = dict(classes=dataset.classes, image_size=settings["image_size"],
                      channels=model.channels if model.channels == 3 else dataset.channels,
                      preprocess=model.preprocess, batch_size=settings["batch_size"],
                      cache=settings["cache"])
        splits = settings["splits"]
        train = data_module.input_pipeline(
            self.split(run.dataset, splits["train"], settings.get("limit_train")),
            augmentation=data_module.Augmentation(**settings["augmentation"]),
            shuffle_seed=run.seed, **common)
        validation = data_module.input_pipeline(self.split(run.dataset, splits["validation"]), **common)
        test = data_module.input_pipeline(self.split(run.dataset, splits["test"]), **common)
        return train, validation, test


def train_run(run, datasets, run_dir, strategy, mixed_precision=False, jit_compile="auto",
              verbose=2, evaluate_test=True, logs=True):
    """Train and test one run; return its record (status "ok" or "diverged").

    `logs` writes the per-run CSV and TensorBoard logs to `run_dir`.
    """
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(run.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train, validation, test = datasets.pipelines(run)
    loss = run.loss.build()
    logits = takes_logits(loss)
    dataset = data_module.info(run.dataset)
    with strategy.scope():
        model = models_module.build_model(
            run.model, dataset.classes, run.settings["image_size"], channels=dataset.channels,
            weights=run.weights, kernel_l2=run.loss.kernel_l2(),
            output_activation="linear" if logits else "softmax")
        model.compile(optimizer=_optimizer(run.settings), loss=loss, metrics=["accuracy"],
                      jit_compile=jit_compile)
    callbacks = schedule_callbacks(run.settings)
    if logs:
        callbacks += [keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
                      keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False)]
    history = model.fit(train, validation_data=validation, epochs=run.settings["epochs"],
                        callbacks=callbacks, shuffle=False, verbose=verbose).history
    finite = all(math.isfinite(v) for v in history.get("loss", [])) and history.get("loss")
    record = {"key": run.key, "dataset": run.dataset, "model": run.model, "loss": run.loss.label,
              "loss_name": run.loss.name, "loss_config": loss.get_config(), "run": run.run,
              "seed": run.seed, "weights": run.weights, "config": run.settings,
              "epochs_run": len(history.get("loss", [])),
              "history": {k: [float(v) for v in vals] for k, vals in history.items()}}
    if finite and evaluate_test:
        _, accuracy = model.evaluate(test, verbose=0)
        record.update(status="ok", test_accuracy=float(accuracy))
    elif finite:
        record.update(status="ok", test_accuracy=None)
    else:
        record.update(status="diverged", test_accuracy=None)
    record.update(wall_time_s=round(time.time() - started, 2), versions=versions(),
                  mixed_precision=bool(mixed_precision), replicas=strategy.num_replicas_in_sync)
    return record


def run_grid(runs, out_dir, strategy="auto", data_dir=None, mixed_precision=False,
             jit_compile="auto", verbose=2, log=print):
    """Train every run of `runs` not yet in OUT/runs.jsonl; return all records.

    A run counts as finished only when its record has the same identity (`RunSpec.identity`:
    every setting that changes its result); records of other settings in OUT make this refuse
    with a ValueError naming them, so that one directory never holds a table of mixed settings.
    """
    out_dir = output_directory(out_dir)
    path = out_dir / "runs.jsonl"
    done = finished_keys(runs, read_records(path), path, mixed_precision)
    todo = [r for r in runs if r.key not in done]
    log(f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, {len(todo)} to train.")
    if todo:
        strategy = make_strategy(strategy)
        datasets = Datasets(data_dir)
        started = time.time()
        for k, run in enumerate(todo, 1):
            elapsed = time.time() - started
            eta = elapsed / (k - 1) * (len(todo) - k + 1) if k > 1 else float("nan")
            log(f"run {k} of {len(todo)}: {run.key} (seed {run.seed}); elapsed {elapsed / 60:.1f} min, "
                f"ETA {eta / 60:.1f} min")
            record = train_run(run, datasets, out_dir / "runs" / run.directory,
                               strategy, mixed_precision, jit_compile, verbose)
            record.update(identity=run.identity(mixed_precision), run_dir=f"runs/{run.directory}")
            append_record(path, record)
            accuracy = record["test_accuracy"]
            log(f"  {run.key}: {record['status']}, test accuracy "
                f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}, {record['wall_time_s']:.0f} s")
    keys = {r.key for r in runs}
    return [r for r in read_records(path) if r["key"] in keys]
