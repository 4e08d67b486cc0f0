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


# Bounded inputs (issue 26): a config cannot make reading it take memory or time; every value is
# echoed shortened. The worst case of each class, measured: docs/RELIABILITY.md.

_GRID = "datasets: [fashion_mnist]\nmodels: [small_cnn]\n"


def _billion_laughs():
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(lines) + f"\n{_GRID}losses: *l8\n"


def _bounded(read):
    """(seconds, peak MB allocated) of `read()`, which must raise ValueError; and its message."""
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ValueError) as error:
        read()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return seconds, peak, str(error.value)


@pytest.mark.any_backend
def test_nested_aliases_are_refused_naming_the_line_before_anything_is_built(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_billion_laughs())  # 10^9 strings in 500 bytes
    seconds, peak, message = _bounded(lambda: config.grid(path))
    assert message == (f"config file {str(path)!r} at line 2, column 10: aliases (&/*) are not accepted in "
                       "config files; write the value out.")
    assert seconds < 1 and peak < 10


@pytest.mark.any_backend
def test_a_config_above_1_mb_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(_GRID + "losses:\n" + "- ce\n" * 10_000_000)  # 50 MB, 10 million items
    seconds, peak, message = _bounded(lambda: config.grid(path))
    assert message == f"config file {str(path)!r} is 50,000,054 bytes; config files are limited to 1,000,000 bytes."
    assert seconds < 1 and peak < 1


@pytest.mark.any_backend
def test_a_config_of_more_than_100000_values_is_refused_in_about_a_second(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(_GRID + "losses:\n" + "- 1\n" * 249_000)  # just under 1 MB
    seconds, peak, message = _bounded(lambda: config.grid(path))
    assert message.endswith("more than 100,000 values; config files are limited to that.")
    assert "at line 99999," in message and peak < 20 and seconds < 10  # ~0.2 s when the machine is idle


@pytest.mark.any_backend
def test_a_1_mb_string_value_is_echoed_in_80_characters(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(_GRID + "losses: [ce]\nweights: " + "a" * 999_000 + "\n")
    with pytest.raises(ValueError) as error:
        plan(config.grid(path), CONFIGS)
    assert str(error.value) == ("model 'small_cnn' has no pretrained weights; use weights: null with it (got '"
                                + "a" * 79 + "… (str of 999,000 characters)).")


@pytest.mark.any_backend
def test_an_integer_longer_than_python_converts_is_one_line(tmp_path):
    path = tmp_path / "digits.yaml"
    path.write_text("runs: " + "1" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"holds a value YAML cannot read: Exceeds the limit \(4300 digits\)"):
        config.grid(path)


@pytest.mark.any_backend
def test_floats_without_a_dot_or_an_exponent_sign_are_numbers(tmp_path):
    path = tmp_path / "floats.yaml"
    path.write_text("a: 1e-3\nb: 1.0e3\nc: -2E+5\nd: .5e1\ne: 1.5\nf: 12\ng: e5\nh: '1e-3'\n")
    assert config.read_yaml(path) == {"a": 0.001, "b": 1000.0, "c": -200000.0, "d": 5.0, "e": 1.5, "f": 12,
                                      "g": "e5", "h": "1e-3"}
    (tmp_path / "datasets").mkdir()
    base = (CONFIGS / "datasets" / "fashion_mnist.yaml").read_text()
    (tmp_path / "datasets" / "fashion_mnist.yaml").write_text(base.replace("learning_rate: 0.001", "learning_rate: 1e-3"))
    assert "learning_rate: 1e-3" in (tmp_path / "datasets" / "fashion_mnist.yaml").read_text()
    assert config.dataset_settings("fashion_mnist", tmp_path).optimizer.learning_rate == 0.001


@pytest.mark.any_backend
@pytest.mark.parametrize("formula", ["p*y*1e30*1e30", "exp(exp(exp(p+10)))*y"])
def test_a_formula_that_overflows_on_the_probe_batch_is_refused_before_training(formula):
    with pytest.raises(ValueError) as error:
        plan({"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": [formula, "ce"]}, CONFIGS)
    assert str(error.value) == (f"loss {formula!r} is inf or NaN in float32 on a probe batch (p in (0, 1), y one-hot): "
                                "it overflows at the first training step; scale its constants down.")


@pytest.mark.any_backend
@pytest.mark.parametrize("formula", ["p*y*1e308", "1e999*p*y"])
def test_a_formula_constant_beyond_float32_is_refused_by_the_parser(formula):
    with pytest.raises(ValueError, match=r"the constant '1e(308|999)' is beyond float32's range"):
        plan({"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": [formula]}, CONFIGS)
