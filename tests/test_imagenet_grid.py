"""The ImageNet experiment through the one grid: the recipe as settings, the registry's Table 3 models, a
tiny dataset with imagenet2012's feature spec (tests/tiny_tfds.py) trained and resumed by `run_grid` with
top-1 and top-5 recorded, Table 3 beside ours, and the bad inputs refused in one line."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from ngl_keras import config, distribution, grid, models, recipe, report, training
from ngl_keras.records import read_records
from tests import tiny_tfds

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATASET = "tiny_imagenet_spec"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    file_format = "tfrecord" if keras.backend.backend() == "tensorflow" else "array_record"
    return str(tiny_tfds.build_in_subprocess(tmp_path_factory.mktemp("tfds"), file_format))


def imagenet_settings(**changes):
    """configs/datasets/imagenet2012.yaml made small: 32 px crops of the tiny images, batch 8, 2 epochs."""
    settings = config.read_yaml(CONFIGS / "datasets" / "imagenet2012.yaml")
    settings.update(epochs=2, image_size=32, batch_size=8, randaugment=None,
                    crop={"evaluation_resize": 36}, schedule={"name": "cosine", "warmup_epochs": 1})
    settings.update(changes)
    return settings


def imagenet_grid(model="tiny_resnet", losses=("ngl",), **changes):
    return {"datasets": [DATASET], "models": [model], "losses": list(losses), "strategy": "none",
            "settings": {DATASET: imagenet_settings(**changes)}}


def test_the_paper_datasets_settings_and_records_do_not_change():
    settings = config.dataset_settings("cifar10", CONFIGS)
    assert set(settings.to_json()) == {"epochs", "image_size", "batch_size", "optimizer", "reduce_lr",
                                       "augmentation", "cache", "splits"}
    assert set(settings.optimizer.to_json()) == {"name", "learning_rate", "momentum"}
    assert settings.schedule is None and not settings.recipe_augmentation and settings.metrics is None
    assert training.metric_names(settings) == ["accuracy"]


def test_adamw_settings_belong_to_adamw_only():
    with pytest.raises(ValueError, match=r"^optimizer 'adam' takes no beta_1, global_clipnorm: they are AdamW's"):
        config.Optimizer(name="adam", learning_rate=1e-3, beta_1=0.9, global_clipnorm=5.0)
    # weight decay is every optimizer's (DeepLabv2's Adam and SGD take Keras's decoupled decay)
    assert config.Optimizer(name="adam", learning_rate=1e-3, weight_decay=5e-4).weight_decay == 5e-4


def test_the_imagenet_configs_check_and_give_the_swin_recipe():
    base = config.read_yaml(CONFIGS / "datasets" / "imagenet2012.yaml")
    for name in ("imagenet_swin", "imagenet_resnet"):
        grid_config = config.check_grid(config.grid(CONFIGS / f"{name}.yaml"))
        settings = config.build(config.DatasetSettings,
                                config.merge(base, grid_config.settings.get("imagenet2012", {})), name)
        assert settings.optimizer.learning_rate * settings.optimizer.scale(512) == pytest.approx(5e-4)
        assert settings.metrics == ["top1", "top5"] and settings.crop.evaluation_resize == 256
        losses = [grid.LossSpec.parse(item) for item in grid_config.losses]
        assert [(spec.label, spec.kernel_l2()) for spec in losses] == [("ce", 1e-4), ("sce", 0), ("focal", 0),
                                                                      ("ngl", 0)]
        # ResNet: CE's own label smoothing; Swin: the mix's, on every loss's targets
        assert losses[0].config["label_smoothing"] == (0.1 if name == "imagenet_resnet" else 0.0)
    resnet = config.build(config.DatasetSettings, config.merge(base, grid_config.settings["imagenet2012"]), "r")
    assert resnet.mix is None and resnet.randaugment is None and resnet.flip
    fmnist = config.check_grid(config.grid(CONFIGS / "fmnist_swin_recipe.yaml"))
    assert [p.model for p in grid.plan(fmnist, CONFIGS)] == ["tiny_swin", "tiny_swin"]


def test_the_learning_rate_follows_warm_up_then_cosine_scaled_with_the_global_batch():
    settings = config.build(config.DatasetSettings, imagenet_settings(epochs=10, batch_size=256, schedule={
        "name": "cosine", "warmup_epochs": 2, "warmup_learning_rate": 1e-6, "min_learning_rate": 1e-5}), "t")
    schedule = recipe.learning_rate(settings, steps_per_epoch=100)
    scale = 256 / 1024
    base, warm, low = 1e-3 * scale, 1e-6 * scale, 1e-5 * scale
    expected = {0: warm, 100: warm + (base - warm) / 2, 200: base,
                600: low + (base - low) * (1 + math.cos(math.pi * 400 / 800)) / 2, 1000: low}
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-5)


@pytest.mark.any_backend
def test_weight_decay_spares_norms_biases_and_position_tables():
    """One step with zero gradients: only weight decay moves a variable."""
    settings = config.build(config.DatasetSettings, imagenet_settings(
        optimizer={**imagenet_settings()["optimizer"], "learning_rate": 1.0, "reference_batch": None},
        schedule=None), "t")
    model = models.build_model("tiny_swin", 5, 32, output_activation="linear")
    optimizer = recipe.optimizer(settings, model, steps_per_epoch=5)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in model.trainable_variables])
    moved = {v.path for v in model.trainable_variables
             if not np.array_equal(keras.ops.convert_to_numpy(v), before[v.path])}
    spared = {v.path for v in model.trainable_variables
              if len(v.shape) <= 1 or "relative_position_bias_table" in v.path}
    assert moved and not moved & spared
    assert moved == {v.path for v in model.trainable_variables if v.path not in spared and before[v.path].any()}
    assert optimizer.global_clipnorm == 5.0 and optimizer.weight_decay == 0.05


@pytest.mark.any_backend
def test_an_imagenet_grid_records_top1_top5_and_the_batch_and_resumes_inside_a_run(data_dir, tmp_path, monkeypatch):
    runs = grid.plan(imagenet_grid(), CONFIGS, data_dir=data_dir)
    schedule = recipe.schedule_callbacks

    class Killed(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "schedule_callbacks", lambda settings: schedule(settings) + [Killed()])
    with pytest.raises(KeyboardInterrupt):
        training.run_grid(runs, tmp_path, strategy="none", data_dir=data_dir, verbose=0, log=lambda *_: None)
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)
    (record,) = training.run_grid(runs, tmp_path, strategy="none", data_dir=data_dir, verbose=0, log=lambda *_: None)
    assert record["resumed_from_epoch"] == 1 and record["epochs_run"] == 2 and record["status"] == "ok"
    assert 0.0 <= record["top1"] <= record["top5"] <= 1.0 and record["test_accuracy"] == pytest.approx(record["top1"])  # one prediction
    assert record["top5"] == 1.0  # five classes: the true one is always among the top five
    assert {"top1", "top5", "val_top1", "val_top5"} <= set(record["history"])
    assert record["batch"] == {"global": 8, "per_replica": 8, "replicas": 1, "reference": 1024,
                               "learning_rate": pytest.approx(1e-3 * 8 / 1024)}
    text = report.write(read_records(tmp_path / "runs.jsonl"), tmp_path, metric="top1")
    assert "top1 %" in text and (tmp_path / "val_top1.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "val_accuracy.png").exists()  # its runs log val_top1: no empty accuracy plot


@pytest.mark.any_backend
def test_the_recipe_input_crops_to_the_size_and_mixes_targets_that_sum_to_one(data_dir):
    from ngl_keras import data

    (run,) = grid.plan(imagenet_grid(random_erasing=0.25), CONFIGS, data_dir=data_dir)
    train, validation, _ = data.Datasets(data_dir).pipelines(run, test=False)
    for batches in (train, validation):
        images, targets = next(iter(batches)) if hasattr(batches, "element_spec") else batches[0]
        images, targets = np.asarray(images), np.asarray(targets)
        assert images.shape == (8, 32, 32, 3) and targets.shape == (8, 5)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    assert (targets == 1.0).sum() == 8  # evaluation: one-hot, never mixed
    assert np.asarray(next(iter(train))[1] if hasattr(train, "element_spec") else train[0][1]).max() < 1.0


def test_table3_is_printed_beside_ours():
    records = [{"dataset": "imagenet2012", "model": "resnet101", "loss": loss, "status": "ok", "top1": value,
                "history": {}} for loss, value in (("ce", 0.7655), ("ngl", 0.78))]
    text = report.imagenet_table(records)
    assert "| resnet101 |  | 76.55 | 78.00 |" in text
    assert "| resnet101 (paper) | 78.25 | 76.55 | 78.38 |" in text


@pytest.mark.any_backend
def test_an_unprepared_imagenet_is_one_line_naming_its_build_command_and_nothing_is_written(tmp_path, capsys):
    from ngl_keras.cli import train_small

    tfds_dir, out = tmp_path / "tfds", tmp_path / "out"
    with pytest.raises(SystemExit) as exit:
        train_small.run(["--config", str(CONFIGS / "imagenet_resnet.yaml"), "--data-dir", str(tfds_dir), "--out",
                         str(out)])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        f"error: dataset 'imagenet2012' (tfds) is not prepared in {tfds_dir}: nothing is downloaded; prepare it from "
        "the archives you downloaded (`tfds build imagenet2012 --manual_dir DIR`, DIR holding ILSVRC2012_img_train.tar "
        "and ILSVRC2012_img_val.tar; for the JAX backend add --file_format=array_record) and copy it there, or pass "
        "--data-dir.\n")
    assert list(tmp_path.iterdir()) == []  # neither the output nor the data directory


@pytest.mark.parametrize("change, message", [
    ({"models": ["resnet18"]}, r"^unknown model 'resnet18' \(did you mean 'resnet152'\?\); known models: "),
    ({"models": ["tiny_swin"], "size": 24}, r"^swin: image_size 24 does not fit window 4 with patch 4"),
])
def test_bad_models_are_one_line_before_anything_trains(data_dir, change, message):
    config_ = imagenet_grid()
    if "models" in change:
        config_["models"] = change["models"]
    if "size" in change:
        config_["settings"][DATASET]["image_size"] = change["size"]
    with pytest.raises(ValueError, match=message):
        grid.plan(config_, CONFIGS, data_dir=data_dir)


def test_a_global_batch_that_does_not_split_over_the_replicas_is_refused(data_dir, tmp_path):
    runs = grid.plan(imagenet_grid(batch_size=9), CONFIGS, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"^tiny_imagenet_spec: batch_size 9 \(the global batch\) is not divisible "
                                         r"by the 2 replicas; use a multiple of 2\.$"):
        training.run_grid(runs, tmp_path / "out", strategy="mirrored", data_dir=data_dir, verbose=0,
                          log=lambda *_: None)
    assert not (tmp_path / "out" / "runs.jsonl").exists()


@pytest.mark.any_backend
def test_multiworker_without_its_cluster_settings_is_one_line(monkeypatch):
    for variable in ("TF_CONFIG",) + distribution.JAX_PROCESS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    expected = ("strategy 'multiworker' needs TF_CONFIG describing the cluster." if keras.backend.backend() ==
                "tensorflow" else "strategy 'multiworker' on JAX needs JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                "JAX_PROCESS_ID (the coordinator's host:port, the number of processes, this process's index); "
                "missing: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.")
    with pytest.raises(ValueError) as error:
        distribution.make_strategy("multiworker")
    assert str(error.value) == expected


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


WORKER = """
import sys
from ngl_keras import grid, training
import numpy as np
from ngl_keras import data
rng = np.random.default_rng(0)
x = rng.integers(0, 255, (64, 16, 16, 1)).astype("uint8"); y = (x.mean(axis=(1, 2, 3)) > 127).astype("int64")
arrays = data.from_arrays({"train": (x[:32], y[:32]), "validation": (x[32:48], y[32:48]), "test": (x[48:], y[48:])})
config = {"datasets": ["arrays"], "models": ["small_cnn"], "losses": ["ngl"], "epochs": 1,
          "settings": {"arrays": {"batch_size": 8, "image_size": 16}}}
