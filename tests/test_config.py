"""Dataset configs: Table B.2.1's optimizer groups, the plateau schedule switch, and every value
labelled with its source."""

import re

import keras
import pytest
import yaml

from ngl_keras import config, data, recipe
from ngl_keras.grid import plan
from tests.paths import CONFIGS


def _settings(tmp_path, text):
    (tmp_path / "datasets").mkdir(exist_ok=True)
    base = (CONFIGS / "datasets" / "fashion_mnist.yaml").read_text()
    (tmp_path / "datasets" / "fashion_mnist.yaml").write_text(base)
    return config.dataset_settings("fashion_mnist", tmp_path, yaml.safe_load(text))


def test_reduce_lr_null_turns_the_plateau_schedule_off(tmp_path):
    on = recipe.schedule_callbacks(_settings(tmp_path, "{}"))
    assert [type(c) for c in on] == [keras.callbacks.ReduceLROnPlateau, keras.callbacks.TerminateOnNaN]
    plateau = on[0]
    assert (plateau.monitor, plateau.factor, plateau.patience, plateau.min_lr) == ("val_accuracy", 0.2, 5, 1e-4)
    off = recipe.schedule_callbacks(_settings(tmp_path, "reduce_lr: null"))
    assert [type(c) for c in off] == [keras.callbacks.TerminateOnNaN]


def test_a_grid_can_turn_the_schedule_back_on_only_with_every_key(tmp_path):
    (tmp_path / "datasets").mkdir()
    text = (CONFIGS / "datasets" / "colorectal_histology.yaml").read_text()
    (tmp_path / "datasets" / "colorectal_histology.yaml").write_text(text)
    back = {"reduce_lr": {"monitor": "val_loss", "factor": 0.5, "patience": 2, "min_lr": 1e-5}}
    settings = config.dataset_settings("colorectal_histology", tmp_path, back)
    plateau = recipe.schedule_callbacks(settings)[0]
    assert (plateau.monitor, plateau.factor, plateau.patience, plateau.min_lr) == ("val_loss", 0.5, 2, 1e-5)
    with pytest.raises(ValueError, match=r"settings for colorectal_histology: reduce_lr: missing keys "
                                         r"\['monitor', 'patience', 'min_lr'\]"):
        config.dataset_settings("colorectal_histology", tmp_path, {"reduce_lr": {"factor": 0.5}})
    with pytest.raises(ValueError, match=r"'reduce_lr' must be a mapping or null; got 3"):
        config.dataset_settings("colorectal_histology", tmp_path, {"reduce_lr": 3})
    with pytest.raises(ValueError, match=r"settings for colorectal_histology: reduce_lr: unknown key 'factr'"):
        config.dataset_settings("colorectal_histology", tmp_path,
                                {"reduce_lr": {**back["reduce_lr"], "factr": 0.1}})


# Table B.2.1's columns, in the paper's order (SPEC). Its rows: Adam with the plateau schedule, then
# SGD (momentum) without one, so the SGD group is the rightmost column(s), Colorectal Histology at least.
TABLE_B21_COLUMNS = ["cifar10", "fashion_mnist", "cifar100", "malaria", "patch_camelyon", "caltech101",
                     "colorectal_histology"]


def test_optimizer_groups_follow_table_b21_layout():
    assert sorted(TABLE_B21_COLUMNS) == sorted(data.DATASETS)
    settings = {name: config.dataset_settings(name, CONFIGS) for name in TABLE_B21_COLUMNS}
    optimizers = [settings[name].optimizer.name for name in TABLE_B21_COLUMNS]
    adam = optimizers.count("adam")
    # The configs' groups, read in the table's order: Adam columns first, then a non-empty SGD suffix.
    assert optimizers == ["adam"] * adam + ["sgd"] * (len(optimizers) - adam), dict(zip(TABLE_B21_COLUMNS, optimizers))
    assert settings["colorectal_histology"].optimizer.name == "sgd"
    for name in TABLE_B21_COLUMNS[:adam]:
        assert settings[name].reduce_lr is not None, name
    for name in TABLE_B21_COLUMNS[adam:]:
        assert settings[name].reduce_lr is None and settings[name].optimizer.momentum > 0, name


SOURCES = re.compile(r"#\s*(paper|published example|SCE paper|assumption|ours|implementation|native size|"
                     r"not used by Adam|the dataset's)")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("datasets/*.yaml")) + [
    CONFIGS / "paper_scratch.yaml", CONFIGS / "paper_pretrained.yaml", CONFIGS / "quick.yaml"],
    ids=lambda p: p.stem)
def test_every_value_in_the_evaluation_configs_says_its_source(path):
    """A line with a value carries a source tag; a mapping key opens a block whose values do."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.split("#")[0].strip()
        if not stripped or stripped.endswith(":") or stripped in ("- ce",):
            continue
        if stripped.startswith("- name:") or stripped in ("settings:", "fashion_mnist:"):
            continue
        assert SOURCES.search(line), f"{path.name}:{number} has no source: {line!r}"
    # The evaluation's epochs and batch size are never labelled as the paper's.
    for line in path.read_text().splitlines():
        if line.startswith(("epochs:", "batch_size:")) or line.strip().startswith(("epochs:", "batch_size:")):
            assert "# paper" not in line, f"{path.name}: {line!r}"


def test_a_plan_carries_built_settings_with_their_types_and_records_keep_the_given_mapping(tmp_path):
    runs = plan({"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": ["ce"],
                          "settings": {"fashion_mnist": {"optimizer": {"name": "sgd", "learning_rate": 1}}}},
                         CONFIGS, {"epochs": 2})
    settings = runs[0].settings
    assert isinstance(settings, config.DatasetSettings) and isinstance(settings.optimizer, config.Optimizer)
    assert type(settings.optimizer.learning_rate) is float and settings.optimizer.learning_rate == 1.0
    assert isinstance(settings.augmentation, data.Augmentation) and settings.epochs == 2
    given = settings.to_json()  # what runs.jsonl stores: the mapping as given, the grid's keys last
    assert given["optimizer"] == {"name": "sgd", "learning_rate": 1, "momentum": 0.0}
    assert list(given)[-1] == "limit_train" and given["limit_train"] is None


def test_a_rule_between_fields_lives_in_its_settings_class():
    from ngl_keras.gp import engine, search_settings

    with pytest.raises(ValueError, match=r"^min_height 6 needs at least 7 nodes, above max_size 5.$"):
        engine.Limits(min_height=6, max_size=5)
    with pytest.raises(ValueError, match=r"^fitness: missing key 'model' for kind 'train'.$"):
        search_settings.Fitness(kind="train", datasets=["fashion_mnist"], runs=1)
    assert search_settings.Fitness(kind="probe").kind == "probe"
