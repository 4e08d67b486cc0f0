"""One run and the grid loop: each run of a grid trained, tested and appended to OUT/runs.jsonl, so
that a re-run resumes where it stopped.

The parts it uses: `grid` (the runs), `records` (the store and a run's identity), `distribution`
(devices), `recipe` (optimizer, schedule, precision), `resume` (inside a run), `progress` (the
display) and `data` (the input, and `data.placement`: where its steps run)."""

import math
import sys
import time
from pathlib import Path

import keras

from ngl_keras import data as data_module
from ngl_keras import models as models_module
from ngl_keras import recipe, records, resume, tasks
from ngl_keras.distribution import SynchronousBatches, make_strategy
from ngl_keras.files import atomic_write, disk_full, is_disk_full, output_directory
from ngl_keras.progress import GridClock, Progress


def train_run(run, datasets, run_dir, strategy, mixed_precision=False, jit_compile="auto",
              verbose=2, evaluate_test=True, logs=True, resume_run=False, progress=(), log=None, identity=None):
    """Train and test one run; return its record (status "ok" or "diverged").

    `datasets` is a `data.Datasets`; `strategy` a `distribution.Replication` (`make_strategy`).
    `mixed_precision` is False, True (mixed_float16) or a Keras dtype policy name. `logs` writes
    the per-run CSV (and, on TensorFlow, TensorBoard) logs to `run_dir`. `resume_run` backs the
    run up in `run_dir` after every epoch and continues a killed run from its last finished epoch;
    the caller removes the backup (`resume.discard_backup`) once the record is safe. `progress`:
    more callbacks (`progress.Progress`); `log`, when given, is told before training that the run
    resumes. `identity`: the run's `records.identity` (computed when not given); a backup of other
    settings is set aside, never resumed (`resume.finished_epochs`).
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(run.seed)
    policy = recipe.dtype_policy(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if resume_run:
        identity = identity or records.identity(run, mixed_precision)
        resumed_from, previous = resume.finished_epochs(run_dir, identity)
    else:
        resumed_from, previous = None, []
    if resumed_from is not None and log is not None:
        log(f"  resuming from epoch {resumed_from} (a backup of an interrupted run)")
    task = tasks.get(run.task)
    loss = run.loss.build()
    train, validation, test = task.inputs(run, datasets, strategy.replicas, test=evaluate_test)
    callbacks = recipe.schedule_callbacks(run.settings)
    plateau = next((c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)), None)
    epoch_log = resume.EpochLog(run_dir / resume.EPOCH_LOG, plateau, previous) if resume_run else None
    callbacks.append(resume.InputEpoch(train))
    if resume_run:
        callbacks += [epoch_log, keras.callbacks.BackupAndRestore(str(run_dir / resume.BACKUP_DIR),
                                                                  delete_checkpoint=False)]
    if logs and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False))
    synchronous = [SynchronousBatches()] if keras.backend.backend() != "tensorflow" and strategy.replicas > 1 else []
    callbacks += synchronous + list(progress)
    with strategy.scope():
        model = task.build_model(run, train)
    model = strategy.prepare(model)  # outside the scope: TensorFlow across workers needs it there
    with strategy.scope():
        poly = {"steps": run.settings.epochs * len(train)} if run.settings.optimizer.poly_power else {}
        per_epoch = steps_per_epoch(run) if getattr(run.settings, "schedule", None) is not None else None
        model.compile(optimizer=recipe.optimizer(run.settings, model, per_epoch, run.settings.batch_size, **poly),
                      loss=loss, metrics=metrics(run.settings) if getattr(run.settings, "metrics", None)
                      else task.fit_metrics(run), jit_compile=jit_compile)
        placement = data_module.placement()
        fitted = model.fit(placement.keras_input(train), validation_data=placement.keras_input(validation),
                           epochs=run.settings.epochs, callbacks=callbacks, shuffle=False, verbose=verbose).history
        # fit's history holds the epochs of this call; a resumed run's earlier ones are in its epoch log
        history = _history([line["logs"] for line in previous] +
                           [dict(zip(fitted, values)) for values in zip(*fitted.values())])
        seconds = [line["seconds"] for line in epoch_log.lines] if resume_run else None
        finite = bool(history.get("loss")) and all(math.isfinite(v) for v in history["loss"])
        # predicted once: the test accuracy (as model.evaluate's), top1/top5 and the task's other metrics from the
        # same outputs
        scores = task.scores(model, test, run, synchronous) if finite and evaluate_test else \
            {"test_accuracy": None}
    if logs:
        _write_history_csv(run_dir / "history.csv", history)
    record = {"key": run.key, "task": task.name, "dataset": run.dataset, "model": run.model, "loss": run.loss.label,
              "loss_name": run.loss.name, "loss_config": loss.get_config(), "run": run.run,
              "seed": run.seed, "weights": run.weights, "config": run.settings.to_json(),
              "epochs_run": len(history.get("loss", [])), "history": history,
              "status": "ok" if finite else "diverged", **scores,
              "resumed_from_epoch": resumed_from, "epoch_seconds": seconds}
    record.update(wall_time_s=round(time.time() - started, 2), versions=records.versions(),
                  backend=keras.backend.backend(), mixed_precision=policy != "float32", dtype_policy=policy,
                  strategy=strategy.name, replicas=strategy.replicas, input=data_module.placement().name)
    if getattr(run.settings, "metrics", None) is not None:  # the ImageNet runs: top-1 and top-5 named as in Table 3
        record.update({name: scores.get(name) for name in run.settings.metrics})
    if run.settings.optimizer.reference_batch is not None:  # the linear scaling, as applied
        record["batch"] = batch_record(run.settings, strategy.replicas)
    return record


def metric_names(settings):
    """The compiled metrics' names: "accuracy", or the settings' `metrics` (top1, top5)."""
    return settings.metrics or ["accuracy"]


def metrics(settings):
    """Keras metrics for `metric_names` (top-k on one-hot or soft targets: their argmax class)."""
    if settings.metrics is None:
        return ["accuracy"]
    return [keras.metrics.TopKCategoricalAccuracy(tasks.top_k(name), name=name) for name in settings.metrics]


def steps_per_epoch(run):
    """Training steps per epoch: the training split's rows (at most `limit_train`) over the batch."""
    from ngl_keras import config as config_module

    _, first, end = config_module.split_rows(run.dataset_info, run.settings.splits.train)
    rows = min(end - first, run.settings.limit_train or end - first)
    return max(1, math.ceil(rows / run.settings.batch_size))


