"""A grid's runs over a chief and workers (`grid_workers`, `gp.oracle.GridOracle`): the same records
as one process, one runs.jsonl written by the chief alone, a lost worker's run trained again by
another, and a worker of another grid or without the chief's address refused in one line."""

import json
import os
import re
import signal
import threading
import time

import pytest
import yaml
from keras_tuner.engine import trial as trial_module

from ngl_keras import config, grid_workers, records, training
from ngl_keras.gp import oracle
from ngl_keras.grid import plan
from tests.gp.test_oracle import Clock
from tests.processes import free_port, ongoing_trials, oracle_env, start, stop_all, wait_all
from tests.paths import CONFIGS

# Six tiny runs: 3 losses x 2 seeds, 1 epoch of 256 Fashion-MNIST images (a few seconds each).
GRID = {"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": ["ce", "ngl", "focal"], "runs": 2,
        "seed": 3, "epochs": 1, "jit_compile": False,
        "settings": {"fashion_mnist": {"image_size": 28, "batch_size": 64,
                                       "splits": {"train": "train[:256]", "validation": "train[-128:]",
                                                  "test": "test[:128]"}}}}
TIMINGS = ("wall_time_s", "epoch_seconds", "worker")  # what may differ between a worker's record and one process's


def _config(tmp_path, **changes):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return path


# The oracle on its own (a fake clock, no network).

def _oracle(tmp_path, clock, logs, stored, keys=("a", "b", "c")):
    def store(key, record):
        if record.get("bad"):
            raise OSError(28, "No space left on device")
        stored.append((key, record))

    grid = oracle.GridOracle(keys, store, grid_id="0123", worker_timeout=10.0, log=logs.append, clock=clock)
    grid._set_project_dir(str(tmp_path), "tuner")
    return grid


def _finish(grid, trial, record):
    sent = trial_module.Trial(trial.hyperparameters.copy(), trial_id=trial.trial_id,
                              status=trial_module.TrialStatus.COMPLETED)
    sent.hyperparameters.Fixed(oracle.RECORD, json.dumps(record))
    grid.update_trial(trial.trial_id, {oracle.TRAINED: 1.0})
    grid.end_trial(sent)


def _run(trial):
    return trial.hyperparameters.values["run"]


def test_a_lost_workers_run_goes_first_to_another_and_is_stored_once(tmp_path):
    clock, logs, stored = Clock(), [], []
    grid = _oracle(tmp_path, clock, logs, stored)
    first, second = grid.create_trial("worker0"), grid.create_trial("worker1")
    assert (_run(first), _run(second)) == ("a", "b")
    clock.now = 6.0
    grid.get_trial(first.trial_id)  # worker0's heartbeat
    clock.now = 11.0
    grid.release_lost_workers()
    assert logs == ["worker1: silent for 11 s while training run b; it goes back to the queue."]
    assert grid.queue == ["b", "c"] and set(grid.ongoing_trials) == {"worker0"}

    _finish(grid, first, {"key": "a"})
    again = grid.create_trial("worker0")
    assert _run(again) == "b" and again.trial_id != second.trial_id
    _finish(grid, second, {"key": "b", "by": "worker1"})  # the lost worker finishes after all: stored
    _finish(grid, again, {"key": "b", "by": "worker0"})   # ... and the second record of b is not
    assert stored == [("a", {"key": "a"}), ("b", {"key": "b", "by": "worker1"})]
    # The record stays in runs.jsonl only, not in keras-tuner's state of the trial.
    saved = json.loads((tmp_path / "tuner" / f"trial_{again.trial_id}" / "trial.json").read_text())
    assert oracle.RECORD not in saved["hyperparameters"]["values"]

    last = grid.create_trial("worker0")
    assert _run(last) == "c" and grid.create_trial("worker2").status == trial_module.TrialStatus.IDLE
    _finish(grid, last, {"key": "c"})
    assert not grid.search_over()  # worker0 and worker2 are owed their answer
    assert grid.create_trial("worker0").status == trial_module.TrialStatus.STOPPED
    assert grid.create_trial("worker2").status == trial_module.TrialStatus.STOPPED
    assert grid.search_over() and [key for key, _ in stored] == ["a", "b", "c"]


