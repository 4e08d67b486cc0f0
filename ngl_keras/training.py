"""The evaluation protocol: a grid of datasets × models × losses × runs, each run trained,
tested and appended to OUT/runs.jsonl, so that a re-run resumes where it stopped."""

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ngl_keras import config as config_module
from ngl_keras import data as data_module
from ngl_keras.files import append_json_line, atomic_write, output_directory, read_json_lines
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
    dataset: str
    model: str
    loss: LossSpec
    run: int
    seed: int
    settings: config_module.DatasetSettings
    weights: str = None
    data: data_module.DatasetInfo = None             # the dataset, resolved by `plan`
    model_source: models_module.ModelFunction = None  # a model function, for a model not in the registry

    @property
    def dataset_info(self):
        return self.data or data_module.info(self.dataset)

    @property
    def model_info(self):
        return self.model_source or models_module.info(self.model)

    @property
    def key(self):
        return f"{self.dataset}/{self.model}/{self.loss.label}/{self.run}"

    def identity(self, mixed_precision=False):
        """Every setting that changes the run's result, as plain JSON data (see `run_grid`): for a
        tfds dataset read by name also its version, for in-memory arrays a hash of their contents,
        for a model function its name and a hash of its model's config."""
        identity = {"dataset": self.dataset, "model": self.model, "loss": self.loss.identity(),
                    "run": self.run, "seed": self.seed, "weights": self.weights,
                    "settings": self.settings.to_json(), "dtype_policy": dtype_policy(mixed_precision)}
        data = self.dataset_info
        if not data.registered:
            identity["data"] = {"tfds_version": data.version} if data.arrays is None else \
                {"sha256": data.fingerprint}
        if self.model_source is not None:
            identity["model_function"] = self.model_source.identity()
        return _plain(identity)

    @property
    def directory(self):
        """The run's directory name: readable, short whatever the loss label (a formula can be
        hundreds of characters), and unique through a hash of the key."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:10]
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.loss.label).strip("_.")[:32] or "loss"
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset)  # a tfds name may hold '/' and ':'
        return f"{dataset}__{self.model}__{label}__{self.run}__{digest}"


def _plain(value):
    """`value` as it reads back from JSON (tuples become lists), so identities compare equal."""
    return json.loads(json.dumps(value))


def plan(grid, configs_dir, overrides=None, data_dir=None, sources=None):
    """The list of runs of a grid config, with every name and setting checked up front.

    A dataset is one of the paper's, a tfds dataset prepared in `data_dir` (read offline), or one
    of `sources` (a `Sources`: in-memory arrays, model functions)."""
    sources = sources or Sources()
    if not isinstance(grid, config_module.Grid):
        grid = config_module.check_grid(grid, overrides)
    datasets, model_names = grid.datasets, grid.models
    resolved = {name: sources.dataset(name, data_dir) for name in datasets}
    weights = grid.weights
    for name in model_names:
        backbone = sources.model(name).build_backbone  # unknown names fail here
        if weights is not None and backbone is None:
            raise ValueError(f"model {name!r} has no pretrained weights; use weights: null with it "
                             f"(got {weights!r}).")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ValueError(f"weights must be null, 'imagenet' or a weights file; {weights!r} is none of them.")
    loss_specs = [LossSpec.parse(item) for item in grid.losses]
    labels = [spec.label for spec in loss_specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"loss labels must be unique in a grid; got {labels}.")
    for name in model_names:
        logits = [spec.label for spec in loss_specs if takes_logits(spec.build())]
        if isinstance(sources.model(name), models_module.ModelFunction) and logits:
            raise ValueError(f"loss {logits[0]!r} takes logits, and model {name!r} (a model function) ends in "
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
                             f"{dataset}'s training split {settings.splits.train!r}.")
        for model in model_names:
            size = settings.image_size
            source = sources.model(model)
            models_module.check_image_size(source, size)
            function = source if isinstance(source, models_module.ModelFunction) else None
            for spec in loss_specs:
                for run in range(runs):
                    specs.append(RunSpec(dataset, model, spec, run, seed + run, settings,
                                         grid.weights, resolved[dataset], function))
    return specs


# runs.jsonl: append-only, fsynced; read by `files.read_json_lines` (a truncated last line is
# skipped with a warning, and removed by the next append).

RECORD_KEYS = ("key", "dataset", "model", "loss", "run", "status", "test_accuracy", "history")


def read_records(path):
    """The records of a grid's runs.jsonl; a line without the keys a record has raises ValueError."""
    return read_json_lines(path, required=RECORD_KEYS)


