"""The oracle on its own (a fake clock, no network): a lost worker's candidate goes to another,
a worker that comes back is harmless, the chief knows when it may exit; and a candidate's
error stops the search with its state kept."""

import json
import time
from pathlib import Path

import pytest

from ngl_keras.gp import engine, evolution, oracle, search_run, search_settings
from ngl_keras.gp.evolution import CandidateFailed, SearchStopped
from keras_tuner.engine import trial as trial_module

from tests.processes import free_port

PSET = engine.PrimitiveSet(("add", "sub", "mul"), ("p", "y"), required=("p", "y"), constant_probability=0.0)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_oracle(tmp_path, clock, logs, population=4, generations=1, search_id="", per_trial=1):
    evo = evolution.Evolution(PSET, engine.Limits(min_height=1, max_size=30, init_max_height=3),
                              engine.Rates(), population, generations, seed=0)
    gp = oracle.GPOracle(evo, worker_timeout=10.0, log=logs.append, clock=clock, search_id=search_id,
                         population=per_trial)
    gp._set_project_dir(str(tmp_path), "tuner")
    return gp


def finish(gp, trial, value):
    gp.update_trial(trial.trial_id, {"fitness_0": value})
    trial.status = trial_module.TrialStatus.COMPLETED
    gp.end_trial(trial)


def candidate(trial):
    return trial.hyperparameters.values["candidate"]


def test_a_silent_workers_candidate_goes_to_another_and_its_late_result_counts_once(tmp_path):
    clock, logs = Clock(), []
    gp = make_oracle(tmp_path, clock, logs)
    first, second = gp.create_trial("worker0"), gp.create_trial("worker1")
    clock.now = 6.0
    gp.get_trial(first.trial_id)  # worker0's heartbeat
    clock.now = 11.0
    gp.release_lost_workers()
    assert logs == [f"worker1: silent for 11 s while training candidate {candidate(second)}; it goes back to the queue."]
    batch = {c["id"]: c for c in gp.evolution.batch}
    assert batch[candidate(first)]["status"] == "running" and batch[candidate(second)]["status"] == "queued"
    assert "worker1" not in gp.tuner_ids and set(gp.ongoing_trials) == {"worker0"}
    saved = json.loads((tmp_path / "tuner" / "oracle.json").read_text())
    assert saved["ongoing_trials"] == {"worker0": first.trial_id}  # the release is saved at once

    finish(gp, first, 0.5)
    again = gp.create_trial("worker0")
    assert candidate(again) == candidate(second) and again.trial_id != second.trial_id
    # worker1 comes back and reports the lost trial: its result is used once ...
    finish(gp, second, 0.25)
    assert batch[candidate(second)]["fitness"] == [0.25] and batch[candidate(second)]["status"] == "done"
    # ... and worker0's result for the same candidate, arriving later, is ignored.
    finish(gp, again, 0.75)
    assert batch[candidate(second)]["fitness"] == [0.25] and gp.evolution.counters["trained"] == 2
    # The returning worker gets ordinary work.
    third = gp.create_trial("worker1")
    assert candidate(third) not in (candidate(first), candidate(second))
    assert not gp.search_over()


