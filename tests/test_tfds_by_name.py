"""Any tfds image-classification dataset by name, in both CLIs: its facts read offline from the
prepared DatasetInfo of a tiny dataset built on disk (tests/tiny_tfds.py), its settings from
configs/datasets/defaults.yaml, and one-line errors for what cannot be trained; on any backend
(tf.data through tfds.load on TensorFlow, tfds.data_source without it)."""

import json

import keras
import pytest
import yaml

import search_gp
import train_small
from ngl_keras import config, data
from ngl_keras.records import read_records
from ngl_keras.files import run_cli
from tests import tiny_tfds
from tests.paths import CONFIGS

pytestmark = pytest.mark.any_backend


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    file_format = "tfrecord" if keras.backend.backend() == "tensorflow" else "array_record"
    return str(tiny_tfds.build_in_subprocess(tmp_path_factory.mktemp("tfds"), file_format))


def test_a_dataset_tfds_knows_from_its_files_gives_classes_splits_and_shape(data_dir):
    info = data.info("tiny_shapes", data_dir)
    assert (info.classes, info.channels, info.fixed_size, info.registered) == (3, 1, 16, False)
    assert info.sizes == {"train": 60, "test": 24} and info.version == "1.0.0"
    settings = config.dataset_settings(info, CONFIGS)
    # defaults.yaml's rule for a dataset with train and test, and its own image side
    assert settings.splits.to_json() == {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
    assert settings.image_size == 16 and settings.epochs == 50
    override = config.dataset_settings(info, CONFIGS, {"splits": {"train": "train[:50%]", "validation":
                                                                  "train[50%:]", "test": "test"}, "epochs": 2})
    assert override.splits.train == "train[:50%]" and override.epochs == 2
    images, labels = _first(data.load_split(info, "test[:5]", data_dir))
    assert images[0].shape == (16, 16, 1) and len(labels) == 5 and set(labels) <= {0, 1, 2}


def _first(source):
    if isinstance(source, data.RecordSource):
        return source.read(range(len(source)))
    pairs = [(x.numpy(), int(y)) for x, y in source]
    return [x for x, _ in pairs], [y for _, y in pairs]


@pytest.mark.parametrize("name, message", [
    ("tiny_regression", "dataset 'tiny_regression' is not image classification: it has 1 image and 0 class-label "
                        "features (features: "),
    # Answered before any framework loads: not one of the paper's and no directory in the data dir.
    ("mnist", "unknown dataset 'mnist': not one of the paper's (caltech101, cifar10, cifar100, colorectal_histology, "
              "fashion_mnist, malaria, patch_camelyon) and not prepared in {dir}: nothing is downloaded; prepare a "
              "tfds dataset on a machine with internet (`tfds build mnist`"),
    ("no_such_set", "unknown dataset 'no_such_set': not one of the paper's (caltech101, cifar10, cifar100, "
                    "colorectal_histology, fashion_mnist, malaria, patch_camelyon) and not prepared in {dir}"),
])
def test_what_cannot_be_trained_is_refused_in_one_line_before_anything_trains(data_dir, tmp_path, capsys, name,
                                                                               message):
    with pytest.raises(SystemExit) as exit:
        run_cli(lambda: train_small.main(["--datasets", name, "--data-dir", data_dir, "--out", str(tmp_path / "out")]))
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: " + message.format(dir=data_dir)) and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_train_small_trains_and_tables_a_dataset_by_name(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train_small.main(["--datasets", "tiny_shapes", "--data-dir", data_dir, "--models", "small_cnn",
                             "--losses", "ce", "--epochs", "1", "--out", str(out), "--strategy", "none",
                             "--quiet"]) == 0
    (record,) = read_records(out / "runs.jsonl")
    assert record["key"] == "tiny_shapes/small_cnn/ce/0" and record["identity"]["data"] == {"tfds_version": "1.0.0"}
    assert record["config"]["splits"]["validation"] == "train[90%:]" and record["epochs_run"] == 1
    assert round(record["test_accuracy"] * 24, 4) == round(record["test_accuracy"] * 24)  # of the 24 test images
    assert f"| ce | {100 * record['test_accuracy']:.1f} |" in capsys.readouterr().out


def test_search_gp_searches_on_a_dataset_by_name(data_dir, tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "exp2_proxy", "population": 2, "generations": 0, "seed": 0,
        "fitness": {"kind": "train", "datasets": ["tiny_shapes"], "model": "small_cnn", "runs": 1, "epochs": 1,
                    "recycle_every": 0, "settings": {"tiny_shapes": {"batch_size": 16}}}}))
    out = tmp_path / "search"
    assert search_gp.main(["--config", str(path), "--out", str(out), "--data-dir", data_dir]) == 0
    fame = json.loads((out / "hall_of_fame.json").read_text())
    # validation: the last 10 % of the 60 training images
    assert fame and all(round(e["fitness"][0] * 6, 4) == round(e["fitness"][0] * 6) for e in fame)