runs = grid.plan(config, sys.argv[1], sources=grid.Sources(datasets={"arrays": arrays}))
(record,) = training.run_grid(runs, sys.argv[2], strategy="multiworker", verbose=0, log=lambda *_: None)
print("RESULT", record["status"], record["replicas"], record["strategy"], record["epochs_run"])
print("TRAINED", record["history"]["loss"][-1], record["test_accuracy"])
"""


@pytest.mark.slow
@pytest.mark.any_backend
def test_two_workers_on_this_machine_train_one_grid_together(tmp_path):
    """Two processes on 127.0.0.1: MultiWorkerMirroredStrategy from TF_CONFIG (TensorFlow, through
    `distribution.FitBetweenWorkers`), or JAX's distributed runtime from JAX_COORDINATOR_ADDRESS (JAX, CPU
    devices); each worker its own output."""
    ports = _free_ports(2)
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    processes = []
    for index in range(2):
        if keras.backend.backend() == "tensorflow":
            cluster = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker",
                                                                                           "index": index}}
            env = {**base, "TF_CONFIG": json.dumps(cluster)}
        else:
            env = {**base, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{ports[0]}", "JAX_NUM_PROCESSES": "2",
                   "JAX_PROCESS_ID": str(index)}
        env["PYTHONPATH"] = str(ROOT)
        processes.append(subprocess.Popen([sys.executable, "-c", WORKER, str(CONFIGS), str(tmp_path / f"w{index}")],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for output in outputs:
        assert "RESULT ok 2 multiworker 1" in output, output[-2000:]
    # one model trained together: the same loss and test accuracy on both workers
    trained = [next(line for line in output.splitlines() if line.startswith("TRAINED ")) for output in outputs]
    assert trained[0] == trained[1] and trained[0] != "TRAINED None None"
