"""A search's training compiled once (gp.compiled_training): the same validation accuracy and losses
as today's path (training.train_run) for CE and NGL written as formulas and random engine trees,
candidate after candidate on one compiled model; a diverging candidate fails as today; registry
losses take today's path."""

import keras
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
DIVERGES_LATER = "-exp(88.75*p*y)"  # finite on the probe batch (p <= 0.999); -inf once a p reaches 1


# patience 0: the learning rate is lowered within 3 epochs, and must be reset for the next candidate
PLATEAU = {"monitor": "val_accuracy", "factor": 0.5, "patience": 0, "min_lr": 0.0}


def fitness_settings(compiled_once=True, runs=2, population=1, reduce_lr=PLATEAU, **optimizer):
    return build(search_settings.Fitness, {
        "kind": "train", "datasets": ["arrays"], "model": "small_model", "runs": runs, "epochs": 3,
        "compiled_once": compiled_once, "population_parallel": population, "recycle_every": 0,
        "settings": {"arrays": {
            "batch_size": 16, "optimizer": {"name": "adam", "learning_rate": 0.05, **optimizer},
            "reduce_lr": reduce_lr, "splits": {"train": "train", "validation": "validation", "test": None}}}},
        "fitness")


def arrays_sources(model_fn=small_model):
    dataset, model = sources(model_fn, {"train": TRAIN, "validation": VALIDATION})
    return Sources({"arrays": dataset}, {"small_model": model})


def trainer(tmp_path, compiled_once, runs=2, model_fn=small_model, **changes):
    return fitness._Trainer(fitness_settings(compiled_once, runs, **changes), str(CONFIGS), str(tmp_path), None, 3,
                            arrays_sources(model_fn))


def dropout_model(num_classes):
    """Random state (dropout's seed generator) and batch statistics: what each branch must have of its own."""
    return keras.Sequential([keras.Input(TRAIN[0].shape[1:]), keras.layers.Flatten(), keras.layers.Dense(16),
                             keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
                             keras.layers.Dense(num_classes, activation="softmax")])


SHARED = []  # a layer made once and reused by every call of shared_model


def shared_model(num_classes):
    if not SHARED:
        SHARED.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential([keras.Input(TRAIN[0].shape[1:]), keras.layers.Flatten(), SHARED[0]])


def test_candidates_on_one_compiled_model_match_todays_path(tmp_path):
    from ngl_keras.formula import to_text

    candidates = [CE_FORMULA, NGL_FORMULA] + [to_text(t) for t in random_trees(3, seed=4)] + [CE_FORMULA]
    compiled, today = trainer(tmp_path / "a", True), trainer(tmp_path / "b", False)
    for candidate in candidates:
        new, old = compiled.accuracies([candidate])[0], today.accuracies([candidate])[0]
        assert [d for d, _ in new] == [d for d, _ in old] == ["arrays", "arrays"]
        assert [a is None for _, a in new] == [a is None for _, a in old], candidate
        # 24 validation examples: float noise moves a prediction across a class boundary at most rarely
        assert [a for _, a in new] == pytest.approx([a for _, a in old], abs=1.5 / 24), candidate
    assert len(compiled._compiled) == 2 and not today._compiled  # one compiled model per run
    assert compiled.accuracies([CE_FORMULA])[0] == compiled.accuracies([CE_FORMULA])[0]  # nothing carried over


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
    first = compiled.accuracies([CE_FORMULA])[0]
    assert compiled.accuracies([DIVERGING])[0] == [("arrays", None)]  # TrainingFitness: CandidateFailed("diverged")
    assert compiled.accuracies([CE_FORMULA])[0] == first


def test_registry_losses_take_todays_path(tmp_path):
    compiled = trainer(tmp_path, True, runs=1)
    run = grid.plan({**compiled.grid, "losses": ["ce"]}, CONFIGS, compiled.overrides, None, compiled.sources)[0]
    assert compiled_training.interpretable(run) is None
    assert compiled.accuracies(["ce"])[0][0][1] is not None and not compiled._compiled


@pytest.mark.parametrize("change", [{"compiled_once": False}, {"population_parallel": 4}])
def test_how_candidates_train_is_not_part_of_a_searchs_identity(change):
    from ngl_keras.config import read_yaml

    own = read_yaml(CONFIGS / "search" / "exp2_proxy.yaml")
    defaults = CONFIGS / "search" / search_settings.DEFAULTS_FILE
    changed = search_settings.load_config({**own, "fitness": {**own["fitness"], **change}}, defaults=defaults)
    assert [getattr(changed.fitness, k) for k in change] == list(change.values())
    assert changed.identity() == search_settings.load_config(own, defaults=defaults).identity()


