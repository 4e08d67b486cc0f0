"""The tf.data input path (what Keras reads on TensorFlow) gives the same batches as the PyDataset
(what it reads on other backends) from the one reader (TensorFlow only)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ngl_keras import config, data, recipe, training
from ngl_keras import segmentation_data as sd
from ngl_keras.grid import plan
from tests.paths import CONFIGS, ROOT
from tests.test_segmentation_data import save_pair, scene, write_voc


def test_tf_dataset_gives_the_pydataset_batches_epoch_by_epoch(tmp_path):
    write_voc(tmp_path, ids=("a", "b", "c", "d", "e"), val=())
    examples = sd.SegmentationExamples(sd.voc(tmp_path, "train"), sd.Augmentation(crop_size=10), seed=4, shuffle=True)
    expected = []
    for epoch in (1, 2):
        batches = sd.SegmentationBatches(examples, batch_size=2, epoch=epoch)
        expected += [batches[i] for i in range(len(batches))]
    got = list(sd.tf_dataset(examples, batch_size=2, epochs=2, first_epoch=1).as_numpy_iterator())
    assert [labels.shape[0] for _, labels in got] == [2, 2, 1, 2, 2, 1]   # no batch spans two epochs
    for (image, label), (want_image, want_label) in zip(got, expected):
        np.testing.assert_array_equal(label, want_label)
        np.testing.assert_array_equal(image, want_image)
    assert isinstance(sd.tf_dataset(examples, batch_size=2), tf.data.Dataset)


# Colours far apart, one per class of the pattern trees below: a pixel's nearest colour gives its class
# back through JPEG's small errors, so that any offset between image and label shows.
COLOURS = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)], np.float32)


def write_pattern_voc(root, count=4, height=20, width=24):
    """A VOC tree whose labels are random 2×2-pixel blocks of classes 0–4 and whose images paint each
    class its colour of COLOURS (no void): image and label tell each other apart at every pixel."""
    rng = np.random.default_rng(0)
    base, labels = root / "VOC2012", []
    for k in range(count):
        label = np.kron(rng.integers(0, len(COLOURS), (height // 2, width // 2)), np.ones((2, 2))).astype(np.uint8)
        save_pair(COLOURS[label].astype(np.uint8), label, base / "JPEGImages" / f"{k}.jpg",
                  base / "SegmentationClass" / f"{k}.png")
        labels.append(label)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{k}\n" for k in range(count)))
    return labels


def _batches(dataset):
    return [(image, label) for image, label in dataset.as_numpy_iterator()]


def test_the_tf_data_form_gives_the_same_full_image_evaluation_batches(tmp_path):
    write_voc(tmp_path, ids=("a", "b", "c", "d"), val=("b", "c", "d"))
    examples = sd.SegmentationExamples(sd.voc(tmp_path, "val"), pad_multiple=8)
    batches = sd.SegmentationBatches(examples, batch_size=2)
    dataset = batches.tf_dataset()
    assert isinstance(dataset, tf.data.Dataset) and len(dataset) == len(batches) == 2
    got = _batches(dataset)
    assert [image.shape for image, _ in got] == [(2, 24, 24, 3), (1, 24, 24, 3)]   # 20x24 padded to 24x24
    for (image, label), (want_image, want_label) in zip(got, [batches[0], batches[1]], strict=True):
        assert image.dtype == want_image.dtype == np.float32 and label.dtype == want_label.dtype == np.int32
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(label, want_label)
    np.testing.assert_array_equal(got[0][1][1, :20], scene(2)[1])   # c's label, as stored
    assert (got[0][1][:, 20:] == sd.VOID).all()


def test_the_other_backend_reads_the_same_evaluation_pixels_as_tf_data(tmp_path):
    """The JAX run's input (`SegmentationBatches`, in a process without TensorFlow) and the
    TensorFlow run's (tf.data) hold the same pixels and labels."""
    write_voc(tmp_path, ids=("a", "b", "c"), val=("b", "c"))
    out = tmp_path / "jax.npz"
    script = ("import numpy as np, keras; from ngl_keras import segmentation_data as sd; "
              f"b = sd.SegmentationBatches(sd.SegmentationExamples(sd.voc({str(tmp_path)!r}, 'val'), pad_multiple=8), "
              "batch_size=1); assert keras.backend.backend() == 'jax'; "
              f"np.savez({str(out)!r}, *[a for k in range(len(b)) for a in b[k]])")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "jax"})
    jax_arrays = np.load(out)
    examples = sd.SegmentationExamples(sd.voc(tmp_path, "val"), pad_multiple=8)
    got = [a for batch in _batches(sd.SegmentationBatches(examples, batch_size=1).tf_dataset()) for a in batch]
    assert len(got) == len(jax_arrays.files) == 4
    for k, array in enumerate(got):
        np.testing.assert_array_equal(array, jax_arrays[f"arr_{k}"])