def append_record(path, record):
    append_json_line(path, record)


def record_backend(record):
    """The Keras backend a record was trained on (records written before the JAX backend: TensorFlow)."""
    return record.get("backend") or (record.get("versions") or {}).get("backend") or "tensorflow"


def check_one_setting_per_dataset(records, path):
    """Refuse records of one dataset trained with different settings: a table of them would
    compare losses trained differently."""
    seen = {}
    for record in records:
        settings = _plain({**{k: record.get(k) for k in ("config", "weights", "dtype_policy")},
                           "backend": record_backend(record)})
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
    planned_records = [{"key": run.key, "dataset": run.dataset, "config": run.settings.to_json(),
                        "weights": run.weights, "dtype_policy": dtype_policy(mixed_precision),
                        "backend": keras.backend.backend()} for run in runs]
    check_one_setting_per_dataset(records + planned_records, path)
    return {record["key"] for record in records if record["key"] in planned}


def versions():
    """Versions of what a record's numbers depend on: Python, Keras, the backend's library, numpy."""
    backend = keras.backend.backend()
    out = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__,
           "backend": backend}
    if backend in ("tensorflow", "jax", "torch"):
        module = __import__(backend)
        out[backend] = module.__version__
    return out


# Where a run trains: one device, or data parallelism over several.

@dataclass(frozen=True)
class Replication:
    """How a run is spread over devices: `scope()` to build, compile, fit and evaluate the model
    in, and the number of replicas each global batch is split over."""

    name: str
    replicas: int
    scope: object  # () -> context manager


def _replica_devices():
    """Every GPU, or else every logical CPU device (several only when split on purpose)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _tf_strategy(name):
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
    gpus = tf.config.list_logical_devices("GPU")  # auto
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def make_strategy(name):
    """The `Replication` for strategy `name` on the current Keras backend.

    TensorFlow: tf.distribute ("mirrored" over local GPUs or split CPUs, "multiworker" from
    TF_CONFIG, "auto" mirrored when there are several GPUs). JAX: "mirrored", and "auto" with
    several devices, are `keras.distribution.DataParallel` over every local device (each global
    batch split evenly, one model replica per device, gradients all-reduced by XLA).
    """
    if name not in config_module.STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; accepted: {', '.join(config_module.STRATEGIES)}.")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        strategy = _tf_strategy(name)
        return Replication(name, strategy.num_replicas_in_sync, strategy.scope)
    if name == "multiworker":
        raise ValueError(f"strategy 'multiworker' is TensorFlow's (MultiWorkerMirroredStrategy from "
                         f"TF_CONFIG); on the {backend} backend use 'mirrored' or 'auto' on one machine, or "
                         "the TensorFlow backend for several machines.")
    devices = keras.distribution.list_devices() if backend == "jax" else ["cpu"]
    if name == "none" or (name == "auto" and len(devices) == 1):
        return Replication(name, 1, contextlib.nullcontext)
    if backend != "jax":
        if name == "auto":
            return Replication(name, 1, contextlib.nullcontext)
        raise ValueError(f"strategy {name!r} needs the TensorFlow or JAX backend; the {backend} backend "
                         "has no data parallelism in Keras. Use --strategy none.")
    distribution = keras.distribution.DataParallel(devices=devices)
    return Replication(name, len(devices), distribution.scope)


def _optimizer(settings):
    opt = settings.optimizer
    if opt.name == "sgd":
        return keras.optimizers.SGD(opt.learning_rate, momentum=opt.momentum)
    return keras.optimizers.Adam(opt.learning_rate)


def takes_logits(loss):
    """Whether `loss` expects logits, so that the model ends with a linear output."""
    return bool(loss.get_config().get("from_logits")) or isinstance(loss, losses_module.BiTemperedLogisticLoss)


def schedule_callbacks(settings):
    """ReduceLROnPlateau with the dataset's settings (none when `reduce_lr` is null: Table
    B.2.1's SGD datasets), and a stop on a NaN loss."""
    reduce = settings.reduce_lr
    plateau = [] if reduce is None else [keras.callbacks.ReduceLROnPlateau(
        monitor=reduce.monitor, factor=reduce.factor, patience=reduce.patience, min_lr=reduce.min_lr)]
    return plateau + [keras.callbacks.TerminateOnNaN()]