def test_a_population_trains_each_candidate_as_its_own_training_would(tmp_path):
    """Four candidates at a time (a diverging one among them, and a last group of two) against the
    same candidates one at a time, on a model with dropout and batch normalization: the same
    validation accuracy, the same divergence; the per-candidate training losses equal the single
    model's."""
    from ngl_keras.formula import to_text

    candidates = [CE_FORMULA, NGL_FORMULA, DIVERGES_LATER] + [to_text(t) for t in random_trees(3, seed=4)]
    # a ReduceLROnPlateau that cannot fire within the 3 epochs (patience 3)
    plateau = {**PLATEAU, "patience": 3}
    one = trainer(tmp_path / "a", True, reduce_lr=plateau, model_fn=dropout_model)
    four = trainer(tmp_path / "b", True, reduce_lr=plateau, population=4, model_fn=dropout_model)
    alone, together = one.accuracies(candidates), four.accuracies(candidates)
    for candidate, a, b in zip(candidates, alone, together):
        assert [x is None for _, x in a] == [x is None for _, x in b], candidate
        assert [x for _, x in a] == pytest.approx([x for _, x in b], abs=1.5 / 24), candidate
    assert [x for _, x in together[2]] == [None, None]  # diverged alone: the others trained on
    assert sorted(p for _, p in four._compiled) == [4, 4]  # one population model per run
    # the losses of one run: the population's per-candidate metrics against each candidate's own history
    run, population = next((key, c) for (key, _), c in four._compiled.items())
    single = one._compiled[run, 1]
    histories = population.history([CE_FORMULA, NGL_FORMULA, DIVERGES_LATER, CE_FORMULA])
    for k, formula in enumerate([CE_FORMULA, NGL_FORMULA]):
        assert histories[f"candidate_{k}_loss"] == pytest.approx(single.history(formula)["loss"], rel=1e-3)
    assert not all(np.isfinite(histories["candidate_2_loss"]))
    assert histories["candidate_3_loss"] == pytest.approx(histories["candidate_0_loss"], rel=1e-5)


@pytest.mark.parametrize("changes, reason", [
    ({}, r"its ReduceLROnPlateau \(patience 0\) can lower the learning rate within its 3 epochs"),
    ({"reduce_lr": None, "name": "adamw", "global_clipnorm": 1.0},
     "its optimizer clips the gradient to one global norm over all candidates"),
])
def test_settings_that_would_couple_the_candidates_are_refused_before_the_search(tmp_path, changes, reason):
    settings = fitness_settings(population=2, **changes)
    evaluate = fitness.TrainingFitness(settings, CONFIGS, tmp_path, sources=arrays_sources())
    with pytest.raises(ValueError, match=r"^fitness population_parallel 2: arrays/small_model cannot train "
                                         r"candidates as one population: " + reason):
        evaluate.check_inputs()
    fitness.TrainingFitness(fitness_settings(population=1, **changes), CONFIGS, tmp_path,
                            sources=arrays_sources()).check_inputs()


def test_population_parallel_needs_the_compiled_path_and_a_whole_number():
    with pytest.raises(ValueError, match="population_parallel > 1 trains candidates on one compiled program; "
                                         "it needs compiled_once: true"):
        fitness_settings(compiled_once=False, population=2)
    with pytest.raises(ValueError, match="population_parallel must be an integer >= 1; got 0"):
        fitness_settings(population=0)


def test_a_candidate_whose_losses_overflow_the_sum_stops_no_other(tmp_path):
    """A candidate finite on every batch whose running epoch loss overflows: Keras's running mean of the
    summed loss, which TerminateOnNaN would take for a divergence of all; CE beside it trains its 3 epochs
    as alone."""
    huge = "-(3e37)*y - y*log(p)"  # -1e37 an example, finite a batch; the epoch's running sum overflows
    alone = trainer(tmp_path / "a", True, reduce_lr=None).accuracies([CE_FORMULA, huge])
    together = trainer(tmp_path / "b", True, reduce_lr=None, population=2).accuracies([CE_FORMULA, huge])
    assert [x for _, x in together[0]] == pytest.approx([x for _, x in alone[0]], abs=1.5 / 24)
    assert [x is None for _, x in together[1]] == [x is None for _, x in alone[1]]


def test_a_model_function_that_reuses_a_layer_is_refused_for_a_population(tmp_path):
    with pytest.raises(ValueError, match=r"the model function gave two calls the same variable .*a layer made once "
                                         r"and reused\?\): population_parallel trains one model per candidate"):
        trainer(tmp_path, True, reduce_lr=None, population=2, model_fn=shared_model).accuracies([CE_FORMULA, NGL_FORMULA])
    assert trainer(tmp_path, True, reduce_lr=None, model_fn=shared_model).accuracies([CE_FORMULA])[0][0][1] is not None