def batch_record(settings, replicas):
    """Global and per-replica batch, and the learning rate scaled to the global batch (Goyal et al. 2017)."""
    opt = settings.optimizer
    return {"global": settings.batch_size, "per_replica": settings.batch_size // replicas, "replicas": replicas,
            "reference": opt.reference_batch, "learning_rate": opt.learning_rate * opt.scale(settings.batch_size)}


def check_replicas(runs, replicas):
    """A one-line ValueError when a run's global batch does not split evenly over the replicas."""
    for run in runs:
        if run.settings.batch_size % replicas:
            raise ValueError(f"{run.dataset}: batch_size {run.settings.batch_size} (the global batch) is not "
                             f"divisible by the {replicas} replicas; use a multiple of {replicas}.")


def check_inputs(runs, datasets, splits=("train", "validation", "test")):
    """Load one example of each of `splits` of every dataset the runs read, and build each model
    with its pretrained weights once: a dataset that is not prepared offline, or an absent weights
    file, is a one-line ValueError before anything trains. A segmentation dataset on disk is read
    whole (every listed file present, every label map of its image's size and in [0, C) ∪ {255}):
    a bad example stops the grid here, not hours into a run."""
    seen = set()
    for run in runs:
        if run.task != "classification":
            _check_segmentation_inputs(run, datasets, splits, seen)
            continue
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


def _check_segmentation_inputs(run, datasets, splits, seen):
    for split in splits:
        key = (run.dataset, getattr(run.settings.splits, split))
        if key not in seen:
            seen.add(key)
            examples = run.dataset_info.split(datasets.data_dir, key[1])
            for index in range(len(examples)):
                examples.read(index)
    if run.weights is not None and (run.model, run.weights) not in seen:
        seen.add((run.model, run.weights))
        try:
            run.model_info.build(2, weights=run.weights)
        finally:
            keras.backend.clear_session()


def _history(epochs):
    """{metric: [value per epoch]} from one logs mapping per epoch (NaN where an epoch lacks it)."""
    keys = list(dict.fromkeys(k for logs in epochs for k in logs))
    return {k: [float(logs.get(k, float("nan"))) for logs in epochs] for k in keys}


def _write_history_csv(path, history):
    """history.csv: one row per epoch, counted from 1 as the console's epoch lines count them."""
    keys = list(history)
    rows = ["epoch," + ",".join(keys)]
    for epoch in range(len(history.get("loss", []))):
        rows.append(f"{epoch + 1}," + ",".join(repr(history[k][epoch]) if epoch < len(history[k]) else ""
                                            for k in keys))
    atomic_write(path, "\n".join(rows) + "\n")


