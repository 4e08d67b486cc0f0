"""Symmetric label noise (a dataset setting, `label_noise`): exactly the stated share of the training and
validation labels moved to another class, every other class equally likely, the test labels clean, the
same corrupted labels for every run of a grid, on every kind of source."""

import keras
import numpy as np
import pytest


from ngl_keras.data.readers import Datasets, RecordSource, label_noise, noise_offsets
from ngl_keras.grid import plan
from tests.paths import CONFIGS

pytestmark = pytest.mark.any_backend


def test_exactly_the_share_moves_and_every_other_class_is_equally_likely():
    size, classes, rate = 20000, 10, 0.3
    labels = np.arange(size) % classes
    noisy = (labels + noise_offsets(size, rate, classes, "train[:90%]")) % classes
    moved = noisy != labels
    assert moved.sum() == round(rate * size)  # exactly, not a Bernoulli draw
    # the new class given the old: uniform over the 9 others (6,000 moves, 666.7 expected per offset)
    offsets = (noisy[moved] - labels[moved]) % classes
    counts = np.bincount(offsets, minlength=classes)
    assert counts[0] == 0 and counts[1:].min() > 560 and counts[1:].max() < 780
    # the same labels every time (every run and loss of a grid), other ones for another split
    assert np.array_equal(noise_offsets(size, rate, classes, "train[:90%]"),
                          noise_offsets(size, rate, classes, "train[:90%]"))
    assert not np.array_equal(noise_offsets(size, rate, classes, "train[:90%]"),
                              noise_offsets(size, rate, classes, "train[90%:]"))
    assert not noise_offsets(size, 0.0, classes, "train").any()


class FakeSource:
    """A tfds data source: random access to examples (dicts)."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": np.full((2, 2, 1), i % 256, "uint8"), "label": self.labels[i]}


def test_arrays_and_record_sources_get_the_same_noisy_labels():
    labels = np.arange(500) % 7
    images = np.zeros((500, 2, 2, 1), "uint8")
    _, from_arrays = label_noise((images, labels), 0.4, 7, "train")
    source = label_noise(RecordSource(FakeSource(labels)), 0.4, 7, "train")
    indices = np.array([3, 0, 499, 250, 3])
    read_images, read_labels = source.read(indices)
    assert np.array_equal(read_labels, from_arrays[indices])
    assert [int(image[0, 0, 0]) for image in read_images] == [3, 0, 499 % 256, 250, 3]  # images untouched
    assert (from_arrays != labels).sum() == 200


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data sources are the TensorFlow backend's")
def test_a_tf_data_source_gets_the_same_noisy_labels():
    import tensorflow as tf

    labels = np.arange(300) % 5
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((300, 2, 2, 1), "uint8"), labels))
    noisy = np.array([int(y) for _, y in label_noise(ds, 0.5, 5, "train")])
    assert np.array_equal(noisy, label_noise((None, labels), 0.5, 5, "train")[1])
    unknown = ds.filter(lambda x, y: True)
    with pytest.raises(ValueError, match="label_noise needs the size of split 'train'"):
        label_noise(unknown, 0.5, 5, "train")


@pytest.mark.realdata
def test_a_grid_with_label_noise_corrupts_train_and_validation_and_leaves_test_clean(monkeypatch):
    from ngl_keras.data import readers

    grid = {"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": ["ce", "ngl"], "runs": 2,
            "settings": {"fashion_mnist": {"label_noise": 0.25, "epochs": 1}}}
    runs = plan(grid, CONFIGS, {"limit_train": 400})
    assert {run.settings.label_noise for run in runs} == {0.25}

    class Given:  # the placement's inputs: here, the sources it is given
        @staticmethod
        def inputs(sources, **_):
            return sources

    monkeypatch.setattr(readers, "placement", lambda: Given)
    clean = [readers.load_split("fashion_mnist", spec, limit=limit) for spec, limit in
             (("train[:90%]", 400), ("train[90%:]", None), ("test", None))]
    given = [Datasets().pipelines(run) for run in runs]
    for train, validation, test in given:
        assert (train[1] != clean[0][1]).sum() == 100 and (validation[1] != clean[1][1]).sum() == 1500
        assert np.array_equal(test[1], clean[2][1]) and np.array_equal(train[0], clean[0][0])
    assert all(np.array_equal(g[0][1], given[0][0][1]) for g in given)  # every loss and seed: the same labels


def test_a_share_outside_0_to_1_is_refused_where_the_config_is_read():
    grid = {"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": ["ce"],
            "settings": {"fashion_mnist": {"label_noise": 1.0}}}
    with pytest.raises(ValueError, match=r"label_noise.*a share of the labels in \[0, 1\)"):
        plan(grid, CONFIGS)