class Datasets:
    """Loads each dataset split once per process and builds its input per run: tf.data pipelines
    on the TensorFlow backend, `data.ArrayBatches` for the model's input layers elsewhere."""

    def __init__(self, data_dir=None):
        self.data_dir = data_dir
        self._cache = {}

    def split(self, dataset, spec, limit=None):
        """Split `spec` of `dataset` (a name or a `data.DatasetInfo`), at most `limit` examples."""
        dataset = data_module.info(dataset, self.data_dir)
        key = (dataset.name, dataset.fingerprint, spec, limit)
        if key not in self._cache:
            source = data_module.load_split(dataset, spec, self.data_dir, limit)
            if isinstance(source, tuple):
                data_module.check_labels(source[1], dataset.classes, f"{dataset.name} {spec}")
            self._cache[key] = source
        return self._cache[key]

    def pipelines(self, run, replicas=1, test=True):
        """(train, validation, test) inputs of `run` (test None unless `test`)."""
        dataset, settings = run.dataset_info, run.settings
        splits = settings.splits
        sources = (self.split(dataset, splits.train, settings.limit_train),
                   self.split(dataset, splits.validation), self.split(dataset, splits.test) if test else None)
        augmentation = settings.augmentation
        if not data_module.uses_tf_data():
            size = settings.image_size if not dataset.fixed_size else None
            common = dict(classes=dataset.classes, batch_size=settings.batch_size, image_size=size,
                          multiple=replicas)
            return tuple(source if source is None else data_module.ArrayBatches(
                source, shuffle_seed=run.seed if k == 0 else None, **common) for k, source in enumerate(sources))
        model = run.model_info
        common = dict(classes=dataset.classes, image_size=settings.image_size,
                      channels=model.channels if model.channels == 3 else dataset.channels,
                      preprocess=model.preprocess, batch_size=settings.batch_size,
                      cache=settings.cache)
        train = data_module.input_pipeline(
            sources[0], augmentation=augmentation if augmentation.active else None, shuffle_seed=run.seed, **common)
        return (train, data_module.input_pipeline(sources[1], **common),
                data_module.input_pipeline(sources[2], **common) if test else None)


def build_model(run, loss, train_input):
    """The run's model; on backends without tf.data it starts with the input layers (resize,
    channels, augmentation, preprocessing) that the tf.data pipeline does on TensorFlow."""
    from ngl_keras import layers

    dataset, settings = run.dataset_info, run.settings
    augmentation = settings.augmentation
    if run.model_source is not None:  # the examples as given, augmented (when on) in the model
        model = run.model_source.build(dataset.classes, kernel_l2=run.loss.kernel_l2())
        if data_module.uses_tf_data() or not augmentation.active:
            return model
        inputs = keras.Input(train_input.image_shape)
        x = layers.RandomAffine(augmentation.horizontal_flip, augmentation.width_shift, augmentation.height_shift,
                                augmentation.zoom, seed=run.seed, dtype="float32")(inputs)
        return keras.Model(inputs, model(x), name=run.model)
    model = models_module.build_model(
        run.model, dataset.classes, settings.image_size, channels=dataset.channels,
        weights=run.weights, kernel_l2=run.loss.kernel_l2(),
        output_activation="linear" if takes_logits(loss) else "softmax")
    if data_module.uses_tf_data():
        return model
    inputs = keras.Input(train_input.image_shape)
    x = layers.input_layers(inputs, image_size=settings.image_size, channels=model.input_shape[-1],
                            model=run.model, seed=run.seed, augmentation=augmentation if augmentation.active else None)
    return keras.Model(inputs, model(x), name=run.model)