def test_a_record_the_chief_cannot_store_stops_the_grid_and_the_oracle_still_answers(tmp_path):
    clock, logs, stored = Clock(), [], []
    grid = _oracle(tmp_path, clock, logs, stored)
    first = grid.create_trial("worker0")
    with pytest.raises(OSError, match="No space left"):
        _finish(grid, first, {"key": "a", "bad": True})
    assert grid.fatal == "the record of run a could not be stored: [Errno 28] No space left on device"
    # The worker heard of the error (and keeps its backup); the oracle's lock is free; nothing more is
    # served; the chief waits for worker0, which stops on the error, until it is lost.
    assert grid.create_trial("worker1").status == trial_module.TrialStatus.STOPPED
    assert not grid.search_over()
    clock.now = 11.0
    grid.release_lost_workers()
    assert grid.search_over() and stored == [] and grid.queue == ["a", "b", "c"]


def test_a_restarted_chief_serves_the_runs_it_is_given_and_forgets_the_killed_chiefs_trials(tmp_path):
    clock, stored = Clock(), []
    killed = _oracle(tmp_path, clock, [], stored)
    first = killed.create_trial("worker0")
    _finish(killed, first, {"key": "a"})
    killed.create_trial("worker0")  # b in flight when the chief is killed
    restarted = _oracle(tmp_path, clock, [], stored, keys=("b", "c"))  # a is in runs.jsonl
    restarted.reload()
    assert restarted.ongoing_trials == {} and restarted.tuner_ids == set()
    trial = restarted.create_trial("worker1")
    assert _run(trial) == "b" and trial.trial_id not in killed.trials  # a new trial, not one of the killed chief's
    assert restarted.get_space().values == {oracle.SEARCH_ID: "0123"}


# Bad input.

def test_a_worker_without_the_chiefs_address_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    runs = plan(config.grid(_config(tmp_path)), CONFIGS)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker0")
    with pytest.raises(ValueError, match="^KERASTUNER_TUNER_ID=worker0 is set but KERASTUNER_ORACLE_IP is not: "
                                         "set KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT to the chief's"):
        training.run_grid(runs, tmp_path / "out", log=lambda *a: None)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")  # keras-tuner's default id: one process alone
    assert grid_workers.role() == "alone"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker0")
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    with pytest.raises(ValueError, match="^KERASTUNER_ORACLE_IP is set without KERASTUNER_ORACLE_PORT: "):
        training.run_grid(runs, tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.realdata
def test_a_worker_of_another_grid_is_refused_by_the_chief_in_one_line(tmp_path, monkeypatch):
    chief_runs = plan(config.grid(_config(tmp_path)), CONFIGS)
    identities = {run.key: records.identity(run) for run in chief_runs}
    chief = oracle.GridOracle([run.key for run in chief_runs], grid_id=grid_workers.grid_id(identities),
                              log=lambda *a: None)
    chief._set_project_dir(str(tmp_path / "chief"), "tuner")
    port = free_port()
    for name, value in {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port),
                        "KERASTUNER_TUNER_ID": "worker0"}.items():
        monkeypatch.setenv(name, value)
    server = threading.Thread(target=oracle.serve, args=(chief, lambda *a: None, 0.05))
    server.start()
    try:
        other = plan(config.grid(_config(tmp_path, epochs=2)), CONFIGS)  # the worker started with --epochs 2
        theirs = grid_workers.grid_id({run.key: records.identity(run) for run in other})
        with pytest.raises(ValueError) as refused:
            training.run_grid(other, tmp_path / "out", strategy="none", log=lambda *a: None)
    finally:
        chief.fatal = "the test is over"  # the chief's loop ends: no worker is owed an answer
        server.join(timeout=10)
    assert str(refused.value) == (f"the chief at 127.0.0.1:{port} runs a different grid (settings hash "
                                  f"{grid_workers.grid_id(identities)}, this worker's {theirs}); start the worker "
                                  "with the chief's config and options.")
    assert not server.is_alive() and not (tmp_path / "out" / "runs.jsonl").exists()


