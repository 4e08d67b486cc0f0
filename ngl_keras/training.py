"""The evaluation protocol: a grid of datasets × models × losses × runs, each run trained,
tested and appended to OUT/runs.jsonl, so that a re-run resumes where it stopped."""

import json
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ngl_keras import config as config_module
from ngl_keras import data as data_module
from ngl_keras.files import append_json_line
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
        if isinstance(item, str):
            losses_module.entry(item)  # unknown names fail here, listing the known ones
            return cls(item, item)
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            kwargs = {k: v for k, v in item.items() if k not in ("name", "label")}
            spec = cls(str(item.get("label", item["name"])), item["name"], kwargs)
            losses_module.get(spec.name, **spec.kwargs)  # bad arguments fail here
            return spec
        raise ValueError(f"a loss must be a registry name, a formula, or a mapping with 'name'; "
                         f"got {item!r}.")

    def build(self):
        return losses_module.get(self.name, **self.kwargs)

    def kernel_l2(self):
        return losses_module.kernel_l2(self.name, **self.kwargs)


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


def plan(grid, configs_dir, overrides=None):
    """The list of runs of a grid config, with every name and setting checked up front."""
    overrides = overrides or {}
    grid = {**grid, **{k: v for k, v in overrides.items() if v is not None}}
    datasets, model_names = grid.get("datasets", []), grid.get("models", [])
    for name in datasets:
        data_module.info(name)
    for name in model_names:
        models_module.info(name)
    loss_specs = [LossSpec.parse(item) for item in grid.get("losses", [])]
    labels = [spec.label for spec in loss_specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"loss labels must be unique in a grid; got {labels}.")
    runs, seed = grid.get("runs", 1), grid.get("seed", 0)
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1; got {runs!r}.")
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
        for model in model_names:
            size = settings["image_size"]
            models_module.check_image_size(model, size)
            for spec in loss_specs:
                for run in range(runs):
                    specs.append(RunSpec(dataset, model, spec, run, seed + run, dict(settings),
                                         grid.get("weights")))
    return specs


# runs.jsonl: append-only, fsynced, a truncated last line dropped with a warning.

def read_records(path):
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            if not last:
                raise ValueError(f"{path}: line {number} is not valid JSON; the file is corrupt "
                                 "beyond a truncated last line.") from None
            warnings.warn(f"{path}: dropping a truncated last line (a crash while writing).")
            good = text[: text.rfind(line)]
            with open(path, "w") as handle:  # rewrite without it so that appends stay valid
                handle.write(good)
                handle.flush()
                os.fsync(handle.fileno())
    return records


def append_record(path, record):
    append_json_line(path, record)


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
    """ReduceLROnPlateau with the dataset's settings (none when `reduce_lr` is null: Table
    B.2.1's SGD datasets), and a stop on a NaN loss."""
    import keras

    reduce = settings["reduce_lr"]
    plateau = [] if reduce is None else [keras.callbacks.ReduceLROnPlateau(
        monitor=reduce["monitor"], factor=reduce["factor"], patience=reduce["patience"],
        min_lr=reduce["min_lr"])]
    return plateau + [keras.callbacks.TerminateOnNaN()]


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
    """Train every run of `runs` not yet in OUT/runs.jsonl; return all records."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "runs.jsonl"
    done = {r["key"] for r in read_records(path)}
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
            record = train_run(run, datasets, out_dir / "runs" / run.key.replace("/", "__"),
                               strategy, mixed_precision, jit_compile, verbose)
            append_record(path, record)
            accuracy = record["test_accuracy"]
            log(f"  {run.key}: {record['status']}, test accuracy "
                f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}, {record['wall_time_s']:.0f} s")
    keys = {r.key for r in runs}
    return [r for r in read_records(path) if r["key"] in keys]
