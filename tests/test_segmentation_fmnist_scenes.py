"""benchmarks/fmnist_scenes.py: a scene's labels from its items, and a tiny dataset written in the VOC
layout and read back by the segmentation reader."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from ngl_keras import data
from ngl_keras import segmentation_data as sd
from tests.paths import ROOT

_spec = importlib.util.spec_from_file_location("fmnist_scenes", ROOT / "benchmarks" / "fmnist_scenes.py")
fmnist_scenes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fmnist_scenes)

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax
JPEG_TOLERANCE = 40   # grayscale JPEG at quality 95 next to sharp item edges


def test_a_scene_labels_bright_pixels_by_class_and_voids_a_band():
    item = np.zeros((28, 28), np.uint8)
    item[10:18, 10:18] = 200
    item[9, 10:18] = 30                         # faint: below the threshold, not pasted
    images, labels = np.stack([item] * 4), np.array([4, 7, 4, 7])
    image, label = fmnist_scenes.scene(images, labels, np.random.default_rng(1))
    assert image.shape == label.shape == (64, 64)
    assert set(np.unique(label)) <= {0, 5, 8, 255}
    np.testing.assert_array_equal(image > 0, (label != 0) & (label != 255))   # pasted pixels are labelled
    assert (image[(label == 5) | (label == 8)] == 200).all()
    # no labelled pixel touches background: its 8 neighbours are void or items
    labelled = (label == 5) | (label == 8)
    assert labelled.sum() >= 64 and (label == 255).any()
    assert not (fmnist_scenes._grown(labelled) & (label == 0)).any()
    again = fmnist_scenes.scene(images, labels, np.random.default_rng(1))
    np.testing.assert_array_equal(again[1], label)


@pytest.mark.realdata
def test_scenes_written_in_the_voc_layout_read_back(tmp_path, monkeypatch, capsys):
    fashion_mnist = data.fashion_mnist_idx()
    if fashion_mnist is None:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    monkeypatch.setattr(sys, "argv", ["fmnist_scenes.py", "--out", str(tmp_path), "--train", "3", "--val", "2"])
    fmnist_scenes.main()
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["classes"] == 11 and sum(summary["pixel_share"].values()) == pytest.approx(1, abs=1e-3)
    train = sd.voc(tmp_path, "train", classes=fmnist_scenes.CLASSES)
    assert [path.stem for path, _ in train.examples] == ["train_000000", "train_000001", "train_000002"]
    assert len(sd.voc(tmp_path, "val", classes=11)) == 2
    images, labels = fashion_mnist["train"]
    for i in range(3):
        image, label = train.read(i)
        want_image, want_label = fmnist_scenes.scene(images[..., 0], labels, np.random.default_rng([0, 0, i]))
        np.testing.assert_array_equal(label, want_label)
        assert image.shape == (64, 64, 3)
        assert np.abs(image[..., 0].astype(int) - want_image).max() <= JPEG_TOLERANCE
        assert {0, 255} < set(np.unique(label))
    batch_images, batch_labels = sd.SegmentationBatches(sd.SegmentationExamples(train), batch_size=3)[0]
    assert batch_images.shape == (3, 64, 64, 3) and batch_labels.shape == (3, 64, 64)