# Resuming inside a run: keras.callbacks.BackupAndRestore keeps the weights, the optimizer and
# the epoch; EpochLog keeps what it does not: every finished epoch's logs (the history) and
# ReduceLROnPlateau's counters.

BACKUP_DIR = "backup"
EPOCH_LOG = "epochs.jsonl"
_PLATEAU_STATE = ("wait", "best", "cooldown_counter")


class EpochLog(keras.callbacks.Callback):
    """Appends each finished epoch's logs and ReduceLROnPlateau state to `run_dir/epochs.jsonl`
    (fsynced) and, when a run resumes, gives the plateau its counters back and the input its
    epoch (so that the shuffling continues as if the run had not stopped)."""

    def __init__(self, path, plateau, previous, train_input):
        super().__init__()
        self.path, self.plateau, self.previous, self.train_input = path, plateau, previous, train_input

    def on_train_begin(self, logs=None):  # after the plateau's own reset
        if self.previous and self.plateau is not None:
            for name in _PLATEAU_STATE:
                setattr(self.plateau, name, self.previous[-1]["plateau"][name])

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        if hasattr(self.train_input, "set_epoch"):
            self.train_input.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        state = {name: float(getattr(self.plateau, name)) for name in _PLATEAU_STATE} \
            if self.plateau is not None else None
        append_json_line(self.path, {"epoch": epoch, "logs": {k: float(v) for k, v in (logs or {}).items()},
                                     "plateau": state, "seconds": round(time.perf_counter() - self.started, 3)})


class SynchronousBatches(keras.callbacks.Callback):
    """Keeps Keras from reading each batch's logs in a thread pool while the next batch runs, which
    it does when no callback looks at batches. With DataParallel over XLA's CPU devices those reads
    and the next step's all-reduce were seen to deadlock (threads waiting in `ArrayImpl._value`,
    the main thread in the next step, for good). Defining the batch hooks turns the pool off."""

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass


# Progress: Keras's progress bar when stdout is a terminal; else (a log file, a job's output) a line
# every PROGRESS_EVERY_S seconds inside an epoch and one per finished epoch, each epoch line with the
# grid's time left.

PROGRESS_EVERY_S = 10.0


class GridClock:
    """The time a grid has left, from the epochs finished so far in this process: an estimate
    from the first finished epoch on (the first epoch includes tracing: an overestimate)."""

    def __init__(self, epochs, clock=time.monotonic):
        self.epochs, self.clock = epochs, clock
        self.finished = 0
        self.started = clock()

    def epoch_finished(self):
        self.finished += 1

    def elapsed(self):
        return self.clock() - self.started

    def eta(self):
        """'ETA 12.3 min', or 'ETA after the first epoch' before one has finished."""
        if not self.finished:
            return "ETA after the first epoch"
        left = self.elapsed() / self.finished * max(self.epochs - self.finished, 0)
        return f"ETA {left / 60:.1f} min"