def run_grid(runs, out_dir, strategy="auto", data_dir=None, mixed_precision=False,
             jit_compile="auto", verbose=2, log=print, worker_timeout=600.0):
    """Train every run of `runs` not yet in OUT/runs.jsonl; return all records.

    With KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set, this process is
    the chief or a worker of a grid spread over processes or machines (`grid_workers`): the chief
    trains nothing, appends the records its workers send and returns them all; a worker trains the
    runs the chief hands it and returns None. `worker_timeout`: seconds of a worker's silence after
    which its run goes back to the queue.

    Every dataset split and pretrained weights file the runs need is checked first
    (`check_inputs`). `verbose` 0: one line per run; else also progress (`Progress`; Keras's
    progress bar when stdout is a terminal).

    A run counts as finished only when its record has the same identity (`records.identity`:
    every setting that changes its result); records of other settings in OUT make this refuse
    with a ValueError naming them, so that one directory never holds a table of mixed settings.
    A full disk raises `files.DiskFull` (one line: which file); the records before it are kept and
    the interrupted run resumes from its backup once space is freed.
    """
    untested = sorted({run.dataset for run in runs if run.settings.splits.test is None})
    if untested:
        raise ValueError(f"a grid's runs are tested: give a test split for {', '.join(untested)} (splits: test).")
    from ngl_keras import grid_workers  # it builds on this module

    if grid_workers.role() != "alone":
        return grid_workers.run_grid(runs, out_dir, strategy, data_dir, mixed_precision, jit_compile, log,
                                     worker_timeout)
    out_dir = output_directory(out_dir)
    path = out_dir / "runs.jsonl"
    identities = {run.key: records.identity(run, mixed_precision) for run in runs}
    todo = runs_to_train(runs, path, mixed_precision, identities)
    datasets = data_module.Datasets(data_dir)
    if todo:  # first: JAX's multi-process runtime starts before anything computes
        strategy = make_strategy(strategy)
        check_replicas(todo, strategy.replicas)
    check_inputs(todo, datasets)  # a missing dataset or weights file fails before the grid starts
    log(f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, {len(todo)} to train.")
    if todo:
        grid = GridClock(sum(run.settings.epochs for run in todo))
        interactive = sys.stdout.isatty()
        progress = [Progress(0, grid, periodic=not interactive, log=log)] if verbose else []
        for k, run in enumerate(todo, 1):
            log(f"run {k} of {len(todo)}: {run.key} (seed {run.seed}); elapsed {grid.elapsed() / 60:.1f} min, "
                f"{grid.eta()}")
            for callback in progress:
                callback.batch_size = run.settings.batch_size
            record = train_grid_run(run, datasets, out_dir, strategy, identities[run.key], mixed_precision,
                                    jit_compile, verbose=1 if verbose and interactive else 0, progress=progress,
                                    log=log)
            records.append_record(path, record)
            resume.discard_backup(out_dir / record["run_dir"])
            log(f"  {run_line(run, record)}")
    keys = {r.key for r in runs}
    return [r for r in records.read_records(path) if r["key"] in keys]


def runs_to_train(runs, path, mixed_precision, identities):
    """The runs of `runs` whose records are not yet in `path` (runs.jsonl); refuses a directory of
    other settings (`records.finished_keys`)."""
    done = records.finished_keys(runs, records.read_records(path), path, mixed_precision, identities)
    return [r for r in runs if r.key not in done]


def train_grid_run(run, datasets, out_dir, strategy, identity, mixed_precision=False, jit_compile="auto",
                   verbose=0, progress=(), log=print):
    """Train `run` of a grid in OUT/runs/<its directory>, resuming from the backup there; return its
    record, with its `identity` and directory. The caller appends it to runs.jsonl, then removes
    the backup (`resume.discard_backup`)."""
    run_dir = Path(out_dir) / "runs" / run.directory
    try:
        record = train_run(run, datasets, run_dir, strategy, mixed_precision, jit_compile, verbose=verbose,
                           resume_run=True, progress=progress, log=log, identity=identity)
    except Exception as error:  # TensorFlow's checkpoint and TensorBoard writes raise their own
        if not is_disk_full(error):
            raise
        raise disk_full(error, run_dir) from None
    record.update(identity=identity, run_dir=f"runs/{run.directory}")
    return record


def run_line(run, record):
    """A finished run in one line: its key, status, the task's summary and its time."""
    return f"{run.key}: {record['status']}, {tasks.get(run.task).summary(record)}, {record['wall_time_s']:.0f} s"
