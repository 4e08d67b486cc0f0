"""The task registry: classification's records gain calibration from the same predictions as the test
accuracy (which stays `model.evaluate`'s), on every backend; the report reads each metric's direction."""

import dataclasses

import keras
import numpy as np
import pytest

import ngl_keras
from ngl_keras import calibration, recipe, report, tasks
from tests.test_own_data import TEST, TRAIN, VALIDATION, small_model

pytestmark = pytest.mark.any_backend


def test_calibration_comes_from_the_same_predictions_as_the_test_accuracy(tmp_path, monkeypatch):
    trained = []

    class KeepModelAndTest(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            trained.append(self.model)

    schedule = recipe.schedule_callbacks
    monkeypatch.setattr(recipe, "schedule_callbacks", lambda s: schedule(s) + [KeepModelAndTest()])
    inputs = tasks.CLASSIFICATION.inputs
    tests = []

    def keep_test(*args, **kwargs):
        batches = inputs(*args, **kwargs)
        tests.append(batches[2])
        return batches

    monkeypatch.setitem(tasks.TASKS, "classification", dataclasses.replace(tasks.CLASSIFICATION, inputs=keep_test))
    (record,) = ngl_keras.evaluate(["ce"], small_model, TRAIN, VALIDATION, TEST, epochs=1, batch_size=8,
                                   out=tmp_path / "out", strategy="none", log=lambda *_: None).records
    (model,), (test,) = trained, tests
    # Today's number: model.evaluate's accuracy on the same test input.
    assert record["test_accuracy"] == pytest.approx(float(model.evaluate(test, verbose=0)[1]), abs=1e-7)
    probabilities = keras.ops.convert_to_numpy(model.predict(TEST[0].astype("float32"), verbose=0))
    expected = calibration.summary(probabilities, TEST[1])
    assert record["test_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-7)
    for name in ("nll", "ece", "mean_confidence"):
        assert record[f"test_{name}"] == pytest.approx(expected[name], abs=1e-5), name
    count, accuracy, confidence = calibration.reliability(probabilities, TEST[1])
    bins = record["test_reliability"]
    assert bins["count"] == count.tolist() and sum(bins["count"]) == len(TEST[1]) == 30
    used = count > 0
    np.testing.assert_allclose(np.array(bins["accuracy"], float)[used], accuracy[used], atol=1e-6)
    np.testing.assert_allclose(np.array(bins["confidence"], float)[used], confidence[used], atol=1e-5)
    assert all(v is None for v, u in zip(bins["accuracy"], used) if not u)  # empty bins: null in JSON
    assert (tmp_path / "out" / "reliability.png").stat().st_size > 0


def _record(loss, seed, **metrics):
    return {"key": f"d/m/{loss}/{seed}", "dataset": "d", "model": "m", "loss": loss, "run": seed, "seed": seed,
            "status": "ok", "history": {}, "weights": None, "config": {}, **metrics}


def test_lower_is_better_metrics_call_a_fall_better():
    records = [_record("ce", s, test_ece=0.10, test_accuracy=0.9) for s in range(3)] + \
              [_record("ngl", s, test_ece=e, test_accuracy=0.9) for s, e in enumerate((0.05, 0.051, 0.049))]
    result = report.table(records, metric="test_ece")
    ngl = result["rows"][1]
    assert ngl["cells"]["d"] == pytest.approx(-50.0) and ngl["counts"] == {"better": 1, "same": 0, "worse": 0}
    assert ngl["paired"]["rule"] == "better" and ngl["paired"]["resolved"] == "better"
    text = report.markdown(result)
    assert "| ce | 10.0 |" in text and "Lower test_ece is better" in text
    nll = report.table([_record("ce", 0, test_nll=0.5), _record("ngl", 0, test_nll=0.6)], metric="test_nll")
    assert nll["rows"][0]["cells"]["d"] == pytest.approx(0.5)  # not a fraction: not shown ×100
    assert nll["rows"][1]["counts"]["worse"] == 1
    assert report.verdict(+2.0) == "better" and report.verdict(+2.0, higher_is_better=False) == "worse"
    assert report.resolved_verdict(-3.0, -1.0, higher_is_better=False) == "better"
    assert report.resolved_verdict(-3.0, 0.0, higher_is_better=False) == "unresolved"


def test_tasks_are_a_registry_and_an_unknown_one_is_named():
    assert set(tasks.TASKS) == {"classification", "segmentation"}
    assert tasks.get("segmentation").loss_arguments == {"ignore_class": 255}
    assert tasks.of_records([{"loss": "ce"}]).name == "classification"  # records written before tasks
    with pytest.raises(ValueError, match="unknown task 'detection'; known tasks: classification, segmentation."):
        tasks.get("detection")


def test_the_poly_schedule_counts_iterations_and_weight_decay_is_passed(tmp_path):
    from ngl_keras.segmentation_data import dataset
    from tests.paths import CONFIGS

    settings = tasks.SEGMENTATION.settings(dataset("voc2012"), CONFIGS)
    assert settings.optimizer.poly_power == 0.9 and settings.reduce_lr is None
    assert settings.epochs * settings.iterations_per_epoch == 20_000  # the reference's VOC iterations
    optimizer = recipe.optimizer(settings, steps=20_000)
    assert optimizer.weight_decay == pytest.approx(5e-4)
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert isinstance(schedule, keras.optimizers.schedules.PolynomialDecay) and schedule.decay_steps == 20_000
    assert float(schedule(10_000)) == pytest.approx(2.5e-4 * 0.5 ** 0.9, rel=1e-5)
    assert float(schedule(20_000)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="poly schedule needs the run's number of iterations"):
        recipe.optimizer(settings)


def test_binary_scores_against_a_hand_counted_confusion_matrix():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    predicted = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])  # TP 2, FN 1, FP 1, TN 6
    scores = tasks.binary_scores(predicted, labels)
    assert scores["test_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["test_gmean"] == pytest.approx(np.sqrt(2 / 3 * 6 / 7))
    assert scores["test_balanced_accuracy"] == pytest.approx((2 / 3 + 6 / 7) / 2)
    assert scores["test_positive_rate"] == pytest.approx(0.3)
    # a model that never predicts the positive class: every positive-class score is 0, not NaN
    assert tasks.binary_scores(np.zeros(10, int), labels) == {"test_f1": 0.0, "test_gmean": 0.0,
                                                             "test_balanced_accuracy": 0.5, "test_positive_rate": 0.0}


def test_a_two_class_problem_records_f1_gmean_and_balanced_accuracy_of_its_predictions(tmp_path, monkeypatch):
    seen = []
    predictions = tasks.predictions

    def keep(*args, **kwargs):
        seen.append(predictions(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(tasks, "predictions", keep)
    positive = 1
    binary = [(x, (y == positive).astype("int64")) for x, y in (TRAIN, VALIDATION, TEST)]
    (record,) = ngl_keras.evaluate([{"name": "anyloss_f1", "average": "binary"}], small_model, *binary,
                                   epochs=1, batch_size=8, out=tmp_path / "out", strategy="none",
                                   log=lambda *_: None).records
    assert record["loss_config"]["average"] == "binary"
    (outputs, labels), = seen
    predicted, truth = np.asarray(outputs).argmax(-1), np.asarray(labels).reshape(len(outputs), -1).argmax(-1)
    assert np.array_equal(truth, binary[2][1])
    tp = np.sum((predicted == 1) & (truth == 1))
    fp, fn = np.sum((predicted == 1) & (truth == 0)), np.sum((predicted == 0) & (truth == 1))
    tn = truth.size - tp - fp - fn
    tpr, tnr = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
    assert record["test_f1"] == pytest.approx(2 * tp / max(2 * tp + fp + fn, 1))
    assert record["test_gmean"] == pytest.approx(np.sqrt(tpr * tnr))
    assert record["test_balanced_accuracy"] == pytest.approx((tpr + tnr) / 2)
    assert record["test_accuracy"] == pytest.approx(np.mean(predicted == truth))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # calibration of the NaN row
def test_top1_and_top5_come_from_the_one_prediction_as_keras_top_k_accuracy_scores_it():
    """An ImageNet-style run's top-k accuracies: from the predictions the record's other scores use
    (`model.evaluate` is not called), equal to keras's TopKCategoricalAccuracy on them and to a
    numpy reference; ties at the k-th place and NaN scores as keras counts them."""
    from ngl_keras.data import ArrayBatches

    rng = np.random.default_rng(0)
    classes, count = 8, 40
    scores = rng.normal(size=(count, classes)).astype("float32")
    labels = rng.integers(0, classes, count)
    scores[0] = 1.0                                                       # a tie of every class
    scores[1, :] = np.arange(classes)
    scores[1, labels[1]] = scores[1, (labels[1] + 1) % classes] = 100.0   # tied for the first place
    scores[2, labels[2]] = np.nan                                         # a NaN at the label: never in the top k
    model = keras.Sequential([keras.Input((classes,)), keras.layers.Identity()])
    model.evaluate = lambda *args, **kwargs: pytest.fail("top-k must come from the one prediction")
    test = ArrayBatches((scores, labels), classes=classes, batch_size=16)
    got = tasks.classification_scores(model, test, logits=True, metrics=["top1", "top5"])
    one_hot = np.eye(classes, dtype="float32")[labels]
    for name, k in (("top1", 1), ("top5", 5)):
        metric = keras.metrics.TopKCategoricalAccuracy(k)
        metric.update_state(one_hot, scores)
        assert got[name] == pytest.approx(float(metric.result()), abs=1e-7), name
        rank = np.array([(row > row[y]).sum() if np.isfinite(row[y]) else classes for row, y in zip(scores, labels)])
        assert got[name] == pytest.approx(np.mean(rank < k)), name
    assert got["top1"] < got["top5"] < 1.0 and got["test_accuracy"] is not None


def test_the_run_line_of_a_two_class_run_gives_f1_and_warns_when_the_model_predicts_one_class():
    ok = {"test_accuracy": 0.9, "test_f1": 0.5, "test_positive_rate": 0.04}
    assert tasks.CLASSIFICATION.summary(ok) == "test accuracy 0.9000, F1 0.5000"
    collapsed = tasks.CLASSIFICATION.summary({**ok, "test_f1": 0.0, "test_positive_rate": 0.0})
    assert collapsed.startswith("test accuracy 0.9000, F1 0.0000; WARNING: the model predicts no test example "
                                "positive (collapsed to one class")
    assert "predicts every test example" in tasks.CLASSIFICATION.summary({**ok, "test_positive_rate": 1.0})
    assert tasks.CLASSIFICATION.summary({"test_accuracy": 0.5}) == "test accuracy 0.5000"  # ten classes: as before