def test_a_trial_carries_up_to_a_population_of_candidates_and_each_gets_its_own_fitness(tmp_path):
    clock, logs = Clock(), []
    gp = make_oracle(tmp_path, clock, logs, population=4, per_trial=3)
    first, second = gp.create_trial("worker0"), gp.create_trial("worker1")
    batch = {c["id"]: c for c in gp.evolution.batch}
    together = oracle.candidates_of(first.hyperparameters.values)
    assert [c for c, _ in together] == [c["id"] for c in gp.evolution.batch if c["status"] == "running"][:3]
    assert [f for _, f in together] == [batch[c]["text"] for c, _ in together]
    assert len(oracle.candidates_of(second.hyperparameters.values)) == 1  # what is left of the generation
    # worker1 is lost: its candidate goes back; worker0's three come back with a fitness or a failure each
    clock.now = 11.0
    gp.get_trial(first.trial_id)
    gp.release_lost_workers()
    lone = candidate(second)
    assert batch[lone]["status"] == "queued" and all(batch[c]["status"] == "running" for c, _ in together)
    gp.update_trial(first.trial_id, {"fitness_0": 0.5, "fitness_0@1": 0.25, "fitness_0@2": evolution.WORST,
                                     "failed_diverged@2": 1.0})
    first.status = trial_module.TrialStatus.COMPLETED
    gp.end_trial(first)
    assert [batch[c]["fitness"] for c, _ in together] == [[0.5], [0.25], [evolution.WORST]]
    assert gp.evolution.failures == {batch[together[2][0]]["fingerprint"]: "diverged"}
    assert candidate(gp.create_trial("worker0")) == lone


def test_a_lost_population_trial_gives_all_its_candidates_back(tmp_path):
    clock, logs = Clock(), []
    gp = make_oracle(tmp_path, clock, logs, population=4, per_trial=3)
    trial = gp.create_trial("worker0")
    clock.now = 11.0
    gp.release_lost_workers()
    ids = [c for c, _ in oracle.candidates_of(trial.hyperparameters.values)]
    assert len(ids) == 3 and all(c["status"] == "queued" for c in gp.evolution.batch)
    assert logs == [f"worker0: silent for 11 s while training candidate {' '.join(ids)}; it goes back to the queue."]


def test_a_population_trial_that_fails_stops_the_search_naming_all_its_candidates(tmp_path):
    gp = make_oracle(tmp_path, Clock(), [], population=4, per_trial=3)
    trial = gp.create_trial("worker0")
    together = oracle.candidates_of(trial.hyperparameters.values)
    trial.status = trial_module.TrialStatus.FAILED
    gp.end_trial(trial)
    assert all(c["status"] == "queued" for c in gp.evolution.batch if c["id"] in dict(together))
    assert gp.fatal.startswith(f"candidate {' '.join(c for c, _ in together)} ({'; '.join(f for _, f in together)}) "
                               "failed in a worker (traceback in ")


def test_a_restarted_chief_hands_the_killed_chiefs_candidates_to_the_first_workers_that_ask(tmp_path):
    """keras-tuner's reload puts the trials in flight back in its retry queue (1.4.8): whichever
    tuner asks first trains them again, under any id, and no tuner of the killed chief is waited for."""
    clock, logs = Clock(), []
    killed = make_oracle(tmp_path, clock, logs)
    in_flight = [killed.create_trial("worker0"), killed.create_trial("worker1")]
    killed.save()
    chief = make_oracle(tmp_path, clock, logs)
    chief.reload()
    assert chief.ongoing_trials == {} and chief.tuner_ids == set()
    given = [chief.create_trial(f"worker{i}") for i in (2, 3, 4)]
    assert sorted(candidate(t) for t in given[:2]) == sorted(candidate(t) for t in in_flight)
    assert candidate(given[2]) not in {candidate(t) for t in in_flight}  # then the queue goes on
    for trial, value in zip(given, (0.3, 0.2, 0.1)):
        finish(chief, trial, value)
    batch = {c["id"]: c for c in chief.evolution.batch}
    assert [batch[candidate(t)]["fitness"] for t in given] == [[0.3], [0.2], [0.1]]
    assert chief.tuner_ids == {"worker2", "worker3", "worker4"} and not chief.ongoing_trials