class Progress(keras.callbacks.Callback):
    """Progress lines for output that is not a terminal: inside an epoch, at most one line every
    `every` seconds (step/steps, images/s, elapsed; the same during validation), and one line per
    finished epoch with its metrics and the grid's ETA (`grid`, a GridClock). With `periodic`
    False (Keras's progress bar shows the steps and metrics) only the ETA line is written.
    Hooks are on batch *begin*: Keras keeps reading batch logs asynchronously."""

    def __init__(self, batch_size, grid=None, every=PROGRESS_EVERY_S, periodic=True, log=print,
                 clock=time.monotonic):
        super().__init__()
        self.batch_size, self.grid, self.every, self.periodic = batch_size, grid, every, periodic
        self.log, self.clock = log, clock

    def _epoch(self):
        return f"epoch {self.epoch + 1}/{self.params.get('epochs', '?')}"

    def on_epoch_begin(self, epoch, logs=None):
        self._flush()
        self.epoch = epoch
        self.started = self.last = self.clock()

    def on_train_end(self, logs=None):
        self._flush()

    def _flush(self):
        """The ETA line held back until Keras's progress bar has finished the epoch's line."""
        if getattr(self, "pending", None):
            self.log(self.pending)
        self.pending = None

    def on_test_begin(self, logs=None):
        self.validation_started = self.clock()

    def on_train_batch_begin(self, batch, logs=None):
        self._tick(batch, self.started, f"step {batch}/{self.params.get('steps') or '?'}")

    def on_test_batch_begin(self, batch, logs=None):
        if hasattr(self, "epoch"):  # validation inside fit
            self._tick(batch, self.validation_started, f"validation step {batch}")

    def _tick(self, done, since, where):
        now = self.clock()
        if not self.periodic or now - self.last < self.every:
            return
        self.last = now
        rate = done * self.batch_size / (now - since) if now > since else 0.0
        self.log(f"  {self._epoch()}: {where}, {rate:.0f} images/s, {now - self.started:.0f} s")

    def on_epoch_end(self, epoch, logs=None):
        if self.grid is not None:
            self.grid.epoch_finished()
        eta = f"; {self.grid.eta()}" if self.grid is not None else ""
        if not self.periodic:  # Keras's bar writes its epoch line after every other callback
            self.pending = f"  {self._epoch()} done{eta}"
            return
        metrics = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
        self.log(f"  {self._epoch()}: {self.clock() - self.started:.0f} s, {metrics}{eta}")


def _backup_fault(backup):
    """Why the BackupAndRestore directory `backup` cannot be resumed, or None when it can. Keras
    writes the weights, then the metadata, in place and not atomically (keras 3.15.1): a kill during
    either write leaves a cut or empty file, and Keras would then fail the resume every time."""
    import h5py  # Keras's own weights format; opening the file reads only its header

    metadata, weights = backup / "training_metadata.json", backup / "latest.weights.h5"
    try:
        epoch = json.loads(metadata.read_text())["epoch"]
    except FileNotFoundError:
        return f"{metadata.name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{metadata.name} is empty or cut ({type(error).__name__})"
    if not isinstance(epoch, int) or epoch < 0:
        return f"{metadata.name} holds epoch {epoch!r}"
    try:
        with h5py.File(weights, "r"):
            pass
    except FileNotFoundError:
        return f"{weights.name} is missing"
    except OSError as error:
        return f"{weights.name} cannot be read ({error})"
    return None


def _set_aside(backup):
    """Rename a backup that cannot be resumed to backup.unreadable (.2, .3, ...), kept to be looked at."""
    aside, k = backup.with_name(backup.name + ".unreadable"), 1
    while aside.exists():
        k += 1
        aside = backup.with_name(f"{backup.name}.unreadable.{k}")
    backup.rename(aside)
    return aside


def _finished_epochs(run_dir):
    """The epoch a run in `run_dir` resumes from (None: nothing to resume), and the EpochLog
    lines before it; lines past the backup (a kill between the two writes) are cut. A backup
    that cannot be resumed (`_backup_fault`) is set aside with a warning, and the run starts again."""
    import warnings

    backup, log = run_dir / BACKUP_DIR, run_dir / EPOCH_LOG
    fault = _backup_fault(backup) if backup.exists() else None
    if fault is not None:
        aside = _set_aside(backup)
        warnings.warn(f"{run_dir}: its backup cannot be resumed ({fault}: a kill while Keras wrote it); "
                      f"moved to {aside.name}, the run starts again from epoch 0.", stacklevel=2)
    if not backup.exists():
        log.unlink(missing_ok=True)
        return None, []
    epoch = int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    lines = [line for line in read_json_lines(log) if line["epoch"] < epoch]
    if len(lines) != epoch:  # the log must cover every backed-up epoch; else start over
        shutil.rmtree(backup)
        log.unlink(missing_ok=True)
        return None, []
    atomic_write(log, "".join(json.dumps(line) + "\n" for line in lines))
    return epoch, lines


