"""The evaluation grid: records, resume, divergence, the table, strategies, config errors."""

import dataclasses
import errno
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

import train_small
from ngl_keras import config, files, recipe, report, training
from ngl_keras.grid import plan
from ngl_keras.progress import GridClock, Progress
from ngl_keras.records import append_record, finished_keys, identity, read_records, record_backend
from ngl_keras.resume import BACKUP_DIR, EPOCH_LOG
from tests.paths import CONFIGS, ROOT, kill_when_lines

TINY = {"epochs": 1, "limit_train": 256}


def _grid(tmp_path, **extra):
    grid = {"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": ["ce", "ngl"],
            "runs": 2, "seed": 5, "settings": {"fashion_mnist": {"image_size": 28, "batch_size": 64}}}
    grid.update(extra)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.realdata
def test_grid_writes_one_record_per_run_and_a_table_the_numbers_support(tmp_path):
    out = tmp_path / "out"
    runs = plan(config.grid(_grid(tmp_path)), CONFIGS, TINY)
    assert [r.key for r in runs] == ["fashion_mnist/small_cnn/ce/0", "fashion_mnist/small_cnn/ce/1",
                                     "fashion_mnist/small_cnn/ngl/0", "fashion_mnist/small_cnn/ngl/1"]
    assert [r.seed for r in runs] == [5, 6, 5, 6]
    messages = []
    records = training.run_grid(runs, out, strategy="none", verbose=2, log=messages.append)
    # One line per run before and after it, and its epoch line (stdout is no terminal here); the
    # ETA from the first finished epoch on, never nan. How many progress lines (one every 10 s inside
    # an epoch) depends on the machine's speed: they are checked for their form and set aside.
    progress = r"  epoch 1/1: (validation )?step \d+(/\d+)?, \d+ images/s, \d+ s"
    steps = [m for m in messages if re.fullmatch(progress, m)]
    messages = [m for m in messages if m not in steps]
    assert messages[:2] == ["4 runs in the grid, 0 already finished, 4 to train.",
                            "run 1 of 4: fashion_mnist/small_cnn/ce/0 (seed 5); elapsed 0.0 min, ETA after the first epoch"]
    assert messages[2].startswith("  epoch 1/1: ") and " val_accuracy " in messages[2]
    assert re.search(r"; ETA \d+\.\d min$", messages[2]) and re.search(r", ETA \d+\.\d min$", messages[4])
    assert len(messages) == 1 + 3 * 4 and not any("nan" in m for m in messages)
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4 and [json.loads(x)["key"] for x in lines] == [r.key for r in runs]
    for record in records:
        assert record["status"] == "ok" and 0.0 <= record["test_accuracy"] <= 1.0
        assert record["epochs_run"] == 1 and record["config"]["limit_train"] == 256
        assert record["versions"]["keras"].startswith("3.") and record["wall_time_s"] > 0
        run = next(r for r in runs if r.key == record["key"])
        assert record["identity"] == identity(run) and record["run_dir"] == f"runs/{run.directory}"
        assert (out / record["run_dir"] / "history.csv").exists()
        assert (out / record["run_dir"] / "tensorboard").is_dir()
    # The table, recomputed by hand from the records.
    accuracy = {loss: 100 * np.mean([r["test_accuracy"] for r in records if r["loss"] == loss])
                for loss in ("ce", "ngl")}
    change = 100 * (accuracy["ngl"] - accuracy["ce"]) / accuracy["ce"]
    text = report.write(records, out, compare_paper=True)
    assert f"| ce | {accuracy['ce']:.1f} |" in text
    assert f"| ngl | {change:+.2f} | {change:+.2f} |" in text
    assert "| ngl (paper) | +0.07 | +0.07 |" in text  # the paper's mean over the one dataset run
    assert (out / "table.csv").read_text().splitlines()[2].startswith(f"ngl,change_pct,{change:.4f}")
    assert (out / "val_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    # Re-running trains nothing.
    messages = []
    again = training.run_grid(runs, out, strategy="none", verbose=0, log=messages.append)
    assert messages == ["4 runs in the grid, 4 already finished, 0 to train."] and len(again) == 4


@pytest.mark.any_backend
def test_history_csv_counts_epochs_from_1_as_the_console_does(tmp_path):
    history = {"loss": [0.9, 0.5], "accuracy": [0.6, 0.8], "val_accuracy": [0.7]}
    training._write_history_csv(tmp_path / "history.csv", history)
    assert (tmp_path / "history.csv").read_text() == (
        "epoch,loss,accuracy,val_accuracy\n1,0.9,0.6,0.7\n2,0.5,0.8,\n")


def test_table_counts_better_same_worse_and_leaves_diverged_runs_out():
    records = [
        {"dataset": "a", "loss": "ce", "status": "ok", "test_accuracy": 0.80},
        {"dataset": "a", "loss": "ngl", "status": "ok", "test_accuracy": 0.82},
        {"dataset": "b", "loss": "ce", "status": "ok", "test_accuracy": 0.50},
        {"dataset": "b", "loss": "ngl", "status": "ok", "test_accuracy": 0.501},
        {"dataset": "b", "loss": "ngl", "status": "diverged", "test_accuracy": None},
        {"dataset": "a", "loss": "sce", "status": "ok", "test_accuracy": 0.70},
    ]
    result = report.table(records)
    ngl = next(r for r in result["rows"] if r["loss"] == "ngl")
    assert ngl["cells"] == {"a": pytest.approx(2.5), "b": pytest.approx(0.2)}
    assert ngl["counts"] == {"better": 1, "same": 1, "worse": 0}
    assert ngl["mean"] == pytest.approx(1.35)
    sce = next(r for r in result["rows"] if r["loss"] == "sce")
    assert sce["cells"]["a"] == pytest.approx(-12.5) and sce["cells"]["b"] is None
    assert result["diverged"] == {"ngl/b": 1}
    assert "Diverged runs (left out of the means): ngl/b ×1" in report.markdown(result)


@pytest.mark.realdata
def test_a_loss_that_turns_nan_is_recorded_as_diverged_and_the_grid_goes_on(tmp_path):
    runs = plan(config.grid(_grid(tmp_path, runs=1)), CONFIGS,
                         {**TINY, "losses": ["3e38*y*p + p", "ce"]})  # finite per example, inf summed over a batch
    records = training.run_grid(runs, tmp_path / "out", strategy="none", verbose=0, log=lambda *_: None)
    assert [r["status"] for r in records] == ["diverged", "ok"]
    assert records[0]["test_accuracy"] is None and records[1]["test_accuracy"] > 0


@pytest.mark.realdata
def test_mirrored_strategy_on_two_logical_cpus_trains_and_reports(tmp_path):
    runs = plan(config.grid(_grid(tmp_path, runs=1, losses=["ngl"])), CONFIGS, TINY)
    records = training.run_grid(runs, tmp_path / "out", strategy="mirrored", verbose=0,
                                log=lambda *_: None)
    assert records[0]["replicas"] == 2 and records[0]["status"] == "ok"
    assert 0.0 <= records[0]["test_accuracy"] <= 1.0


def _record(key, **extra):
    dataset, model, loss, run = key.split("/")
    return {"key": key, "dataset": dataset, "model": model, "loss": loss, "run": int(run), "status": "ok",
            "test_accuracy": 0.5, "history": {}, **extra}


def test_a_truncated_last_line_is_skipped_by_readers_and_removed_by_the_next_append(tmp_path):
    path = tmp_path / "runs.jsonl"
    a, b, c = (json.dumps(_record(f"d/m/l/{k}")) for k in range(3))
    text = f"{a}\n{b}\n{c[:25]}"
    path.write_text(text)
    with pytest.warns(UserWarning, match="skipping a truncated last line"):
        assert [r["run"] for r in read_records(path)] == [0, 1]
    assert path.read_text() == text  # a reader never writes
    with pytest.warns(UserWarning, match="removing a truncated last line"):
        append_record(path, _record("d/m/l/2"))
    assert path.read_text() == f"{a}\n{b}\n{json.dumps(_record('d/m/l/2'))}\n"
    assert not (tmp_path / "runs.jsonl.tmp").exists()
    # A last record that lost only its newline is kept, and the next record goes on a new line.
    path.write_text(f"{a}\n{b}")
    append_record(path, _record("d/m/l/2"))
    assert [r["run"] for r in read_records(path)] == [0, 1, 2]


def test_a_failed_repair_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    text = json.dumps(_record("d/m/l/0")) + '\n{"key": "d/m/l/1", "sta'
    path.write_text(text)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.warns(UserWarning), pytest.raises(OSError, match="no space left on device writing .*runs.jsonl"):
        append_record(path, _record("d/m/l/1"))
    assert path.read_text() == text


@pytest.mark.parametrize("content,message", [
    ("GOOD\nnot json\nGOOD\n", "line 2 is not valid JSON; the file is corrupt"),
    ("GOOD\n3\n", "line 2 is not a JSON object; got '3'"),
    ('GOOD\n{"foo": 1}\n', "line 2 lacks the keys ['key', 'dataset', 'model', 'loss', 'run', 'status', "
                     "'test_accuracy', 'history']"),
])
def test_a_corrupt_records_file_is_named_with_its_line(tmp_path, content, message):
    path = tmp_path / "runs.jsonl"
    path.write_text(content.replace("GOOD", json.dumps(_record("d/m/l/0"))))
    with pytest.raises(ValueError) as error:
        read_records(path)
    assert message in str(error.value) and str(path) in str(error.value)


def _report(out):
    return subprocess.run([sys.executable, str(ROOT / "train_small.py"), "report", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_report_neither_writes_nor_tracebacks_on_damaged_records(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    text = json.dumps(_record("d/m/ce/0")) + "\n" + json.dumps({"foo": 1}) + "\n"
    (out / "runs.jsonl").write_text(text)
    done = _report(out)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {out / 'runs.jsonl'}: line 2 lacks the keys")
    assert (out / "runs.jsonl").read_text() == text
    (tmp_path / "afile").write_text("x")
    done = _report(tmp_path / "afile")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == \
        f"error: {str(tmp_path / 'afile')!r} is a file; give the grid's output directory."


def test_report_refuses_a_directory_that_mixes_settings(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text(
        json.dumps(_record("fashion_mnist/small_cnn/ce/0", config={"epochs": 3})) + "\n"
        + json.dumps(_record("fashion_mnist/small_cnn/ngl/0", config={"epochs": 2})) + "\n")
    done = _report(out)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("would mix settings for dataset 'fashion_mnist': fashion_mnist/small_cnn/ce/0 and "
            "fashion_mnist/small_cnn/ngl/0 differ in config.epochs (3 vs 2)") in done.stderr


def test_runs_of_another_backend_are_neither_reused_nor_tabled_with_this_ones(tmp_path):
    runs = _plan(tmp_path)
    here = keras.backend.backend()
    other = "jax" if here == "tensorflow" else "tensorflow"
    record = {**_record(runs[0].key, config=runs[0].settings.to_json(), dtype_policy="float32"), "identity": identity(runs[0]),
              "backend": other}
    with pytest.raises(ValueError, match=re.escape(f'differ in backend ("{other}" vs "{here}")')):
        finished_keys(runs, [record], tmp_path / "runs.jsonl")
    assert finished_keys(runs, [{**record, "backend": here}],
                                  tmp_path / "runs.jsonl") == {runs[0].key}
    # Records written before the JAX backend existed say no backend: they are TensorFlow's.
    assert record_backend({"versions": {"python": "3.11"}}) == "tensorflow"


def _plan(tmp_path, **overrides):
    return plan(config.grid(_grid(tmp_path, runs=1)), CONFIGS, {**TINY, **overrides})


def _finished(runs):
    return [_record(r.key, identity=identity(r), config=r.settings.to_json(), weights=r.weights,
                    dtype_policy="float32") for r in runs]


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    runs = _plan(tmp_path)
    path = tmp_path / "runs.jsonl"
    assert finished_keys(runs, _finished(runs), path) == {r.key for r in runs}
    for overrides, difference in (({"epochs": 2}, "settings.epochs (1 vs 2)"),
                                  ({"limit_train": 512}, "settings.limit_train (256 vs 512)")):
        with pytest.raises(ValueError) as error:
            finished_keys(_plan(tmp_path, **overrides), _finished(runs), path)
        assert (f"{path} already holds fashion_mnist/small_cnn/ce/0 trained with other settings: "
                f"{difference} (there vs now)") in str(error.value)
    with pytest.raises(ValueError, match=r"loss.config.alpha \(2.4092 vs 3.0\)"):
        finished_keys(_plan(tmp_path, losses=["ce", {"name": "ngl", "alpha": 3.0}]),
                               _finished(runs), path)
    with pytest.raises(ValueError, match=r'dtype_policy \("float32" vs "mixed_float16"\)'):
        finished_keys(runs, _finished(runs), path, mixed_precision=True)
    with pytest.raises(ValueError, match=r'dtype_policy \("float32" vs "mixed_bfloat16"\)'):
        finished_keys(runs, _finished(runs), path, mixed_precision="mixed_bfloat16")
    # Another loss with other settings in the same directory would mix settings in its table.
    with pytest.raises(ValueError, match=r"would mix settings for dataset 'fashion_mnist'.*config.epochs \(1 vs 2\)"):
        finished_keys(_plan(tmp_path, epochs=2, losses=["sce"]), _finished(runs), path)
    legacy = [{k: v for k, v in record.items() if k != "identity"} for record in _finished(runs)]
    with pytest.raises(ValueError, match="without the settings it was trained with"):
        finished_keys(runs, legacy, path)


def test_run_directories_are_short_stable_and_distinct_for_long_formulas(tmp_path):
    long = " + ".join(["(exp(2.4092 - p*(1+y)) - cos(cos(sin(p))))"] * 8)
    runs = _plan(tmp_path, losses=[long, long + " + p*y", "ngl"])
    names = [r.directory for r in runs]
    assert len(set(names)) == 3 and all(len(name) <= 90 for name in names)
    assert names[2].startswith("fashion_mnist__small_cnn__ngl__0__") and len(names[2].rsplit("__", 1)[1]) == 10
    assert names[0].startswith("fashion_mnist__small_cnn__exp_2.4092_-_p_1_y_-_cos_cos_sin__0__")
    assert names == [r.directory for r in _plan(tmp_path, losses=[long, long + " + p*y", "ngl"])]


def test_every_loss_of_a_grid_is_parsed_before_anything_trains(tmp_path):
    with pytest.raises(ValueError, match=r"formula 'exp\(p\*y' does not parse at position 7"):
        _plan(tmp_path, losses=["ce", "exp(p*y"])
    with pytest.raises(ValueError, match="nests deeper than 100 levels"):
        _plan(tmp_path, losses=["ce", "exp(" * 150 + "p*y" + ")" * 150])


def test_the_sgd_branch_builds_sgd_with_the_configured_rate_and_momentum():
    settings = config.dataset_settings("fashion_mnist", CONFIGS,
                                       {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.8}})
    optimizer = recipe.optimizer(settings)
    assert type(optimizer).__name__ == "SGD"
    assert float(optimizer.learning_rate) == pytest.approx(0.05) and optimizer.momentum == pytest.approx(0.8)
    adam = recipe.optimizer(config.dataset_settings("fashion_mnist", CONFIGS))
    assert type(adam).__name__ == "Adam" and float(adam.learning_rate) == pytest.approx(1e-3)


_OK = "datasets: [fashion_mnist]\nmodels: [small_cnn]\n"


def _settings(text):
    return _OK + "losses: [ce]\nsettings: {fashion_mnist: {%s}}\n" % text


@pytest.mark.parametrize("grid_text,message", [
    ("datasets: [fashion_mnist\n", "is not valid YAML at line 2"),
    ("datasets: [fashion_mnist]\nepochz: 3\n", "unknown key 'epochz'; accepted keys: datasets, models"),
    ("datasets: fashion_mnist\n", "'datasets' must be a list of strings; got 'fashion_mnist'"),
    ("datasets: [mnistt]\nmodels: [small_cnn]\nlosses: [ce]\n", "unknown dataset 'mnistt': not one of the paper's"),
    ("datasets: [fashion_mnist]\nmodels: [vgg]\nlosses: [ce]\n", "unknown model 'vgg'; known models: inceptionv3"),
    ("datasets: [fashion_mnist]\nmodels: [small_cnn]\nlosses: [crossentropy]\n", "unknown loss 'crossentropy'"),
    ("datasets: [fashion_mnist]\nmodels: [inceptionv3]\nlosses: [ce]\nsettings: {fashion_mnist: {image_size: 28}}\n",
     "image size 28 is below inceptionv3's minimum of 75 px"),
    ("datasets: [fashion_mnist]\nmodels: [small_cnn]\nlosses: [ce]\nsettings: {fashion_mnist: {epochs: two}}\n",
     "settings for fashion_mnist: 'epochs' must be an integer; got 'two'"),
    ("datasets: [fashion_mnist]\nmodels: [small_cnn]\nlosses: [ce]\nsettings: {fashion_mnist: {optimizer: {nam: sgd}}}\n",
     "optimizer: unknown key 'nam'; accepted keys: name, learning_rate, momentum"),
    ("datasets: [fashion_mnist]\nmodels: [small_cnn]\nlosses: [{name: sce, gamma: 2}]\n",
     "loss 'sce' does not accept ['gamma']"),
    ("", "is empty: it must hold a mapping of settings"),
    ("# only a comment\n", "is empty: it must hold a mapping of settings"),
    ("datasets: [fashion_mnist]\nmodels: [small_cnn]\n", "grid: missing keys ['losses']"),
    (_OK + "losses: []\n", "'losses' must be a non-empty list; got []"),
    (_OK + "losses: [ce]\nlimit_train: -5\n", "'limit_train' must be an integer >= 1; got -5"),
    (_OK + "losses: [ce]\nlimit_train: 0\n", "'limit_train' must be an integer >= 1; got 0"),
    (_OK + "losses: [ce]\nruns: 0\n", "'runs' must be an integer >= 1; got 0"),
    (_OK + "losses: [ce]\nlimit_train: 1000000\n",
     "limit_train 1000000 exceeds the 54000 images of fashion_mnist's training split 'train[:90%]'"),
    (_OK + "losses: [ce]\nseed: -1\n", "'seed' must be an integer in [0, 2**31); got -1"),
    (_OK + "losses: [ce]\nstrategy: bogus\n", "'strategy' must be one of auto, mirrored, multiworker, none"),
    (_OK + "losses: [ce]\njit_compile: maybe\n", "'jit_compile' must be auto, true or false; got 'maybe'"),
    (_OK + "losses: [{name: ngl, alpha: .nan}]\n", "alpha must be a finite number; got nan"),
    (_OK + "losses: [{name: ngl, from_logits: 'no'}]\n", "from_logits must be true or false; got 'no'"),
    (_OK + "losses: [{name: anyloss, reduction: none}]\n", "reduction 'none' cannot apply to AnyLoss"),
    (_OK + "losses: [ce]\nweights: imagenet\n", "model 'small_cnn' has no pretrained weights; use weights: null"),
    ("datasets: [fashion_mnist]\nmodels: [resnet50]\nlosses: [ce]\nweights: /nonexistent.h5\n",
     "weights must be null, 'imagenet' or a weights file; '/nonexistent.h5' is none of them"),
    (_OK + "losses: [ce]\nsettings: {fashion_mnist: [1]}\n",
     "'settings' must be a mapping from dataset name to a mapping of its settings; got {'fashion_mnist': [1]}"),
    (_settings("batch_size: 0"), "settings for fashion_mnist: 'batch_size' must be an integer >= 1; got 0"),
    (_settings("epochs: 0"), "'epochs' must be an integer >= 1; got 0"),
    (_settings("image_size: -28"), "'image_size' must be an integer >= 1; got -28"),
    (_settings("optimizer: {learning_rate: -1}"),
     "settings for fashion_mnist: optimizer: 'learning_rate' must be a finite number > 0; got -1"),
    (_settings("optimizer: {learning_rate: .nan}"), "'learning_rate' must be a finite number > 0; got nan"),
    (_settings("optimizer: {name: sgd, momentum: 1.5}"), "'momentum' must be in [0, 1); got 1.5"),
    (_settings("optimizer: {name: rmsprop}"), "'name' must be one of adam, sgd, adamw; got 'rmsprop'"),
    (_settings("reduce_lr: {factor: 2}"), "reduce_lr: 'factor' must be in (0, 1); got 2"),
    (_settings("reduce_lr: {patience: -1}"), "'patience' must be an integer >= 0; got -1"),
    (_settings("reduce_lr: {monitor: val_acc}"),
     "'monitor' must be one of val_accuracy, val_loss, accuracy, loss; got 'val_acc'"),
    (_settings("augmentation: {zoom: 1.5}"), "augmentation zoom must lie in [0, 1); got 1.5"),
    (_settings("splits: {train: bogus}"), "dataset 'fashion_mnist' has no split 'bogus'"),
    (_settings("splits: {train: 'train[:150%]'}"), "split 'train[:150%]' of dataset 'fashion_mnist' selects no rows"),
    (_settings("splits: {train: train}"),
     "splits train 'train' and validation 'train[90%:]' overlap: the same images would be used for both"),
])
def test_bad_configs_are_rejected_with_the_value_named(tmp_path, grid_text, message, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(grid_text)
    with pytest.raises(ValueError) as error:
        train_small.main(["--config", str(path), "--out", str(tmp_path / "o")])
    assert message in str(error.value)


def test_cli_prints_one_line_errors_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "train_small.py"), "--losses", "nope", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown loss 'nope'; known losses: anyloss")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("where,message", [
    ("afile", "is a file; give a directory."),
    ("/proc/ngl-out", "cannot be written: No such file or directory."),
])
def test_an_output_directory_that_is_a_file_or_unwritable_is_refused(tmp_path, where, message):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / where
    with pytest.raises(ValueError) as error:
        train_small.main(["--config", str(_grid(tmp_path)), "--out", str(out)])
    assert str(error.value) == f"output directory {str(out)!r} {message}"


def test_offline_dataset_error_names_the_dataset_before_the_grid_starts(tmp_path):
    runs = plan(config.grid(_grid(tmp_path, datasets=["cifar10"], settings={})), CONFIGS,
                         {**TINY, "models": ["small_cnn"]})
    messages = []
    with pytest.raises(ValueError, match=r"dataset 'cifar10' \(tfds 'cifar10'\) is not available offline"):
        training.run_grid(runs[:1], tmp_path / "out", strategy="none", data_dir=str(tmp_path / "none"),
                          verbose=0, log=messages.append)
    assert messages == []


@pytest.mark.realdata
def test_absent_imagenet_weights_are_reported_before_the_grid_starts_naming_the_flag(tmp_path, monkeypatch, capsys):
    from ngl_keras import models

    def offline(input_shape, weights):  # what Keras does without the file and without internet
        if weights is not None:
            raise OSError("URL fetch failure: no network")
        return original(input_shape, weights)

    original = models.MODELS["resnet50"].build_backbone
    monkeypatch.setitem(models.MODELS, "resnet50", dataclasses.replace(models.MODELS["resnet50"],
                                                                        build_backbone=offline))
    grid = _grid(tmp_path, models=["resnet50"], settings={"fashion_mnist": {"image_size": 32, "batch_size": 64}})
    with pytest.raises(ValueError) as error:
        train_small.main(["--config", str(grid), "--weights", "imagenet", "--epochs", "1",
                          "--out", str(tmp_path / "o")])
    assert str(error.value).startswith("'imagenet' weights for resnet50 cannot be loaded offline: Keras expects")
    assert "(OSError); place it there, or train from scratch: --weights none (train_small.py)" in str(error.value)
    assert capsys.readouterr().out == ""  # no grid planned, nothing trained


@pytest.mark.slow
@pytest.mark.realdata
def test_sigkill_mid_grid_then_rerun_keeps_every_run_exactly_once(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "train_small.py"), "--config", str(_grid(tmp_path, runs=2)),
               "--out", str(out), "--epochs", "1", "--limit-train", "256", "--strategy", "none", "--quiet"]
    path = out / "runs.jsonl"
    finished = len(kill_when_lines(command, path, 1, 240))
    assert 1 <= finished < 4
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert sorted(keys) == sorted(f"fashion_mnist/small_cnn/{loss}/{run}" for loss in ("ce", "ngl")
                                  for run in (0, 1))


class _Interrupted(Exception):
    pass


def _cut(path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


@pytest.mark.any_backend
@pytest.mark.parametrize("damage,fault", [
    (lambda backup: _cut(backup / "training_metadata.json"), r"training_metadata.json is empty or cut \(JSONDecodeError\)"),
    (lambda backup: (backup / "training_metadata.json").write_text(""), r"training_metadata.json is empty or cut"),
    (lambda backup: _cut(backup / "latest.weights.h5"), r"latest.weights.h5 cannot be read \("),
    (lambda backup: (backup / "latest.weights.h5").unlink(), r"latest.weights.h5 is missing"),
])
def test_a_backup_cut_by_a_kill_while_keras_wrote_it_is_set_aside_and_the_run_starts_again(tmp_path, monkeypatch,
                                                                                          damage, fault):
    """Keras writes its BackupAndRestore files in place: a kill during that write leaves them cut, and
    a resume would fail every time. The run starts again from epoch 0 instead, with one warning."""
    import ngl_keras
    from tests.test_own_data import TEST, TRAIN, VALIDATION, small_model

    schedule = recipe.schedule_callbacks

    class InterruptAfterTheFirstBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # before the backup of this epoch is written
            if epoch == 1:
                raise _Interrupted()

    monkeypatch.setattr(recipe, "schedule_callbacks", lambda settings: schedule(settings) + [InterruptAfterTheFirstBackup()])
    call = dict(epochs=3, batch_size=16, runs=1, learning_rate=0.05, out=tmp_path / "out", strategy="none",
                log=lambda *_: None)
    with pytest.raises(_Interrupted):
        ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, **call)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    backup = run_dir / BACKUP_DIR
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    first_epoch = json.loads((run_dir / EPOCH_LOG).read_text().splitlines()[0])["logs"]["loss"]
    damage(backup)
    left = {p.name: p.read_bytes() for p in backup.iterdir()}
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)

    with pytest.warns(UserWarning) as caught:
        (record,) = ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, **call).records
    said = [str(w.message) for w in caught if "backup" in str(w.message)]
    assert len(said) == 1 and re.fullmatch(
        re.escape(f"{run_dir}: its backup cannot be resumed (") + fault + r".*: a kill while Keras wrote it\); "
        r"moved to backup\.unreadable, the run starts again from epoch 0\.", said[0]), said
    assert record["resumed_from_epoch"] is None and record["epochs_run"] == 3 and record["status"] == "ok"
    assert len(record["epoch_seconds"]) == 3  # all three trained in this process
    assert record["history"]["loss"][0] == pytest.approx(first_epoch)  # the same seed, from the start
    aside = run_dir / "backup.unreadable"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == left  # kept as it was, not deleted
    assert not backup.exists() and not (run_dir / EPOCH_LOG).exists()