def test_the_chief_may_exit_once_the_search_is_over_and_every_worker_is_told_or_lost(tmp_path):
    clock, logs = Clock(), []
    gp = make_oracle(tmp_path, clock, logs, population=2, generations=0)
    lost, done = gp.create_trial("worker2"), gp.create_trial("worker0")
    assert gp.create_trial("worker3").status == trial_module.TrialStatus.IDLE  # then never asks again
    clock.now = 5.0
    finish(gp, done, 0.5)
    assert gp.create_trial("worker0").status == trial_module.TrialStatus.IDLE  # waits for worker2
    clock.now = 10.5
    gp.release_lost_workers()
    assert gp.tuner_ids == {"worker0"}
    assert sorted(logs) == ["worker2: silent for 10 s while training candidate g0-0; it goes back to the queue.",
                            "worker3: silent for 10 s; forgotten."]
    retry = gp.create_trial("worker0")
    assert candidate(retry) == candidate(lost)
    finish(gp, retry, 0.25)
    assert not gp.search_over()  # the last generation completes at the next request
    assert gp.create_trial("worker0").status == trial_module.TrialStatus.STOPPED
    assert gp.evolution.finished and gp.search_over()


def test_a_slow_chief_call_does_not_make_the_waiting_workers_lost(tmp_path):
    clock, logs = Clock(), []
    gp = make_oracle(tmp_path, clock, logs)
    gp.create_trial("worker0")
    propose = gp.evolution.propose

    def slow_propose():
        clock.now += 30.0  # screening a whole batch, while worker0's heartbeats queue up
        return propose()

    gp.evolution.propose = slow_propose
    gp.create_trial("worker1")
    clock.now += 5.0
    gp.release_lost_workers()
    assert logs == [] and set(gp.ongoing_trials) == {"worker0", "worker1"}


def search_config(tmp_path, **changes):
    cfg = search_settings.load_config(Path(__file__).resolve().parents[2] / "configs" / "search" / "smoke.yaml",
                                      {"population": 4, "generations": 1, **changes})
    return cfg


def test_an_error_in_a_candidate_stops_the_search_with_the_candidate_and_a_rerun_resumes(tmp_path, monkeypatch):
    cfg = search_config(tmp_path)
    out = tmp_path / "s"
    calls = []

    class Fitness:
        def __init__(self, fail_at):
            self.fail_at = fail_at

        def __call__(self, formula):
            calls.append(formula)
            if len(calls) == self.fail_at:
                raise TypeError("unsupported operand type(s) for +: 'float' and 'NoneType'")
            if len(calls) == 2 and self.fail_at:  # the first run only
                raise CandidateFailed("diverged", "NaN")
            return [len(formula) / 100.0]

    monkeypatch.setattr(search_run, "build_fitness", lambda *a: Fitness(fail_at=3))
    with pytest.raises(SearchStopped) as stopped:
        search_run.run(cfg, out, Path("configs"), log=lambda *a: None)
    formula = calls[2]
    message = str(stopped.value)
    assert message.startswith("candidate g0-") and f"({formula}) raised TypeError: unsupported operand" in message
    assert message.endswith(f"(traceback in {out / 'error.txt'}); the search state is kept: fix the cause and "
                            "re-run the same command to resume.")
    assert "Traceback (most recent call last)" in (out / "error.txt").read_text()
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert [e["formula"] for e in evaluations] == [calls[0]]  # the diverged one is not an evaluation
    # The re-run (the cause fixed) trains the candidate that stopped the search, and no other twice.
    calls.clear()
    monkeypatch.setattr(search_run, "build_fitness", lambda *a: Fitness(fail_at=None))
    evo = search_run.run(cfg, out, Path("configs"), log=lambda *a: None)
    assert calls[0] == formula and formula not in calls[1:]
    assert evo.finished and [g["generation"] for g in evo.history] == [0, 1]
    assert evo.history[0]["failed"] == {"diverged": 1} and evo.history[0]["trained"] == 4
    logged = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert logged[0]["failed"] == {"diverged": 1}