def discard_backup(run_dir):
    """Remove a run's backup once its record is written."""
    shutil.rmtree(Path(run_dir) / BACKUP_DIR, ignore_errors=True)
    (Path(run_dir) / EPOCH_LOG).unlink(missing_ok=True)


def train_run(run, datasets, run_dir, strategy, mixed_precision=False, jit_compile="auto",
              verbose=2, evaluate_test=True, logs=True, resume=False, progress=(), log=None):
    """Train and test one run; return its record (status "ok" or "diverged").

    `strategy` is a `Replication` (`make_strategy`). `mixed_precision` is False, True
    (mixed_float16) or a Keras dtype policy name. `logs` writes the per-run CSV (and, on
    TensorFlow, TensorBoard) logs to `run_dir`. `resume` backs the run up in `run_dir` after
    every epoch and continues a killed run from its last finished epoch; the caller removes the
    backup (`discard_backup`) once the record is safe. `progress`: more callbacks (`Progress`);
    `log`, when given, is told before training that the run resumes.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(run.seed)
    policy = dtype_policy(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    resumed_from, previous = _finished_epochs(run_dir) if resume else (None, [])
    if resumed_from is not None and log is not None:
        log(f"  resuming from epoch {resumed_from} (a backup of an interrupted run)")
    loss = run.loss.build()
    train, validation, test = datasets.pipelines(run, strategy.replicas, test=evaluate_test)
    callbacks = schedule_callbacks(run.settings)
    plateau = next((c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
    if resume:
        callbacks += [EpochLog(run_dir / EPOCH_LOG, plateau, previous, train),
                      keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR), delete_checkpoint=False)]
    if logs and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False))
    synchronous = [SynchronousBatches()] if keras.backend.backend() != "tensorflow" and strategy.replicas > 1 else []
    callbacks += synchronous + list(progress)
    with strategy.scope():
        model = build_model(run, loss, train)
        model.compile(optimizer=_optimizer(run.settings), loss=loss, metrics=["accuracy"],
                      jit_compile=jit_compile)
        fitted = model.fit(train, validation_data=validation, epochs=run.settings.epochs,
                           callbacks=callbacks, shuffle=False, verbose=verbose).history
        if resume:  # the epoch log holds the whole run, the epochs before a resume included
            epochs = read_json_lines(run_dir / EPOCH_LOG)
            history, seconds = _history([line["logs"] for line in epochs]), [line["seconds"] for line in epochs]
        else:
            history, seconds = _history([dict(zip(fitted, values)) for values in zip(*fitted.values())]), None
        finite = bool(history.get("loss")) and all(math.isfinite(v) for v in history["loss"])
        accuracy = float(model.evaluate(test, verbose=0, callbacks=synchronous)[1]) \
            if finite and evaluate_test else None
    if logs:
        _write_history_csv(run_dir / "history.csv", history)
    record = {"key": run.key, "dataset": run.dataset, "model": run.model, "loss": run.loss.label,
              "loss_name": run.loss.name, "loss_config": loss.get_config(), "run": run.run,
              "seed": run.seed, "weights": run.weights, "config": run.settings.to_json(),
              "epochs_run": len(history.get("loss", [])), "history": history,
              "status": "ok" if finite else "diverged", "test_accuracy": accuracy,
              "resumed_from_epoch": resumed_from, "epoch_seconds": seconds}
    record.update(wall_time_s=round(time.time() - started, 2), versions=versions(),
                  backend=keras.backend.backend(), mixed_precision=policy != "float32", dtype_policy=policy,
                  strategy=strategy.name, replicas=strategy.replicas,
                  input="tf.data" if data_module.uses_tf_data() else "ArrayBatches")
    return record


def check_inputs(runs, datasets, splits=("train", "validation", "test")):
    """Load one example of each of `splits` of every dataset the runs read, and build each model
    with its pretrained weights once: a dataset that is not prepared offline, or an absent weights
    file, is a one-line ValueError before anything trains."""
    seen = set()
    for run in runs:
        for split in splits:
            key = (run.dataset, getattr(run.settings.splits, split))
            if key not in seen:
                seen.add(key)
                data_module.load_split(run.dataset_info, key[1], data_dir=datasets.data_dir, limit=1)
        if run.weights is not None and (run.model, run.weights) not in seen:
            seen.add((run.model, run.weights))
            try:
                models_module.build_model(run.model, 2, run.settings.image_size, weights=run.weights)
            finally:
                keras.backend.clear_session()


def dtype_policy(mixed_precision):
    """The Keras dtype policy for a `mixed_precision` setting: False, True (mixed_float16) or a name."""
    if mixed_precision in (False, None):
        return "float32"
    if mixed_precision is True:
        return "mixed_float16"
    if mixed_precision not in DTYPE_POLICIES:
        raise ValueError(f"mixed_precision must be true, false or one of {', '.join(DTYPE_POLICIES)}; "
                         f"got {mixed_precision!r}.")
    return mixed_precision


DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def _history(epochs):
    """{metric: [value per epoch]} from one logs mapping per epoch (NaN where an epoch lacks it)."""
    keys = list(dict.fromkeys(k for logs in epochs for k in logs))
    return {k: [float(logs.get(k, float("nan"))) for logs in epochs] for k in keys}


def _write_history_csv(path, history):
    keys = list(history)
    rows = ["epoch," + ",".join(keys)]
    for epoch in range(len(history.get("loss", []))):
        rows.append(f"{epoch}," + ",".join(repr(history[k][epoch]) if epoch < len(history[k]) else ""
                                            for k in keys))
    atomic_write(path, "\n".join(rows) + "\n")


def run_grid(runs, out_dir, strategy="auto", data_dir=None, mixed_precision=False,
             jit_compile="auto", verbose=2, log=print):
    """Train every run of `runs` not yet in OUT/runs.jsonl; return all records.

    Every dataset split and pretrained weights file the runs need is checked first
    (`check_inputs`). `verbose` 0: one line per run; else also progress (`Progress`; Keras's
    progress bar when stdout is a terminal).

    A run counts as finished only when its record has the same identity (`RunSpec.identity`:
    every setting that changes its result); records of other settings in OUT make this refuse
    with a ValueError naming them, so that one directory never holds a table of mixed settings.
    """
    untested = sorted({run.dataset for run in runs if run.settings.splits.test is None})
    if untested:
        raise ValueError(f"a grid's runs are tested: give a test split for {', '.join(untested)} (splits: test).")
    out_dir = output_directory(out_dir)
    path = out_dir / "runs.jsonl"
    done = finished_keys(runs, read_records(path), path, mixed_precision)
    todo = [r for r in runs if r.key not in done]
    datasets = Datasets(data_dir)
    check_inputs(todo, datasets)  # a missing dataset or weights file fails before the grid starts
    log(f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, {len(todo)} to train.")
    if todo:
        strategy = make_strategy(strategy)
        grid = GridClock(sum(run.settings.epochs for run in todo))
        interactive = sys.stdout.isatty()
        progress = [Progress(0, grid, periodic=not interactive, log=log)] if verbose else []
        for k, run in enumerate(todo, 1):
            log(f"run {k} of {len(todo)}: {run.key} (seed {run.seed}); elapsed {grid.elapsed() / 60:.1f} min, "
                f"{grid.eta()}")
            for callback in progress:
                callback.batch_size = run.settings.batch_size
            run_dir = out_dir / "runs" / run.directory
            record = train_run(run, datasets, run_dir, strategy, mixed_precision, jit_compile,
                               verbose=1 if verbose and interactive else 0, resume=True, progress=progress,
                               log=log)
            record.update(identity=run.identity(mixed_precision), run_dir=f"runs/{run.directory}")
            append_record(path, record)
            discard_backup(run_dir)
            accuracy = record["test_accuracy"]
            log(f"  {run.key}: {record['status']}, test accuracy "
                f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}, {record['wall_time_s']:.0f} s")
    keys = {r.key for r in runs}
    return [r for r in read_records(path) if r["key"] in keys]