def _any_size_model(num_classes):
    """A model for images of any size (the image size is one of the changes)."""
    return keras.Sequential([keras.Input((None, None, 1)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(num_classes, activation="softmax")])


def _wider_model(num_classes):
    """_any_size_model with a hidden layer: the same function name, another architecture."""
    return keras.Sequential([keras.Input((None, None, 1)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(8), keras.layers.Dense(num_classes, activation="softmax")])


_wider_model.__name__, _wider_model.__qualname__ = _any_size_model.__name__, _any_size_model.__qualname__


@pytest.mark.any_backend
@pytest.mark.parametrize("change,differs", [
    ({"learning_rate": 0.01}, r"settings\.optimizer\.learning_rate \(0\.05 vs 0\.01\)"),
    ({"settings": {"image_size": 5}}, r"settings\.image_size \(6 vs 5\)"),
    ({"losses": [{"name": "ngl", "label": "loss", "alpha": 3.0}]}, r"loss\.config\.alpha \(2\.0 vs 3\.0\)"),
    ({"model_fn": _wider_model}, r"model_function\.config_sha256 \(\"[0-9a-f]{16}\" vs \"[0-9a-f]{16}\"\)"),
])
def test_a_backup_of_other_settings_is_never_resumed_but_set_aside_and_the_run_trains_afresh(tmp_path, monkeypatch,
                                                                                             change, differs):
    """A re-run with a changed setting once resumed the old backup: it trained on with the old
    weights and optimizer (its learning rate too) and recorded the new settings."""
    import ngl_keras
    from tests.test_own_data import TEST, TRAIN, VALIDATION

    schedule, make_optimizer, optimizers = recipe.schedule_callbacks, recipe.optimizer, []

    class InterruptAfterTheFirstBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # before the backup of this epoch is written
            if epoch == 1:
                raise _Interrupted()

    monkeypatch.setattr(recipe, "schedule_callbacks", lambda settings: schedule(settings) + [InterruptAfterTheFirstBackup()])
    monkeypatch.setattr(recipe, "optimizer", lambda settings, *rest: optimizers.append(make_optimizer(settings, *rest))
                        or optimizers[-1])
    call = dict(losses=[{"name": "ngl", "label": "loss", "alpha": 2.0}], model_fn=_any_size_model, epochs=3,
                batch_size=16, runs=1, learning_rate=0.05, out=tmp_path / "out", strategy="none", log=lambda *_: None)
    with pytest.raises(_Interrupted):
        ngl_keras.evaluate(train=TRAIN, validation=VALIDATION, test=TEST, **call)
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    left = {p.name: p.read_bytes() for p in (run_dir / BACKUP_DIR).iterdir()}
    assert json.loads(left["training_metadata.json"])["epoch"] == 1
    old_identity = json.loads((run_dir / "identity.json").read_text())
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)
    call.update(change)

    with pytest.warns(UserWarning) as caught:
        (record,) = ngl_keras.evaluate(train=TRAIN, validation=VALIDATION, test=TEST, **call).records
    said = [str(w.message) for w in caught if "backup" in str(w.message)]
    assert len(said) == 1 and re.fullmatch(
        re.escape(f"{run_dir}: its backup was trained with other settings: ") + differs +
        re.escape(" (backup vs now); moved to backup.stale, the run starts again from epoch 0 with the new "
                  "settings."), said[0]), said
    assert record["resumed_from_epoch"] is None and record["epochs_run"] == 3 and len(record["epoch_seconds"]) == 3
    assert record["identity"] != old_identity
    learning_rate = call["learning_rate"]
    assert float(optimizers[-1].learning_rate) == pytest.approx(learning_rate)  # not the backup's
    assert int(optimizers[-1].iterations) == 3 * 4  # 64 examples in batches of 16: no step restored
    aside = run_dir / "backup.stale"
    assert {p.name: p.read_bytes() for p in aside.iterdir() if p.name in left} == left  # kept, not deleted
    assert json.loads((aside / "identity.json").read_text()) == old_identity
    assert not (run_dir / BACKUP_DIR).exists()


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_writes_a_line_every_ten_seconds_and_each_epoch_with_the_grids_eta():
    clock, lines = _Clock(), []
    grid = GridClock(4, clock=clock)  # 4 epochs in the grid
    assert grid.eta() == "ETA after the first epoch"
    progress = Progress(32, grid, every=10.0, log=lines.append, clock=clock)
    progress.set_params({"epochs": 2, "steps": 100})
    progress.on_epoch_begin(0)
    for batch in range(10):  # 3 s per step: lines at 12 s (4 steps done) and 24 s (8 steps done)
        progress.on_train_batch_begin(batch)
        clock.now += 3.0
    progress.on_test_begin()
    for batch in range(3):  # validation from 30 s, 5 s per step: a line at 35 s (1 step done, 32 images in 5 s)
        progress.on_test_batch_begin(batch)
        clock.now += 5.0
    progress.on_epoch_end(0, {"loss": 0.51234, "accuracy": 0.75, "val_accuracy": 0.8})
    assert lines == ["  epoch 1/2: step 4/100, 11 images/s, 12 s",
                     "  epoch 1/2: step 8/100, 11 images/s, 24 s",
                     "  epoch 1/2: validation step 1, 6 images/s, 35 s",
                     "  epoch 1/2: 45 s, loss 0.5123, accuracy 0.75, val_accuracy 0.8; ETA 2.2 min"]
    assert grid.eta() == "ETA 2.2 min"  # 45 s per epoch, 3 epochs left
    quiet = Progress(32, grid, every=10.0, periodic=False, log=lines.append, clock=clock)
    quiet.set_params({"epochs": 2, "steps": 100})
    quiet.on_epoch_begin(1)
    for batch in range(10):
        quiet.on_train_batch_begin(batch)
        clock.now += 3.0
    quiet.on_epoch_end(1, {"loss": 0.4})
    assert lines[4:] == []  # held back: Keras's progress bar has yet to finish its line
    quiet.on_train_end()
    assert lines[4:] == ["  epoch 2/2 done; ETA 1.2 min"]  # 75 s for 2 epochs, 2 left


# A full disk


def _full_disk(monkeypatch, name):
    """Make every fsync of a file called `name` fail as a full disk does."""
    fsync = files.os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full)


