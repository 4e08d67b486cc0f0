"""A search's training compiled once (gp.compiled_training): the same validation accuracy and losses
as today's path (training.train_run) for CE and NGL written as formulas and random engine trees,
candidate after candidate on one compiled model; a diverging candidate fails as today; registry
losses take today's path."""

import numpy as np
import pytest

from ngl_keras import distribution, grid, training
from ngl_keras.gp import compiled_training, fitness, search_settings
from ngl_keras.grid import Sources
from ngl_keras.own_data import sources
from ngl_keras.settings import build
from tests.gp.test_interpreter import NGL_FORMULA, random_trees
from tests.paths import CONFIGS
from tests.test_own_data import TRAIN, VALIDATION, small_model

pytestmark = pytest.mark.any_backend

CE_FORMULA = "-y*log(p)"
DIVERGING = "-exp(exp(exp(5*p*y)))"  # infinite at the first step


def trainer(tmp_path, compiled_once, runs=2):
    dataset, model = sources(small_model, {"train": TRAIN, "validation": VALIDATION})
    settings = build(search_settings.Fitness, {
        "kind": "train", "datasets": ["arrays"], "model": "small_model", "runs": runs, "epochs": 3,
        "compiled_once": compiled_once, "settings": {"arrays": {
            "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.05},
            # patience 0: the learning rate is lowered within 3 epochs, and must be reset for the next candidate
            "reduce_lr": {"monitor": "val_accuracy", "factor": 0.5, "patience": 0, "min_lr": 0.0},
            "splits": {"train": "train", "validation": "validation", "test": None}}}}, "fitness")
    return fitness._Trainer(settings, str(CONFIGS), str(tmp_path), None, 3,
                            Sources({"arrays": dataset}, {"small_model": model}))


def test_candidates_on_one_compiled_model_match_todays_path(tmp_path):
    from ngl_keras.formula import to_text

    candidates = [CE_FORMULA, NGL_FORMULA] + [to_text(t) for t in random_trees(3, seed=4)] + [CE_FORMULA]
    compiled, today = trainer(tmp_path / "a", True), trainer(tmp_path / "b", False)
    for candidate in candidates:
        new, old = compiled.accuracies(candidate), today.accuracies(candidate)
        assert [d for d, _ in new] == [d for d, _ in old] == ["arrays", "arrays"]
        assert [a is None for _, a in new] == [a is None for _, a in old], candidate
        # 24 validation examples: float noise moves a prediction across a class boundary at most rarely
        assert [a for _, a in new] == pytest.approx([a for _, a in old], abs=1.5 / 24), candidate
    assert len(compiled._compiled) == 2 and not today._compiled  # one compiled model per run
    assert compiled.accuracies(CE_FORMULA) == compiled.accuracies(CE_FORMULA)  # nothing carried over


def test_the_histories_match_todays_path_and_the_learning_rate_is_reset(tmp_path, monkeypatch):
    import keras

    # two training pipelines per seeding: the candidates below use both and one of the next two
    monkeypatch.setattr(compiled_training, "SPARE_INPUTS", 2)
    seedings = []
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda seed, set_seed=keras.utils.set_random_seed:
                        (seedings.append(seed), set_seed(seed)))
    run = grid.plan({"datasets": ["arrays"], "models": ["small_model"], "losses": [NGL_FORMULA], "runs": 1,
                     "seed": 3, "settings": trainer(tmp_path, True).grid["settings"]}, CONFIGS, {"epochs": 3},
                    None, trainer(tmp_path, True).sources)[0]
    datasets = trainer(tmp_path, True).datasets
    compiled = compiled_training.CompiledRun(run, datasets)
    old = training.train_run(run, datasets, tmp_path / "scratch", distribution.make_strategy("none"), verbose=0,
                             evaluate_test=False, logs=False)["history"]
    seedings.clear()
    compiled.history(CE_FORMULA)  # another candidate first: its weights and optimizer state must go
    for _ in range(3):
        new = compiled.history(NGL_FORMULA)
        for key in ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"):
            np.testing.assert_allclose(new[key], old[key], rtol=1e-4, atol=1e-6, err_msg=key)
        # the plateau schedule lowered the rate after the last epoch (val_accuracy fell): reset next time
        assert float(compiled.model.optimizer.learning_rate.numpy()) == pytest.approx(0.025)
    # TensorFlow's global seed (whose setting clears its kernel caches) once per two candidates on tf.data;
    # ArrayBatches rewind and every candidate sets the seeds
    tf_data = compiled_training.data_module.placement().tf_data
    assert seedings == ([3, 3] if tf_data else [3] * 4)


def test_a_diverging_candidate_fails_and_the_next_one_is_unaffected(tmp_path):
    compiled = trainer(tmp_path, True, runs=1)
    first = compiled.accuracies(CE_FORMULA)
    assert compiled.accuracies(DIVERGING) == [("arrays", None)]  # TrainingFitness: CandidateFailed("diverged")
    assert compiled.accuracies(CE_FORMULA) == first


def test_registry_losses_take_todays_path(tmp_path):
    compiled = trainer(tmp_path, True, runs=1)
    run = grid.plan({**compiled.grid, "losses": ["ce"]}, CONFIGS, compiled.overrides, None, compiled.sources)[0]
    assert compiled_training.interpretable(run) is None
    assert compiled.accuracies("ce")[0][1] is not None and not compiled._compiled


def test_compiled_once_is_not_part_of_a_searchs_identity():
    from ngl_keras.config import read_yaml

    own = read_yaml(CONFIGS / "search" / "exp2_proxy.yaml")
    defaults = CONFIGS / "search" / search_settings.DEFAULTS_FILE
    today = search_settings.load_config({**own, "fitness": {**own["fitness"], "compiled_once": False}},
                                        defaults=defaults)
    assert today.fitness.compiled_once is False
    assert today.identity() == search_settings.load_config(own, defaults=defaults).identity()
