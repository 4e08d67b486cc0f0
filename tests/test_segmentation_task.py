"""A segmentation grid through the same grid, training path, records, resume and report: a tiny
VOC-layout tree, the small U-Net, one epoch; and bad input refused before anything trains."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import yaml

import train_small
from ngl_keras import config, recipe, report, segmentation_data, segmentation_metrics, training
from ngl_keras.grid import plan
from ngl_keras.resume import BACKUP_DIR
from tests.paths import CONFIGS
from tests.test_segmentation_data import scene, write_voc

pytestmark = pytest.mark.any_backend

SETTINGS = {"epochs": 1, "batch_size": 2, "crop_size": 16, "scales": [1.0], "eval_batch_size": 1,
            "iterations_per_epoch": None, "splits": {"train": "train", "validation": "val", "test": "val"},
            "optimizer": {"name": "adam", "learning_rate": 0.01, "weight_decay": 0.0, "poly_power": None},
            "reduce_lr": {"monitor": "val_miou", "factor": 0.5, "patience": 1, "min_lr": 1.0e-5}}


SETTINGS_MEAN = (122.675, 116.669, 104.008)  # configs/datasets/voc2012.yaml's


def _grid(tmp_path, losses=("ce", "ngl"), **settings):
    root = write_voc(tmp_path / "VOCdevkit", ids=("a", "b", "c", "d"), val=("c", "d"))
    grid = {"task": "segmentation", "datasets": ["voc2012"], "models": ["unet_small"], "losses": list(losses),
            "runs": 1, "seed": 3, "data_dir": str(root), "settings": {"voc2012": {**SETTINGS, **settings}}}
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path, root


def test_a_segmentation_grid_records_the_reference_scores_of_the_models_predictions(tmp_path, monkeypatch):
    path, root = _grid(tmp_path)
    runs = plan(config.check_grid(config.grid(path)), CONFIGS)
    assert [r.key for r in runs] == ["voc2012/unet_small/ce/0", "voc2012/unet_small/ngl/0"]
    assert runs[0].loss.kwargs == {"ignore_class": 255} and runs[0].task == "segmentation"
    trained = []  # each run's model once trained, to predict the val images again here

    class KeepModel(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            trained.append(self.model)

    schedule = recipe.schedule_callbacks
    monkeypatch.setattr(recipe, "schedule_callbacks", lambda s: schedule(s) + [KeepModel()])
    out = tmp_path / "out"
    train_small.main(["--config", str(path), "--out", str(out), "--quiet", "--strategy", "none"])
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["segmentation"] * 2 and records[0]["identity"]["task"] == "segmentation"
    assert len(records[0]["history"]["val_miou"]) == 1 and records[0]["test_accuracy"] is None

    # The record's scores are segmentation_metrics' on the model's predictions of the val images,
    # read here by the reader itself and padded to the model's multiple of 8 (the padding void).
    val = segmentation_data.voc(root, "val")
    for record, model in zip(records, trained):
        matrix = segmentation_metrics.ConfusionMatrix(21)
        for index in range(len(val)):
            image, label = val.read(index)
            image, label = segmentation_data.pad_to_multiple(image, label, 8, SETTINGS_MEAN)
            assert image.shape == (24, 24, 3) and (label[20:] == 255).all()  # 20 rows padded to 24
            matrix.update(label[None], model.predict(image[None].astype("float32"), verbose=0))
        expected = matrix.scores()
        for name in ("miou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou"):
            assert record[name] == pytest.approx(expected[name], abs=1e-9), name
    table = (out / "table.md").read_text()
    assert table.startswith("| loss | voc2012 | Mean |") and (out / "val_miou.png").stat().st_size > 0
    assert f"| ce | {100 * records[0]['miou']:.1f} |" in table

    text = report.write(records, out, compare_paper=True)
    assert "| voc2012 | unet_small | ce | 1 |" in text and "paper mean IoU %" in text


def test_val_miou_metric_is_the_reference_mean_iou():
    labels = np.array([[[0, 1, 255], [1, 1, 2]]])
    scores = np.eye(3)[[[[0, 1, 0], [2, 1, 1]]]].astype("float32")  # class 2 predicted once, present once
    metric = segmentation_metrics.MeanIoU(3)
    metric.update_state(labels, scores)
    reference = segmentation_metrics.ConfusionMatrix(3).update(labels, scores).scores()["miou"]
    assert float(metric.result()) == pytest.approx(reference)


class _Interrupted(Exception):
    pass


def test_a_segmentation_run_resumes_inside_the_run(tmp_path, monkeypatch):
    path, _ = _grid(tmp_path, losses=("ce",), epochs=2)
    runs = plan(config.check_grid(config.grid(path)), CONFIGS)
    out = tmp_path / "out"
    schedule = recipe.schedule_callbacks

    class InterruptAfterTheFirstEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise _Interrupted()

    monkeypatch.setattr(recipe, "schedule_callbacks", lambda s: schedule(s) + [InterruptAfterTheFirstEpoch()])
    with pytest.raises(_Interrupted):
        training.run_grid(runs, out, strategy="none", data_dir=str(tmp_path / "VOCdevkit"), verbose=0,
                          log=lambda *_: None)
    (run_dir,) = (out / "runs").iterdir()
    assert (run_dir / BACKUP_DIR).exists()
    first = json.loads((run_dir / "epochs.jsonl").read_text().splitlines()[0])["logs"]
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)
    (record,) = training.run_grid(runs, out, strategy="none", data_dir=str(tmp_path / "VOCdevkit"), verbose=0,
                                  log=lambda *_: None)
    assert record["resumed_from_epoch"] == 1 and record["epochs_run"] == 2
    assert record["history"]["loss"][0] == pytest.approx(first["loss"])
    assert len(record["history"]["val_miou"]) == 2 and 0.0 <= record["miou"] <= 1.0


@pytest.mark.parametrize("damage, message", [
    (lambda base: segmentation_data.Image.fromarray(np.full((20, 24), 30, np.uint8), mode="L").save(
        base / "SegmentationClass" / "a.png"), r"label value 30 is outside \[0, 21\) and not the void label 255"),
    (lambda base: segmentation_data.Image.fromarray(scene(0)[1][:10], mode="L").save(
        base / "SegmentationClass" / "a.png"), r"is 24x20 but its label .* is 24x10"),
    (lambda base: (base / "JPEGImages" / "b.jpg").unlink(), r"line 2 names .*b.jpg, which does not exist"),
])
def test_bad_input_is_one_line_before_anything_trains(tmp_path, damage, message):
    path, root = _grid(tmp_path)
    damage(root / "VOC2012")
    runs = plan(config.check_grid(config.grid(path)), CONFIGS)
    with pytest.raises(ValueError, match=message):
        training.run_grid(runs, tmp_path / "out", strategy="none", data_dir=str(root), log=lambda *_: None)
    assert not (tmp_path / "out" / "runs").exists()


def test_a_loss_that_cannot_ignore_void_and_a_missing_data_dir_are_refused_by_name(tmp_path, monkeypatch):
    from ngl_keras import losses

    path, _ = _grid(tmp_path, losses=("ce", {"name": "focal", "ignore_class": 0}))
    with pytest.raises(ValueError, match="loss 'focal': ignore_class 0 is not the task's 255; leave it out."):
        plan(config.check_grid(config.grid(path)), CONFIGS)
    # Every registered loss ignores void today; one that could not is refused by name when the grid is planned.
    entry = losses.REGISTRY["focal"]
    monkeypatch.setitem(losses.REGISTRY, "focal", dataclasses.replace(
        entry, build=lambda **kwargs: entry.build(**kwargs), build_ignoring=None))
    path, _ = _grid(tmp_path / "y", losses=("ce", "focal"))
    with pytest.raises(ValueError, match=r"loss 'focal' cannot ignore void labels \(ignore_class=255\)"):
        plan(config.check_grid(config.grid(path)), CONFIGS)
    grid = config.check_grid({**yaml.safe_load(_grid(tmp_path / "x")[0].read_text()), "data_dir": None})
    runs = plan(grid, CONFIGS)
    with pytest.raises(ValueError, match="read from disk: give its root directory with --data-dir"):
        training.run_grid(runs, tmp_path / "out", strategy="none", log=lambda *_: None)