@pytest.mark.any_backend
@pytest.mark.parametrize("old_table", [True, False])
def test_report_on_a_full_disk_keeps_the_old_table_and_says_which_file_in_one_line(tmp_path, monkeypatch, capsys,
                                                                                   old_table):
    """`report` on a full disk once left a 0-byte table.md."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text(json.dumps(_record("d/m/ce/0")) + "\n")
    if old_table:
        (out / "table.md").write_text("the old table\n")
    _full_disk(monkeypatch, "table.md.tmp")
    with pytest.raises(SystemExit) as exit_:
        files.run_cli(lambda: train_small.main(["report", str(out)]))
    assert exit_.value.code == 1
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(re.escape(f"error: no space left on device writing {out / 'table.md'} (") +
                        r"\d+ bytes needed, \d+ free\); finished results are kept: free space and run the same "
                        r"command again to resume\.", line), line
    assert [p.name for p in out.iterdir() if p.name.startswith("table.md")] == (["table.md"] if old_table else [])
    if old_table:
        assert (out / "table.md").read_text() == "the old table\n"


class ResourceExhaustedError(Exception):
    """TensorFlow's error for a checkpoint or TensorBoard write on a full disk (recognised by its message)."""


@pytest.mark.any_backend
@pytest.mark.parametrize("fault", [
    ResourceExhaustedError("tensorboard/train/events.out.tfevents; No space left on device [Op:WriteSummary]"),
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
])
def test_a_full_disk_while_training_is_one_line_keeps_the_records_and_the_run_resumes(tmp_path, monkeypatch, fault):
    import ngl_keras
    from tests.test_own_data import TEST, TRAIN, VALIDATION, small_model

    started, schedule = [], recipe.schedule_callbacks

    class DiskFullInTheSecondRun(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if len(started) == 2 and epoch == 1:
                raise fault

    monkeypatch.setattr(recipe, "schedule_callbacks",
                        lambda settings: started.append(1) or schedule(settings) + [DiskFullInTheSecondRun()])
    out = tmp_path / "out"
    call = dict(epochs=3, batch_size=16, runs=2, learning_rate=0.05, out=out, strategy="none", log=lambda *_: None)
    with pytest.raises(files.DiskFull) as error:
        ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, **call)
    run_dir = next((out / "runs").glob("*__1__*"))
    assert str(error.value) == (f"no space left on device writing {run_dir}; finished results are kept: free "
                                "space and run the same command again to resume.")
    assert [r["key"] for r in read_records(out / "runs.jsonl")] == ["arrays/small_model/ce/0"]
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)
    records = ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, **call).records
    assert [r["resumed_from_epoch"] for r in records] == [None, 1]


@pytest.mark.any_backend
def test_a_record_that_meets_a_full_disk_leaves_no_part_of_its_line(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    files.append_json_line(path, {"key": "a"})
    _full_disk(monkeypatch, "runs.jsonl")
    with pytest.raises(files.DiskFull, match=r"writing .*runs\.jsonl \(\d+ bytes needed"):
        files.append_json_line(path, {"key": "b" * 1000})
    assert path.read_text() == '{"key": "a"}\n'
