"""The Python API on your own problem: `ngl_keras.evaluate` and `ngl_keras.gp.search` on tiny
in-memory arrays with a tiny model, through the code of the CLIs, on any backend."""

import json

import keras
import numpy as np
import pytest

import ngl_keras
from ngl_keras import data, models, own_data, recipe, training
from ngl_keras.grid import Sources
from ngl_keras.files import read_json_lines
from ngl_keras.records import read_records
from ngl_keras.resume import EPOCH_LOG
from ngl_keras.gp import fitness, search_settings
from ngl_keras.settings import build
from tests.paths import CONFIGS

pytestmark = pytest.mark.any_backend

CLASSES, SIDE = 3, 6
# Constant value 3 and zero gradient: a model trained with it keeps its initial weights.
CONSTANT = {"name": "3 + 0*p*y", "label": "constant"}


def arrays(count, seed=0):
    """(x, y): 6x6 gray images whose class is the bright third of the columns, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, count)
    x = rng.uniform(0, 0.5, (count, SIDE, SIDE, 1)).astype("float32")
    for k, label in enumerate(y):
        x[k, :, 2 * label:2 * label + 2] += 0.5
    return x, y


def small_model(num_classes):
    return keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])


TRAIN, VALIDATION, TEST = arrays(64, 0), arrays(24, 1), arrays(30, 2)


def test_evaluate_trains_each_loss_on_paired_seeds_and_its_table_is_the_records_mean(tmp_path):
    out = tmp_path / "out"
    result = ngl_keras.evaluate(["ce", CONSTANT], small_model, TRAIN, VALIDATION, TEST, epochs=2, batch_size=16,
                                runs=2, seed=3, learning_rate=0.05, out=out, strategy="none", log=lambda *_: None)
    records = result.records
    assert [r["key"] for r in records] == ["arrays/small_model/ce/0", "arrays/small_model/ce/1",
                                           "arrays/small_model/constant/0", "arrays/small_model/constant/1"]
    assert [r["seed"] for r in records] == [3, 4, 3, 4]  # paired: run r of every loss has seed 3 + r
    assert records == read_records(out / "runs.jsonl")
    fingerprint = data.from_arrays({"train": TRAIN, "validation": VALIDATION, "test": TEST}).fingerprint
    for record in records:
        assert record["identity"]["data"] == {"sha256": fingerprint}
        assert record["identity"]["model_function"]["function"] == "tests.test_own_data.small_model"
        assert record["config"]["optimizer"]["learning_rate"] == 0.05 and record["config"]["batch_size"] == 16
    for record in records[2:]:
        # The constant loss: its value in the history, and no step moved the weights, so the test accuracy
        # is that of the untrained model of the run's seed, computed here independently.
        assert record["history"]["loss"] == pytest.approx([3.0, 3.0])
        keras.backend.clear_session()
        keras.utils.set_random_seed(record["seed"])
        untrained = small_model(CLASSES)
        accuracy = np.mean(np.argmax(untrained.predict(TEST[0], verbose=0), -1) == TEST[1])
        assert record["test_accuracy"] == pytest.approx(accuracy)
    for record in records[:2]:
        assert record["history"]["loss"][1] < record["history"]["loss"][0]  # CE trained
    ce = 100 * np.mean([r["test_accuracy"] for r in records[:2]])
    change = 100 * (100 * np.mean([r["test_accuracy"] for r in records[2:]]) - ce) / ce
    assert f"| ce | {ce:.1f} |" in result.table
    assert f"| constant | {change:+.2f} | {change:+.2f} |" in result.table
    assert (out / "table.md").read_text().strip() == result.table.strip()


def test_a_single_run_tables_note_names_the_apis_runs_argument(tmp_path):
    result = ngl_keras.evaluate(["ce", "ngl"], small_model, TRAIN, VALIDATION, TEST, epochs=1, batch_size=32,
                                out=tmp_path / "out", strategy="none", log=lambda *_: None)
    assert result.table.endswith("\nOne run per loss, and no seed-to-seed spread recorded for this schedule: a "
                                 "difference of a point or two may be noise (runs=3 measures it).")


class Interrupted(Exception):
    pass


def test_evaluate_resumes_an_interrupted_run_and_skips_finished_ones_but_not_for_other_arrays(tmp_path, monkeypatch):
    out = tmp_path / "out"
    started = []
    schedule = recipe.schedule_callbacks

    class InterruptSecondRun(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # before the backup of this epoch is written
            if len(started) == 2 and epoch == 1:
                raise Interrupted()

    def callbacks(settings):
        started.append(1)
        return schedule(settings) + [InterruptSecondRun()]

    monkeypatch.setattr(recipe, "schedule_callbacks", callbacks)
    call = dict(epochs=3, batch_size=16, runs=2, learning_rate=0.05, out=out, strategy="none")
    with pytest.raises(Interrupted):
        ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, log=lambda *_: None, **call)
    first = read_records(out / "runs.jsonl")
    assert [r["key"] for r in first] == ["arrays/small_model/ce/0"]
    interrupted = [json.loads(line) for line in next((out / "runs").glob("*__1__*")).joinpath(
        EPOCH_LOG).read_text().splitlines()]
    assert [line["epoch"] for line in interrupted] == [0]
    monkeypatch.setattr(recipe, "schedule_callbacks", schedule)
    trained, train_run = [], training.train_run
    monkeypatch.setattr(training, "train_run", lambda run, *args, **kwargs: trained.append(run.key) or
                        train_run(run, *args, **kwargs))

    result = ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, log=lambda *_: None, **call)
    assert trained == ["arrays/small_model/ce/1"]
    resumed = result.records[1]
    assert result.records[0] == first[0]
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs_run"] == 3
    assert resumed["history"]["loss"][0] == pytest.approx(interrupted[0]["logs"]["loss"])

    assert ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, log=lambda *_: None, **call).records \
        == result.records
    assert trained == ["arrays/small_model/ce/1"]  # nothing trained again
    other = (TRAIN[0] + 0.01, TRAIN[1])
    with pytest.raises(ValueError, match=r"already holds arrays/small_model/ce/0 trained with other settings: "
                                         r"data.sha256 \(\"[0-9a-f]{16}\" vs \"[0-9a-f]{16}\"\)"):
        ngl_keras.evaluate(["ce"], small_model, other, VALIDATION, TEST, log=lambda *_: None, **call)


def test_search_on_arrays_returns_a_hall_of_fame_the_fitness_reproduces_and_resumes(tmp_path):
    out = tmp_path / "search"
    config = {"population": 2, "generations": 1, "fitness": {"references": []}}
    call = dict(out=out, config=config, epochs=1, batch_size=16, log=lambda *_: None)
    fame = ngl_keras.gp.search(small_model, TRAIN, VALIDATION, **call)
    assert [e["rank"] for e in fame] == list(range(1, len(fame) + 1)) and len(fame) >= 2
    assert [e["fitness"] for e in fame] == sorted(e["fitness"] for e in fame)
    saved = json.loads((out / "search.yaml").read_text())
    assert saved["experiment"] == "own_data" and saved["fitness"]["datasets"] == ["arrays"]
    assert saved["fitness"]["model"] == "small_model" and saved["fitness"]["epochs"] == 1
    # The fitness of the best formula, computed again by the fitness function with the search's settings.
    dataset, model = own_data.sources(small_model, {"train": TRAIN, "validation": VALIDATION})
    assert saved["fitness"]["sources"]["data"]["sha256"] == dataset.fingerprint
    settings = build(search_settings.Fitness, {k: v for k, v in saved["fitness"].items() if k != "sources"}, "fitness")
    evaluate = fitness.TrainingFitness(settings, CONFIGS, tmp_path / "again", seed=saved["seed"],
                                       sources=Sources({"arrays": dataset}, {"small_model": model}))
    assert evaluate(fame[0]["formula"]) == pytest.approx(fame[0]["fitness"])
    assert fame[0]["fitness"][0] * len(VALIDATION[1]) == pytest.approx(round(fame[0]["fitness"][0] * 24))

    evaluations = (out / "evaluations.jsonl").read_text()
    assert ngl_keras.gp.search(small_model, TRAIN, VALIDATION, **call) == fame
    assert (out / "evaluations.jsonl").read_text() == evaluations  # resumed: nothing trained again
    with pytest.raises(ValueError, match=r"holds a different search \(settings that differ: fitness\)"):
        ngl_keras.gp.search(small_model, (TRAIN[0] * 0.5, TRAIN[1]), VALIDATION, **call)


def test_a_search_training_candidates_as_populations_gives_each_the_fitness_it_gets_alone(tmp_path):
    """population_parallel 3: a trial carries up to three candidates of a generation, trained as one
    program; every candidate's fitness is the one the same search gives it one at a time."""
    def evaluations(parallel):
        config = {"population": 4, "generations": 1, "fitness": {"references": [], "population_parallel": parallel}}
        ngl_keras.gp.search(small_model, TRAIN, VALIDATION, out=tmp_path / str(parallel), config=config, epochs=2,
                            batch_size=16, log=lambda *_: None)
        return read_json_lines(tmp_path / str(parallel) / "evaluations.jsonl")

    alone, together = evaluations(1), evaluations(3)
    assert [e["trial_candidates"] for e in alone] == [1] * len(alone)
    assert 3 in {e["trial_candidates"] for e in together} and {e["trial_candidates"] for e in together} <= {1, 2, 3}
    by_candidate = {e["candidate"]: e for e in alone}
    assert sorted(by_candidate) == sorted(e["candidate"] for e in together)
    for e in together:
        assert e["formula"] == by_candidate[e["candidate"]]["formula"]
        assert e["fitness"] == pytest.approx(by_candidate[e["candidate"]]["fitness"], abs=1.5 / 24), e["formula"]