def test_a_generation_where_nothing_could_be_evaluated_stops_the_search(tmp_path, monkeypatch):
    def out_of_memory(formula):
        raise CandidateFailed("out_of_memory", "RESOURCE_EXHAUSTED: OOM when allocating tensor")

    monkeypatch.setattr(search_run, "build_fitness", lambda *a: out_of_memory)
    with pytest.raises(SearchStopped, match=r"^generation 0: none of its 4 candidates could be evaluated "
                                            r"\(out_of_memory 4\); check the data"):
        search_run.run(search_config(tmp_path), tmp_path / "s", Path("configs"), log=lambda *a: None)
    assert not (tmp_path / "s" / "best_loss.txt").exists() and not (tmp_path / "s" / "generations.jsonl").exists()


def test_a_worker_waits_bounded_for_the_chief_and_refuses_a_different_search(tmp_path, monkeypatch):
    import threading

    port = free_port()
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker0")
    chief = make_oracle(tmp_path, Clock(), [], search_id="0123abcd")
    server = threading.Thread(target=oracle.serve, args=(chief, lambda *a: None, 0.05))
    server.start()
    try:
        logs = []
        worker = make_oracle(tmp_path / "w", Clock(), [], search_id="0123abcd")
        oracle.wait_for_chief(worker, "worker0", logs.append)
        assert logs == [f"worker0: waiting up to 10 s for the chief at 127.0.0.1:{port} ...",
                        "worker0: the chief answered; training candidates."]
        other = make_oracle(tmp_path / "o", Clock(), [], search_id="ffff0000")
        with pytest.raises(ValueError, match=f"the chief at 127.0.0.1:{port} runs a different search "
                                             r"\(settings hash 0123abcd, this worker's ffff0000\)"):
            oracle.wait_for_chief(other, "worker1", lambda *a: None)
    finally:
        chief.evolution.finished = True  # the chief's loop ends: search over, no worker owed
        server.join(timeout=10)
    assert not server.is_alive()
    # No chief at all: the worker gives up after worker_timeout seconds, with one line.
    alone = make_oracle(tmp_path / "a", Clock(), [])
    alone.worker_timeout = 1.0
    with pytest.raises(SearchStopped, match=f"^worker0: no chief answered at 127.0.0.1:{port} within 1 s "
                                            r"\(DEADLINE_EXCEEDED\); start the chief"):
        oracle.wait_for_chief(alone, "worker0", lambda *a: None)


@pytest.mark.slow
def test_a_worker_waiting_before_its_chief_starts_finds_a_chief_that_serves_only_briefly(tmp_path, monkeypatch):
    """The worker waits from 0 s; the chief serves from about 18.5 s, for 3 s. gRPC's default reconnection
    backoff (1 s growing by 1.6 to 120 s, ±20 %: attempts near 9 s, 16 s and 26 s) sleeps through those
    seconds, and the worker waited its whole worker_timeout (a CI run of the chief-and-workers test hung
    so); the wait's channel retries at least about every second."""
    import threading

    port = free_port()
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
    chief = make_oracle(tmp_path, Clock(), [], search_id="0123abcd")

    def end_in_3_s(line):  # serve() logs once its server has started
        threading.Timer(3, lambda: setattr(chief.evolution, "finished", True)).start()

    def serve_briefly():
        time.sleep(18.5)
        oracle.serve(chief, end_in_3_s, 0.05)

    server = threading.Thread(target=serve_briefly)
    server.start()
    worker = make_oracle(tmp_path / "w", Clock(), [], search_id="0123abcd")
    worker.worker_timeout = 30.0
    logs = []
    try:
        oracle.wait_for_chief(worker, "worker0", logs.append)
    finally:
        server.join(timeout=40)
    assert not server.is_alive()
    assert logs[-1] == "worker0: the chief answered; training candidates."


def test_a_worker_writes_nothing_before_its_chief_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(free_port()))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "worker0")
    out = tmp_path / "s"
    with pytest.raises(SearchStopped, match="worker0: no chief answered at 127.0.0.1:"):
        search_run.run(search_config(tmp_path, worker_timeout=10), out, Path("configs"), log=lambda *a: None)
    assert not out.exists()
