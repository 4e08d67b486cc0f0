"""The evaluation grid: records, resume, divergence, the table, strategies, config errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import train_small
from ngl_keras import config, report, training
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
    runs = training.plan(config.grid(_grid(tmp_path)), CONFIGS, TINY)
    assert [r.key for r in runs] == ["fashion_mnist/small_cnn/ce/0", "fashion_mnist/small_cnn/ce/1",
                                     "fashion_mnist/small_cnn/ngl/0", "fashion_mnist/small_cnn/ngl/1"]
    assert [r.seed for r in runs] == [5, 6, 5, 6]
    records = training.run_grid(runs, out, strategy="none", verbose=0, log=lambda *_: None)
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4 and [json.loads(x)["key"] for x in lines] == [r.key for r in runs]
    for record in records:
        assert record["status"] == "ok" and 0.0 <= record["test_accuracy"] <= 1.0
        assert record["epochs_run"] == 1 and record["config"]["limit_train"] == 256
        assert record["versions"]["keras"].startswith("3.") and record["wall_time_s"] > 0
        assert (out / "runs" / record["key"].replace("/", "__") / "history.csv").exists()
        assert (out / "runs" / record["key"].replace("/", "__") / "tensorboard").is_dir()
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
    runs = training.plan(config.grid(_grid(tmp_path, runs=1)), CONFIGS,
                         {**TINY, "losses": ["exp(1000*p) * y + p", "ce"]})
    records = training.run_grid(runs, tmp_path / "out", strategy="none", verbose=0, log=lambda *_: None)
    assert [r["status"] for r in records] == ["diverged", "ok"]
    assert records[0]["test_accuracy"] is None and records[1]["test_accuracy"] > 0


@pytest.mark.realdata
def test_mirrored_strategy_on_two_logical_cpus_trains_and_reports(tmp_path):
    runs = training.plan(config.grid(_grid(tmp_path, runs=1, losses=["ngl"])), CONFIGS, TINY)
    records = training.run_grid(runs, tmp_path / "out", strategy="mirrored", verbose=0,
                                log=lambda *_: None)
    assert records[0]["replicas"] == 2 and records[0]["status"] == "ok"
    assert 0.0 <= records[0]["test_accuracy"] <= 1.0


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}\n{"key": "c", "test_acc')
    with pytest.warns(UserWarning, match="dropping a truncated last line"):
        assert [r["key"] for r in training.read_records(path)] == ["a", "b"]
    training.append_record(path, {"key": "c"})
    assert [r["key"] for r in training.read_records(path)] == ["a", "b", "c"]
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        training.read_records(path)


@pytest.mark.parametrize("grid_text,message", [
    ("datasets: [fashion_mnist\n", "is not valid YAML at line 2"),
    ("datasets: [fashion_mnist]\nepochz: 3\n", "unknown key 'epochz'; accepted keys: datasets, models"),
    ("datasets: fashion_mnist\n", "'datasets' must be a list of a string; got 'fashion_mnist'"),
    ("datasets: [mnist]\nmodels: [small_cnn]\nlosses: [ce]\n", "unknown dataset 'mnist'; known datasets"),
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


def test_offline_dataset_error_names_the_dataset(tmp_path):
    runs = training.plan(config.grid(_grid(tmp_path, datasets=["cifar10"], settings={})), CONFIGS,
                         {**TINY, "models": ["small_cnn"]})
    with pytest.raises(ValueError, match=r"dataset 'cifar10' \(tfds 'cifar10'\) is not available offline"):
        training.run_grid(runs[:1], tmp_path / "out", strategy="none", data_dir=str(tmp_path / "none"),
                          verbose=0, log=lambda *_: None)


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
