"""The search on JAX with TensorFlow uninstalled: search_gp.py in a subprocess whose import
system cannot find TensorFlow (as when it is not installed), alone and as a chief and a
keras-tuner worker."""

import json
import os
import subprocess
import sys
import time

import pytest

import search_gp
from tests.paths import ROOT
from tests.processes import oracle_env

# Imported first by every Python started with this directory on PYTHONPATH: the path finder
# no longer finds tensorflow (find_spec gives None, `import tensorflow` raises
# ModuleNotFoundError, exactly as when it is not installed). At exit, the modules of
# tensorflow that got loaded and the files that tried to import one go to $WITHOUT_TF_REPORT.
SITECUSTOMIZE = '''
import atexit, importlib.machinery, json, os, sys, traceback

_attempts = []


class _WithoutTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            _attempts.append([f.filename for f in traceback.extract_stack()[:-1]])
            return None
        return super().find_spec(name, path, target)


sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = _WithoutTensorFlow


@atexit.register
def _report():
    if os.environ.get("WITHOUT_TF_REPORT"):
        with open(os.environ["WITHOUT_TF_REPORT"], "w") as f:
            json.dump({"attempts": _attempts,
                       "loaded": sorted(m for m in sys.modules if m.partition(".")[0] == "tensorflow")}, f)
'''


def folded(formula):
    """A formula as best_loss.txt writes it: constant subtrees folded, constants exact."""
    from ngl_keras.formula import fold_constants, parse, to_text

    return to_text(fold_constants(parse(formula)))


@pytest.mark.parametrize("module", ["ngl_keras.gp.engine", "ngl_keras.gp.evolution", "ngl_keras.gp.screening"])
def test_the_gp_engine_evolution_and_screening_import_no_keras(module):
    code = f"import sys, {module}; assert 'keras' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def without_tf(tmp_path_factory):
    """Environment of a JAX process that cannot import TensorFlow; its report file."""
    folder = tmp_path_factory.mktemp("without_tf")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def env(report, **extra):
        return {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(folder),
                "WITHOUT_TF_REPORT": str(report), **extra}

    return env


def no_tensorflow_from_the_project(report_path):
    """No tensorflow module was loaded, and none of the project's files tried to import one."""
    report = json.loads(report_path.read_text())
    assert report["loaded"] == []
    # ngl_keras/console.py is on the stack of a library's import of TensorFlow (it wraps that import
    # in its stderr filter, starting none itself); any other file of ours there started one.
    ours = [f for stack in report["attempts"] for f in stack
            if f.startswith(str(ROOT)) and "site-packages" not in f and f != str(ROOT / "ngl_keras" / "console.py")]
    assert ours == []


def test_keras_keras_tuner_and_tfds_import_without_tensorflow(without_tf, tmp_path):
    code = """
import importlib.util
import keras, keras_tuner, tensorflow_datasets
from keras_tuner.src.distribute import oracle_chief, oracle_client
from keras_tuner.src.protos import get_service_grpc
assert importlib.util.find_spec("tensorflow") is None
try:
    import tensorflow
except ModuleNotFoundError as error:
    print("hidden:", error.name)
print(keras.backend.backend(), get_service_grpc().OracleStub.__name__)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=without_tf(tmp_path / "report.json"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["hidden:", "tensorflow", "jax", "OracleStub"]
    assert json.loads((tmp_path / "report.json").read_text())["loaded"] == []


def test_smoke_search_on_jax_without_tensorflow_equals_the_search_on_tensorflow(without_tf, tmp_path):
    out = tmp_path / "jax"
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(ROOT / "search_gp.py"), "--experiment", "smoke", "--out", str(out)],
                          cwd=ROOT, env=without_tf(report), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    no_tensorflow_from_the_project(report)
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in generations] == [0, 1, 2, 3]
    fame = json.loads((out / "hall_of_fame.json").read_text())
    assert [e["rank"] for e in fame] == list(range(1, 9))  # hall_of_fame 10, population 8
    assert {e["experiment"] for e in fame} == {"smoke"}
    assert fame[0]["fitness"] == generations[-1]["best_fitness"]
    assert (out / "probe_best_formula.txt").read_text().splitlines()[-1] == folded(fame[0]["formula"])
    assert not (out / "best_loss.txt").exists()  # a probe's best is no loss to paste
    assert f"the probe's best formula: {fame[0]['display']}" in done.stdout and "ExpressionLoss" not in done.stdout
    # The same seed on TensorFlow (this process) proposes, screens and ranks the same candidates.
    reference = tmp_path / "tf"
    search_gp.main(["--experiment", "smoke", "--out", str(reference), "--generations", "1"])
    keys = ("generation", "proposed", "rejected", "best_fitness", "median_fitness", "best_formula")
    on_tf = [json.loads(x) for x in (reference / "generations.jsonl").read_text().splitlines()]
    assert [{k: g[k] for k in keys} for g in generations[:2]] == [{k: g[k] for k in keys} for g in on_tf]


@pytest.mark.slow
def test_a_chief_and_a_worker_on_jax_without_tensorflow(without_tf, tmp_path):
    out = tmp_path / "s"
    args = [sys.executable, str(ROOT / "search_gp.py"), "--experiment", "smoke", "--generations", "1",
            "--out", str(out)]
    oracle = oracle_env()
    chief = subprocess.Popen(args, cwd=ROOT, env=without_tf(tmp_path / "chief.json", **oracle,
                                                            KERASTUNER_TUNER_ID="chief"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(4)
    worker = subprocess.Popen(args, cwd=ROOT, env=without_tf(tmp_path / "worker.json", **oracle,
                                                             KERASTUNER_TUNER_ID="worker0"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        worker_output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, worker_output[-3000:]
        chief_output, _ = chief.communicate(timeout=120)
        assert chief.returncode == 0, chief_output[-3000:]
    finally:
        for process in (worker, chief):
            if process.poll() is None:
                process.kill()
    no_tensorflow_from_the_project(tmp_path / "chief.json")
    no_tensorflow_from_the_project(tmp_path / "worker.json")
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(evaluations) == 16 and {e["tuner"] for e in evaluations} == {"worker0"}
    generations = [json.loads(x)["generation"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert generations == [0, 1]
    fame = json.loads((out / "hall_of_fame.json").read_text())
    assert (out / "probe_best_formula.txt").read_text().splitlines()[-1] == folded(fame[0]["formula"])
    assert not (out / "best_loss.txt").exists()  # a probe's best is no loss to paste


@pytest.mark.slow
@pytest.mark.realdata
def test_a_trained_proxy_search_on_jax_without_tensorflow(without_tf, tmp_path):
    """exp2_proxy's training fitness (small_cnn on Fashion-MNIST, the CE/NGL references included) on
    JAX with TensorFlow unimportable: the training path itself needs no TensorFlow."""
    out, report = tmp_path / "s", tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(ROOT / "search_gp.py"), "--experiment", "exp2_proxy", "--out", str(out),
                           "--population", "2", "--generations", "0", "--limit-train", "256", "--epochs", "1"],
                          cwd=ROOT, env=without_tf(report), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    no_tensorflow_from_the_project(report)
    (generation,) = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert set(generation["references"]) == {"ce", "ngl"} and generation["trained"] >= 1
    assert all(0.0 <= value[0] <= 1.0 for value in generation["references"].values())  # validation errors
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert evaluations and all(0.0 <= e["fitness"][0] <= 1.0 for e in evaluations)