# A chief and two worker processes on 127.0.0.1.

def _start(config_path, out, env, tuner_id):
    return start("train_small.py", ["--config", str(config_path), "--out", str(out), "--strategy", "none", "--quiet",
                                    "--worker-timeout", "8"], env, tuner_id)


def _records(path):
    return {r["key"]: r for r in records.read_records(path)}


@pytest.mark.slow
@pytest.mark.realdata
def test_a_chief_and_two_workers_write_the_records_one_process_writes(tmp_path):
    config_path, out = _config(tmp_path), tmp_path / "out"
    env = oracle_env()
    processes = [_start(config_path, out, env, name) for name in ("chief", "worker0", "worker1")]
    try:
        outputs = wait_all(processes, timeout=400)
    finally:
        stop_all(processes)
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-2000:]
    served = _records(out / "runs.jsonl")
    alone = {r["key"]: r for r in training.run_grid(plan(config.grid(config_path), CONFIGS), tmp_path / "alone",
                                                    strategy="none", verbose=0, log=lambda *a: None)}
    assert sorted(served) == sorted(alone) and len(served) == 6
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6  # one line per run, the chief's
    for key, record in served.items():
        assert {k: v for k, v in record.items() if k not in TIMINGS} == \
               {k: v for k, v in alone[key].items() if k not in TIMINGS}, key
    # Each worker trained whole runs and said so; the chief trained none and printed the table.
    for i in range(2):
        mine = sorted(key for key, record in served.items() if record["worker"] == f"worker{i}")
        said = sorted(re.findall(rf"^worker{i}: run (\S+) \(seed \d\)$", outputs[i + 1], re.M))
        assert mine and said == mine
    assert "| ngl |" in outputs[0] and not re.search(r"^worker\d: run ", outputs[0], re.M)
    assert not list(out.glob("runs/*/backup"))  # each backup removed once the chief had the record


@pytest.mark.slow
@pytest.mark.realdata
def test_a_worker_killed_mid_run_loses_nothing_and_the_grid_finishes(tmp_path):
    config_path, out = _config(tmp_path), tmp_path / "out"
    env = oracle_env()
    processes = [_start(config_path, out, env, name) for name in ("chief", "worker0", "worker1")]
    chief, worker0, worker1 = processes
    try:
        deadline, ongoing = time.time() + 300, {}
        while "worker1" not in ongoing and time.time() < deadline:
            time.sleep(0.05)
            ongoing = ongoing_trials(out)
        lost = json.loads((out / "tuner" / f"trial_{ongoing['worker1']}" / "trial.json").read_text())
        lost_run = lost["hyperparameters"]["values"]["run"]
        os.killpg(worker1.pid, signal.SIGKILL)  # mid-run: a run takes seconds
        worker1.wait()
        assert worker0.wait(timeout=300) == 0
        chief_output = chief.communicate(timeout=120)[0]
        assert chief.returncode == 0, chief_output[-2000:]
    finally:
        stop_all(processes)
    assert re.search(rf"^worker1: silent for \d+ s while training run {re.escape(lost_run)}; it goes back to the "
                     "queue.$", chief_output, re.M), chief_output[-2000:]
    lines = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == sorted(run.key for run in plan(config.grid(config_path), CONFIGS))
    assert [r["worker"] for r in lines if r["key"] == lost_run] == ["worker0"]
    assert all(r["status"] == "ok" for r in lines)
