"""A grid's runs over a chief and workers: the chief holds the runs not yet in OUT/runs.jsonl and
alone appends their records, as one process does; each worker trains whole runs, one at a time,
with `training.train_grid_run` (the one training path) and sends each record to the chief.

The same command on every machine, with the variables the search uses (`gp.oracle`):
KERASTUNER_TUNER_ID (chief, worker0, worker1, ...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT
(the chief's address). The chief trains nothing. Over the network travel only the runs' keys (to
the workers) and their records (to the chief); every machine needs the code, the config and the
data, nothing else. A worker keeps a run's in-run resume state in OUT/runs/<run>/ on its own
filesystem: when OUT is shared (NFS, a cluster's file system), a run whose worker is lost resumes
on the worker that takes it over from the last epoch the lost one finished; otherwise it starts
again there. A chief killed and started again serves the runs not in runs.jsonl."""

import hashlib
import json
import os
from pathlib import Path

import keras

from ngl_keras import data as data_module
from ngl_keras import records, resume, training
from ngl_keras.distribution import make_strategy
from ngl_keras.files import output_directory

TUNER_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


class GridStopped(Exception):
    """The grid cannot go on here (the reason is the message): no chief answers, or a worker's
    error stopped it. The finished runs are in runs.jsonl; the same commands resume."""


def role():
    """"alone", "chief" or "worker" (a ValueError for an incomplete set of the variables); keras-tuner
    is loaded only when one of them is set."""
    if not any(name in os.environ for name in TUNER_VARIABLES):
        return "alone"
    from ngl_keras.gp import oracle

    return oracle.role()


def grid_id(identities):
    """A short hash of every planned run's identity and the Keras backend (one runs.jsonl never mixes
    backends): a worker must have the chief's."""
    grid = {"runs": identities, "backend": keras.backend.backend()}
    return hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:16]


def run_grid(runs, out_dir, strategy="auto", data_dir=None, mixed_precision=False, jit_compile="auto",
             log=print, worker_timeout=600.0):
    """`training.run_grid` as the chief (returns the grid's records) or a worker (returns None)."""
    from ngl_keras.gp import oracle
    from ngl_keras.gp.evolution import SearchStopped

    identities = {run.key: records.identity(run, mixed_precision) for run in runs}
    try:
        if role() == "chief":
            return _serve(runs, output_directory(out_dir), identities, mixed_precision, log, worker_timeout)
        _train(runs, Path(out_dir), identities, strategy, data_dir, mixed_precision, jit_compile, log,
               worker_timeout)
    except SearchStopped as stopped:  # the chief's or a worker's: no answer from the other side
        raise GridStopped(str(stopped)) from None
    except oracle.RunError as error:  # the run's own error, as one process raises it
        raise error.__cause__ from None
    return None


def _serve(runs, out_dir, identities, mixed_precision, log, worker_timeout):
    """The chief: hand the runs not yet in runs.jsonl to the workers; append each record sent."""
    from ngl_keras.gp import oracle

    path = out_dir / "runs.jsonl"
    todo = training.runs_to_train(runs, path, mixed_precision, identities)
    log(f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished, {len(todo)} for the workers "
        "to train.")
    by_key = {run.key: run for run in runs}

    def store(key, record):
        if record.get("identity") != identities[key]:  # both checked the grid's hash: a guard, not a path
            raise ValueError(f"the record sent for {key} has other settings: "
                             f"{records.differences(record.get('identity'), identities[key])}")
        records.append_record(path, record)
        log(f"  {training.run_line(by_key[key], record)} ({record.get('worker')})")

    served = oracle.GridOracle([run.key for run in todo], store, grid_id(identities), worker_timeout, log)
    tuner = oracle.GridTuner(served, out_dir, log=log)
    if todo:
        tuner.search()
    if served.fatal:
        raise GridStopped(served.fatal)
    return [r for r in records.read_records(path) if r["key"] in by_key]


def _train(runs, out_dir, identities, strategy, data_dir, mixed_precision, jit_compile, log, worker_timeout):
    """A worker: train the runs the chief hands out until it has none left."""
    from ngl_keras.gp import oracle

    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    datasets = data_module.Datasets(data_dir)
    strategy = make_strategy(strategy)
    training.check_replicas(runs, strategy.replicas)
    training.check_inputs(runs, datasets)  # a missing dataset fails here, before the chief hands a run
    by_key = {run.key: run for run in runs}

    def train(key):
        run = by_key[key]
        log(f"{tuner_id}: run {key} (seed {run.seed})")
        record = training.train_grid_run(run, datasets, out_dir, strategy, identities[key], mixed_precision,
                                         jit_compile, log=log)
        record["worker"] = tuner_id
        log(f"{tuner_id}: {training.run_line(run, record)}")
        return record

    def stored(key):  # the chief has the record: the run's backup is no longer needed
        resume.discard_backup(out_dir / "runs" / by_key[key].directory)

    served = oracle.GridOracle([], None, grid_id(identities), worker_timeout, log)
    oracle.GridTuner(served, out_dir, train, stored, log).search()
