"""The training fitness without training: its child process (restart after a crash, recycling,
ending with its parent), how failures are told apart from errors, and experiment 5's
comparison with cross-entropy."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ngl_keras.gp import fitness
from ngl_keras.gp.search_settings import Fitness
from ngl_keras.gp.evolution import CandidateFailed
from tests.paths import CONFIGS, ROOT


def _die(sig):
    os.kill(os.getpid(), sig)


def _exit(code):
    os._exit(code)


@pytest.mark.slow
def test_the_training_process_is_recycled_and_started_again_after_a_crash():
    process = fitness.TrainingProcess(recycle_every=2)
    try:
        first = process.run(os.getpid)
        assert process.run(os.getpid) == first and first != os.getpid()
        recycled = process.run(os.getpid)
        assert recycled != first  # a new child after recycle_every trainings
        with pytest.raises(CandidateFailed) as failure:
            process.run(_die, signal.SIGKILL)
        assert failure.value.reason == "out_of_memory" and "SIGKILL" in failure.value.detail
        after_kill = process.run(os.getpid)
        assert after_kill not in (first, recycled)
        with pytest.raises(ZeroDivisionError):  # an error inside the child is raised as it is
            process.run(divmod, 1, 0)
        with pytest.raises(RuntimeError, match=r"the training process died \(exit codes \[3\]\)"):
            process.run(_exit, 3)
    finally:
        process.close()


PARENT = """
import os, sys, time
sys.path.insert(0, {root!r})
from ngl_keras.gp.fitness import TrainingProcess
process = TrainingProcess(10)
print(process.run(os.getpid), flush=True)
process.run(time.sleep, 600)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_the_training_process_ends_within_seconds_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(root=str(ROOT))], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        time.sleep(0.5)  # the child is now in time.sleep(600)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
        try:
            os.killpg(parent.pid, signal.SIGKILL)  # the child too, should the check above fail
        except ProcessLookupError:
            pass


class ResourceExhaustedError(Exception):
    """Named as TensorFlow's: told apart by its name, no backend imported."""


@pytest.mark.parametrize("error,reason", [
    (ResourceExhaustedError("OOM when allocating tensor with shape[512,2048]"), "out_of_memory"),
    (MemoryError(), "out_of_memory"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB"), "out_of_memory"),
    (TypeError("unsupported operand"), None),
    (KeyError("val_accuracy"), None),
])
def test_only_resource_exhaustion_becomes_a_failed_candidate(monkeypatch, error, reason):
    class Trainer:
        def accuracies(self, losses):
            raise error

    monkeypatch.setattr(fitness, "_trainer", lambda *args: Trainer())
    if reason is None:
        with pytest.raises(type(error)):
            fitness._accuracies_in_process({}, "", "", None, 0, None, ["ce"])
    else:
        with pytest.raises(CandidateFailed) as failure:
            fitness._accuracies_in_process({}, "", "", None, 0, None, ["ce"])
        assert failure.value.reason == reason


def experiment5(tmp_path, monkeypatch, results):
    settings = {"kind": "train", "datasets": ["fashion_mnist", "cifar10"], "model": "small_cnn", "runs": 1,
                "compare_with_ce": True, "recycle_every": 0}
    trained = []

    def accuracies(*args):
        trained.extend(args[-1])
        return [results[loss] for loss in args[-1]]

    monkeypatch.setattr(fitness, "_accuracies_in_process", accuracies)
    return fitness.TrainingFitness(Fitness(**settings), CONFIGS, tmp_path), trained


def test_compare_with_ce_ranks_by_wins_and_improvement_and_trains_ce_once(tmp_path, monkeypatch):
    results = {"ce": [("fashion_mnist", 0.8), ("cifar10", 0.5)],
               "a": [("fashion_mnist", 0.88), ("cifar10", 0.45)],   # +10 %, -10 %
               "b": [("fashion_mnist", 0.84), ("cifar10", 0.6)],    # +5 %, +20 %
               "c": [("fashion_mnist", None), ("cifar10", 0.6)]}
    evaluate, trained = experiment5(tmp_path, monkeypatch, results)
    assert evaluate("a") == pytest.approx([-1.0, -10.0])
    assert evaluate("b") == pytest.approx([-2.0, -12.5])
    assert trained == ["a", "ce", "b"]  # CE once, then from ce_baseline.json
    assert json.loads((tmp_path / "ce_baseline.json").read_text()) == {"fashion_mnist": 0.8, "cifar10": 0.5}
    with pytest.raises(CandidateFailed) as failure:
        evaluate("c")
    assert str(failure.value) == "diverged: no finite validation accuracy on fashion_mnist"
    # A second fitness in the same search directory (a resumed search) reuses the baseline.
    again, trained_again = experiment5(tmp_path, monkeypatch, results)
    assert again("a") == pytest.approx([-1.0, -10.0]) and trained_again == ["a"]


def test_a_diverged_cross_entropy_baseline_is_an_error_not_a_failed_candidate(tmp_path, monkeypatch):
    evaluate, _ = experiment5(tmp_path, monkeypatch, {"ce": [("fashion_mnist", None), ("cifar10", 0.5)],
                                                      "a": [("fashion_mnist", 0.5), ("cifar10", 0.5)]})
    with pytest.raises(RuntimeError, match="cross-entropy diverged on fashion_mnist: experiment 5 has no baseline"):
        evaluate("a")
    assert not (tmp_path / "ce_baseline.json").exists()


def test_a_missing_dataset_is_found_before_the_first_generation(tmp_path):
    settings = {"kind": "train", "datasets": ["cifar10"], "model": "small_cnn", "runs": 1}
    evaluate = fitness.TrainingFitness(Fitness(**settings), CONFIGS, tmp_path / "s", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match=r"dataset 'cifar10' \(tfds 'cifar10'\) is not available offline in "):
        evaluate.check_inputs()
