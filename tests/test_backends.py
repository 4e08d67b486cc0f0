"""One training path on every Keras backend: the same grid, records, resume and data parallelism
on TensorFlow (tf.data input) and JAX (ArrayBatches and input layers). The README's test command
runs the tests marked `any_backend` a second time under KERAS_BACKEND=jax."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml

from ngl_keras import config, data, report, training
from ngl_keras.distribution import make_strategy
from ngl_keras.grid import plan
from ngl_keras.records import read_records
from ngl_keras.resume import BACKUP_DIR, EPOCH_LOG
from tests.paths import CONFIGS, ROOT

BACKEND = keras.backend.backend()
TINY = {"epochs": 2, "limit_train": 256}


def _grid(tmp_path, **extra):
    grid = {"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": ["ngl"], "runs": 1, "seed": 3,
            "settings": {"fashion_mnist": {"image_size": 28, "batch_size": 64}}}
    grid.update(extra)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _quiet(*_):
    return None


@pytest.mark.any_backend
@pytest.mark.realdata
def test_a_grid_trains_on_this_backend_and_its_record_says_how(tmp_path):
    out = tmp_path / "out"
    runs = plan(config.grid(_grid(tmp_path)), CONFIGS, TINY)
    (record,) = training.run_grid(runs, out, strategy="none", verbose=0, log=_quiet)
    assert record["backend"] == BACKEND and record["versions"]["backend"] == BACKEND
    assert record["versions"][BACKEND] == __import__(BACKEND).__version__
    # the code it ran: this checkout's commit (runs compared with each other must share it)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.strip() and record["versions"]["code"].removesuffix("-dirty") == head.strip()
    assert record["input"] == ("tf.data" if BACKEND == "tensorflow" else "ArrayBatches")
    assert record["replicas"] == 1 and record["strategy"] == "none" and record["dtype_policy"] == "float32"
    assert record["status"] == "ok" and 0.0 <= record["test_accuracy"] <= 1.0
    assert record["resumed_from_epoch"] is None and record["epochs_run"] == 2
    assert len(record["epoch_seconds"]) == 2 and all(s > 0 for s in record["epoch_seconds"])
    assert set(record["history"]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in record["history"].values())
    (run_dir,) = (out / "runs").iterdir()
    rows = (run_dir / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and header[0] == "epoch"
    assert float(rows[2].split(",")[header.index("loss")]) == record["history"]["loss"][1]
    assert not (run_dir / BACKUP_DIR).exists() and not (run_dir / EPOCH_LOG).exists()
    assert "| ngl |" in report.write(read_records(out / "runs.jsonl"), out)


@pytest.mark.any_backend
@pytest.mark.realdata
def test_data_parallel_over_two_devices(tmp_path):
    """TensorFlow: MirroredStrategy over the two logical CPUs of conftest. JAX: DataParallel over
    the two host devices conftest asks XLA for, in a fresh train_small.py process (XLA's CPU
    collectives in a process that has already run other programs were seen to stall here)."""
    grid = _grid(tmp_path, losses=["ce"])
    if BACKEND == "tensorflow":
        runs = plan(config.grid(grid), CONFIGS, {**TINY, "epochs": 1})
        (record,) = training.run_grid(runs, tmp_path / "out", strategy="mirrored", verbose=0, log=_quiet)
    else:
        done = subprocess.run([sys.executable, str(ROOT / "train_small.py"), "--config", str(grid), "--out",
                               str(tmp_path / "out"), "--epochs", "1", "--limit-train", "256", "--strategy",
                               "mirrored", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        (record,) = read_records(tmp_path / "out" / "runs.jsonl")
    assert record["replicas"] == 2 and record["strategy"] == "mirrored" and record["status"] == "ok"
    assert record["backend"] == BACKEND and 0.0 <= record["test_accuracy"] <= 1.0


@pytest.mark.any_backend
def test_strategies_the_backend_cannot_do_are_refused_by_name():
    if BACKEND == "tensorflow":
        os.environ.pop("TF_CONFIG", None)
        with pytest.raises(ValueError, match="strategy 'multiworker' needs TF_CONFIG"):
            make_strategy("multiworker")
    else:  # JAX's multi-process runtime, from the coordinator's environment
        for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            os.environ.pop(key, None)
        with pytest.raises(ValueError, match="strategy 'multiworker' on JAX needs JAX_COORDINATOR_ADDRESS"):
            make_strategy("multiworker")
    with pytest.raises(ValueError, match="unknown strategy 'ring'; accepted: auto, mirrored, multiworker, none"):
        make_strategy("ring")
    assert make_strategy("none").replicas == 1


@pytest.mark.any_backend
def test_array_batches_visit_every_example_once_per_epoch_in_an_order_set_by_seed_and_epoch():
    images = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
    labels = np.arange(10) % 3
    batches = data.ArrayBatches((images, labels), classes=3, batch_size=4, shuffle_seed=7)
    assert len(batches) == 3 and batches.image_shape == (2, 2, 1)

    def epoch():
        seen = [batches[i] for i in range(len(batches))]
        x = np.concatenate([b[0] for b in seen])
        y = np.concatenate([b[1] for b in seen])
        return x[:, 0, 0, 0].astype(int) // 4, y

    first, y = epoch()
    assert sorted(first) == list(range(10)) and first.tolist() == np.random.default_rng([7, 0]).permutation(10).tolist()
    np.testing.assert_array_equal(y, np.eye(3)[labels[first]])
    batches.on_epoch_end()
    second, _ = epoch()
    assert second.tolist() == np.random.default_rng([7, 1]).permutation(10).tolist() != first.tolist()
    resumed = data.ArrayBatches((images, labels), classes=3, batch_size=4, shuffle_seed=7)
    resumed.set_epoch(1)
    assert np.concatenate([resumed[i][0] for i in range(3)])[:, 0, 0, 0].astype(int).tolist() == (second * 4).tolist()
    plain = data.ArrayBatches((images, labels), classes=3, batch_size=4)
    assert np.concatenate([plain[i][0] for i in range(3)])[:, 0, 0, 0].tolist() == list(range(0, 40, 4))
    # Two replicas: every batch splits evenly; the last batch of 10 = 4 + 4 + 2 keeps its 2.
    assert [len(b[0]) for b in data.ArrayBatches((images, labels), classes=3, batch_size=4, multiple=2)] == [4, 4, 2]
    # Four replicas: the last 2 examples cannot be split over 4, so the epoch has 2 batches of 4.
    assert [len(b[0]) for b in data.ArrayBatches((images, labels), classes=3, batch_size=4, multiple=4)] == [4, 4]
    assert [len(b[0]) for b in data.ArrayBatches((images, labels), classes=3, batch_size=3, multiple=3)] == [3, 3, 3]


def test_a_tfds_data_source_feeds_array_batches_with_variable_size_images_resized():
    import tensorflow_datasets as tfds  # its mock_data needs TensorFlow

    with tfds.testing.mock_data(num_examples=6):
        source = data.readers._load_data_source(data.info("malaria"), "train", None, 5)
        assert len(source) == 5
        batches = data.ArrayBatches(source, classes=2, batch_size=4, image_size=24, shuffle_seed=0)
        x, y = batches[0]
    assert x.shape == (4, 24, 24, 3) and x.dtype == np.float32 and y.shape == (4, 2)
    assert len(batches) == 2 and batches.image_shape == (24, 24, 3)
    assert 0.0 <= x.min() and x.max() <= 255.0 and np.all(y.sum(-1) == 1)


def test_an_unprepared_dataset_without_tf_data_says_how_to_prepare_it():
    with pytest.raises(ValueError, match=r"dataset 'cifar10' \(tfds 'cifar10'\) is not available offline in "
                                         r"/nonexistent: .*`tfds build cifar10 --file_format=array_record "
                                         r"--data_dir /nonexistent`"):
        data.readers._load_data_source(data.info("cifar10"), "train", "/nonexistent", None)


@pytest.mark.any_backend
@pytest.mark.slow
@pytest.mark.realdata
def test_kill_9_between_epochs_resumes_from_the_last_finished_epoch(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "train_small.py"), "--config", str(_grid(tmp_path, losses=["ce"])),
               "--out", str(out), "--epochs", "3", "--limit-train", "512", "--strategy", "none", "--quiet"]
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    metadata = None
    while time.time() < deadline and metadata is None:
        found = list(out.glob(f"runs/*/{BACKUP_DIR}/training_metadata.json"))
        metadata = found[0] if found else None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert metadata is not None and not (out / "runs.jsonl").exists()
    finished = json.loads(metadata.read_text())["epoch"]
    logged = [json.loads(line) for line in (metadata.parent.parent / EPOCH_LOG).read_text().splitlines()]
    assert 1 <= finished <= 2 and len(logged) >= finished
    resumed = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600)
    lines = resumed.stdout.splitlines()
    said = lines.index(f"  resuming from epoch {finished} (a backup of an interrupted run)")  # before it trains
    assert lines[said - 1].startswith("run 1 of 1: ") and "test accuracy" in lines[said + 1]
    (record,) = read_records(out / "runs.jsonl")
    assert record["resumed_from_epoch"] == finished and record["epochs_run"] == 3
    assert record["history"]["loss"][:finished] == [line["logs"]["loss"] for line in logged[:finished]]
    assert len(record["history"]["val_accuracy"]) == 3 and record["status"] == "ok"
    assert not metadata.parent.exists() and not (metadata.parent.parent / EPOCH_LOG).exists()


@pytest.mark.any_backend
def test_the_losses_give_the_published_values_on_this_backend_and_train_under_jit():
    """Each loss's value on this backend equals its independent numpy formula (tests/reference.py),
    and a jit-compiled train step with it is finite."""
    import ngl_keras
    from tests import reference

    rng = np.random.default_rng(4)
    p = reference.softmax(rng.normal(size=(16, 10)) * 2).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 16)]
    expected = {
        "ngl": reference.ngl_published_tf(y, p),
        "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))": reference.ngl_published_tf(y, p),
        "sce": reference.sce(y, p, 0.1, 1.0, -4.0).mean(),
        "dice": reference.dice(y, p),
        "anyloss_f1": reference.anyloss_multiclass(y, p, "fbeta", "macro", L=20.0, threshold=0.1),
    }
    for name, value in expected.items():
        got = float(keras.ops.convert_to_numpy(ngl_keras.losses.get(name)(y, p)))
        assert got == pytest.approx(value, rel=2e-5, abs=1e-6), name
    x = rng.normal(size=(16, 8)).astype("float32")
    for name in expected:
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss=ngl_keras.losses.get(name), jit_compile=True)
        assert np.isfinite(float(model.train_on_batch(x, y))), name