def test_tf_data_training_crops_keep_image_and_label_aligned(tmp_path):
    labels = write_pattern_voc(tmp_path)
    examples = sd.SegmentationExamples(sd.voc(tmp_path, "train", classes=5),
                                       sd.Augmentation(crop_size=16, scales=(1.0,)), seed=2, shuffle=True)
    batches = sd.SegmentationBatches(examples, batch_size=2)
    dataset, flips = batches.tf_dataset(), 0
    for epoch in range(4):
        batches.set_epoch(epoch)
        for image, label in _batches(dataset):
            assert image.shape == (2, 16, 16, 3) and label.shape == (2, 16, 16)
            # the image's colours name the label's classes at every pixel: aligned
            nearest = np.argmin(((image[..., None, :] - COLOURS) ** 2).sum(-1), axis=-1)
            np.testing.assert_array_equal(nearest, label)
            for crop in label:   # each crop a window of one of the labels, mirrored or not, at the same place
                windows = [np.lib.stride_tricks.sliding_window_view(full, (16, 16)) for full in labels]
                plain = any((w == crop).all(axis=(-2, -1)).any() for w in windows)
                mirrored = any((w == crop[:, ::-1]).all(axis=(-2, -1)).any() for w in windows)
                assert plain or mirrored
                flips += bool(mirrored and not plain)
    assert 0 < flips < 16   # both branches of the flip were taken
    # shrunk to half (10x12) and padded to the crop: the image's padding is the mean exactly where the label is void
    half = sd.SegmentationExamples(examples.split, sd.Augmentation(crop_size=16, scales=(0.5,), flip=False),
                                 seed=2)
    for image, label in _batches(sd.SegmentationBatches(half, batch_size=4).tf_dataset()):
        padding = (image == np.asarray(sd.REFERENCE_MEAN, np.float32)).all(-1)
        np.testing.assert_array_equal(padding, label == sd.VOID)
        assert padding[:, 10:].all() and padding[:, :, 12:].all() and not padding[:, :10, :12].any()


def test_each_pass_over_the_tf_data_form_is_the_epoch_set_when_it_begins(tmp_path):
    write_voc(tmp_path, ids=("a", "b", "c", "d", "e"), val=())
    examples = sd.SegmentationExamples(sd.voc(tmp_path, "train"), sd.Augmentation(crop_size=10), seed=4, shuffle=True)
    batches = sd.SegmentationBatches(examples, batch_size=2, steps=4)   # a schedule counted in iterations
    dataset = batches.tf_dataset()
    assert len(dataset) == 4
    for epoch in (3, 0, 1):
        batches.set_epoch(epoch)
        want = [sd.SegmentationBatches(examples, batch_size=2, steps=4, epoch=epoch)[i] for i in range(4)]
        for (image, label), (want_image, want_label) in zip(_batches(dataset), want, strict=True):
            np.testing.assert_array_equal(label, want_label)
            np.testing.assert_array_equal(image, want_image)


def test_a_segmentation_run_on_tensorflow_reads_through_tf_data_and_follows_fits_epochs(tmp_path, monkeypatch):
    """Keras never indexes the PyDataset on TensorFlow: every example is read by the tf.data form,
    in the epoch fit is in, and a resumed run reads its later epochs only."""
    from tests import test_segmentation_task as task_tests

    assert data.placement().keras_input(None) is None
    read = []   # (split, epoch) of each example read
    example = sd.SegmentationExamples.example

    def reading(self, epoch, index):
        read.append((self.split.name, self.augmentation is not None, epoch))
        return example(self, epoch, index)

    def indexed(self, index):
        raise AssertionError("the PyDataset was indexed on TensorFlow")

    monkeypatch.setattr(sd.SegmentationExamples, "example", reading)
    monkeypatch.setattr(sd.SegmentationBatches, "__getitem__", indexed)
    path, _ = task_tests._grid(tmp_path, losses=("ce",), epochs=2)
    runs = plan(config.check_grid(config.grid(path)), CONFIGS)
    schedule = recipe.schedule_callbacks

    class InterruptAfterTheFirstEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise task_tests._Interrupted()

    monkeypatch.setattr(recipe, "schedule_callbacks", lambda s: schedule(s) + [InterruptAfterTheFirstEpoch()])
    with pytest.raises(task_tests._Interrupted):
        training.run_grid(runs, tmp_path / "out", strategy="none", data_dir=str(tmp_path / "VOCdevkit"), verbose=0,
                          log=lambda *_: None)
    assert {epoch for _, train, epoch in read if train} == {0}
    read.clear()
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)
    (record,) = training.run_grid(runs, tmp_path / "out", strategy="none", data_dir=str(tmp_path / "VOCdevkit"),
                                  verbose=0, log=lambda *_: None)
    assert record["input"] == "tf.data" and record["resumed_from_epoch"] == 1 and record["epochs_run"] == 2
    training_reads = [epoch for _, train, epoch in read if train]
    assert training_reads == [1, 1]   # the two training images, in epoch 1 only
    assert {name for name, train, _ in read if not train} == {"voc_val"}