def logits_model(num_classes):
    return keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(), keras.layers.Dense(num_classes)])


def four_outputs(num_classes):
    return small_model(4)


def other_input(num_classes):
    return keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])


def flat_model(num_classes):
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(num_classes, activation="softmax")])


x, y = TRAIN
BAD = [
    (dict(train=(x[:0], y[:0])), "train: x is empty; give at least one example."),
    (dict(train=(x, y[:-1])), "train: x has 64 examples and y 63 labels; give one label per example."),
    (dict(train=(x, y - 1)), "train: labels must be >= 0; found -1."),
    (dict(test=(TEST[0], TEST[1] + 1)),
     "test: labels must lie in [0, 3) (the classes of train; give classes= for more); found 3."),
    (dict(train=(x, y.astype("float32"))),
     "train: y must be integer class labels of shape (N,) or one-hot (N, classes); got dtype float32 and "
     "shape (64,)."),
    (dict(train=(x, np.full((64, 3), 0.5))),
     "train: 2-D labels must be one-hot (each row one 1 and zeros); got shape (64, 3) with other values."),
    (dict(train=(x, np.eye(3)[y]), validation=(VALIDATION[0], np.eye(4)[VALIDATION[1]])),
     "one-hot labels of different widths: {'train': 3, 'validation': 4}; give every split the same classes."),
    (dict(validation=(VALIDATION[0], np.eye(4)[VALIDATION[1]]), classes=3),
     "validation: one-hot labels of width 4, but classes is 3."),
    (dict(train=(np.array(["a"] * 64), y)),
     "train: x must be a numeric array of shape (N, ...) with N examples; got dtype <U1 and shape (64,)."),
    (dict(train=(np.where(np.arange(64)[:, None, None, None] == 5, np.nan, x), y)),
     "train: x holds NaN or infinite values; give finite numbers."),
    (dict(validation=(VALIDATION[0][:, :5], VALIDATION[1])),
     "examples of different shapes across splits: train (6, 6, 1), validation (5, 6, 1), test (6, 6, 1); "
     "give every split the same shape."),
    (dict(validation=VALIDATION[0]), "validation must be a pair (x, y) of arrays; got ndarray."),
    (dict(model_fn=3), "model_fn must be callable (num_classes -> uncompiled keras.Model ending in softmax); got int."),
    (dict(model_fn=small_model(CLASSES)), "model_fn must be a function returning a new model; got a keras.Model "
     "instance: wrap it, e.g. lambda num_classes: keras.models.clone_model(model) (new weights on every call)."),
    (dict(model_fn=lambda c: "model"),
     "model_fn(3) returned str; it must return a keras.Model (uncompiled, ending in softmax)."),
    (dict(model_fn=four_outputs),
     "model_fn's model gives outputs of shape (4,) per batch of 2; it must give (3,): one probability per class."),
    (dict(model_fn=logits_model), "model_fn's model must end in softmax: its outputs on 2 examples sum to "),
    (dict(model_fn=other_input), "model_fn's model does not take examples of shape (6, 6, 1) ("),
    (dict(losses=["ce", "bi_tempered"]),
     "loss 'bi_tempered' takes logits, and model 'small_model' (a model function) ends in softmax; give losses on "
     "probabilities with a model function."),
    (dict(model_fn=flat_model, train=(x.reshape(64, -1)[:, :8], y), validation=(VALIDATION[0].reshape(24, -1)[:, :8],
          VALIDATION[1]), test=(TEST[0].reshape(30, -1)[:, :8], TEST[1]), settings={"augmentation": {"zoom": 0.1}}),
     "settings for arrays: augmentation needs images (N, height, width, channels); the examples are not images: "
     "turn it off (horizontal_flip false, shifts and zoom 0)."),
    (dict(optimizer="rmsprop"), "settings for arrays: optimizer: 'name' must be one of adam, sgd, adamw; got 'rmsprop'."),
    (dict(name="my data"), "name must be a non-empty string of letters, digits, '_' or '-'; got 'my data'."),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_inputs_are_refused_before_training_with_one_line(tmp_path, change, message):
    call = {"losses": ["ce"], "model_fn": small_model, "train": TRAIN, "validation": VALIDATION, "test": TEST,
            "out": tmp_path / "out", **change}
    with pytest.raises(ValueError) as error:
        ngl_keras.evaluate(call.pop("losses"), call.pop("model_fn"), call.pop("train"), call.pop("validation"),
                           call.pop("test"), epochs=1, **call)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing trained or written


def test_a_model_instance_given_to_search_is_refused_in_one_line_and_its_suggestion_works(tmp_path):
    model = small_model(CLASSES)
    with pytest.raises(ValueError, match=r"^model_fn must be a function returning a new model; got a keras.Model "
                                         r"instance: wrap it, e.g. lambda num_classes: "):
        ngl_keras.gp.search(model, TRAIN, VALIDATION, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    checked = models.from_function(lambda num_classes: keras.models.clone_model(model), CLASSES, TRAIN[0][:2])
    assert checked.fingerprint == models.from_function(small_model, CLASSES, TRAIN[0][:2]).fingerprint


def test_a_search_config_cannot_name_other_data_and_a_config_file_is_merged(tmp_path):
    with pytest.raises(ValueError, match=r"^config fitness: datasets, model cannot be set here: the fitness trains "
                                         r"model_fn on the arrays given \(leave them out\).$"):
        ngl_keras.gp.search(small_model, TRAIN, VALIDATION, out=tmp_path / "s",
                            config={"fitness": {"datasets": ["cifar10"], "model": "small_cnn"}})
    with pytest.raises(ValueError, match=r"^config fitness settings name 'fashion_mnist'; the arrays are named "
                                         r"'arrays' \(the name argument\): give their settings under it.$"):
        ngl_keras.gp.search(small_model, TRAIN, VALIDATION, out=tmp_path / "s",
                            config={"fitness": {"settings": {"fashion_mnist": {"batch_size": 8}}}})
    path = tmp_path / "search.yaml"
    path.write_text("population: 1\n")
    with pytest.raises(ValueError, match=r"^population must be an integer >= 2; got 1.$"):
        ngl_keras.gp.search(small_model, TRAIN, VALIDATION, out=tmp_path / "s", config=path)
    assert not (tmp_path / "s").exists()


def test_a_model_function_is_fingerprinted_by_its_config():
    first = models.from_function(small_model, CLASSES, TRAIN[0][:2])
    assert first == models.from_function(small_model, CLASSES, TRAIN[0][:2])  # same config in a new session
    assert first.fingerprint != models.from_function(flat_model, CLASSES, np.zeros((2, 8), "float32")).fingerprint
    assert first.identity() == {"function": "tests.test_own_data.small_model", "config_sha256": first.fingerprint}


_SHARED = []


def one_model(num_classes):
    """The same model object on every call (built once): every run would train the same weights."""
    if not _SHARED:
        _SHARED.append(small_model(num_classes))
    return _SHARED[0]


def compiled_model(num_classes):
    model = small_model(num_classes)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def trained_model(num_classes):
    model = small_model(num_classes)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(*TRAIN, epochs=1, batch_size=32, verbose=0)
    model.compiled = False  # only its optimizer's steps show it was trained
    return model


RULE = "; model_fn must return a new, uncompiled keras.Model on every call (runs share no weights)."


@pytest.mark.parametrize("model_fn, reason", [
    (one_model, "model_fn(3) returned a model it returned before"),
    (compiled_model, "model_fn(3) returned a compiled model"),
    (trained_model, "model_fn(3) returned a trained model (its optimizer took 2 steps)"),
])
@pytest.mark.parametrize("api", ["evaluate", "search"])
def test_a_model_function_that_returns_a_model_twice_or_compiled_is_refused(tmp_path, model_fn, reason, api):
    """A model_fn returning one object trained every run (or every candidate) on the same weights."""
    from ngl_keras.gp.evolution import SearchStopped

    _SHARED.clear()
    with pytest.raises((ValueError, SearchStopped)) as error:
        if api == "evaluate":
            ngl_keras.evaluate(["ce", "ngl"], model_fn, TRAIN, VALIDATION, TEST, epochs=1, batch_size=16,
                               out=tmp_path / "out", strategy="none", log=lambda *_: None)
        else:
            ngl_keras.gp.search(model_fn, TRAIN, VALIDATION, out=tmp_path / "search", epochs=1, batch_size=16,
                                config={"population": 2, "generations": 1, "fitness": {"references": []}},
                                log=lambda *_: None)
    # the search stops on the candidate that built the second model, naming it and the same line
    assert str(error.value) == reason + RULE or (api == "search" and f"raised ValueError: {reason}{RULE}" in
                                                 str(error.value) and "\n" not in str(error.value))
    assert not (tmp_path / "out" / "runs.jsonl").exists()  # no run recorded
