"""The task registry: what a grid's `task` decides — which datasets, settings and models it names,
the arguments it adds to every loss, its input batches, the metrics `fit` logs, what is measured on
the test predictions after training, and the report's default metric and curve.

- classification (the paper's Table 2): tfds / in-memory datasets (`ngl_keras.data`), the model
  registry (`ngl_keras.models`), `fit` logs accuracy; the record holds the test accuracy and, from
  the same predictions, the calibration (`ngl_keras.calibration`: NLL, ECE, mean confidence and the
  reliability bins) and the top-k accuracies the settings name (ImageNet's top1, top5).
- segmentation (Tables 4 and 5): datasets on disk (`segmentation_data.DATASETS`), the segmentation
  models (`segmentation_models.MODELS`), every loss built with `ignore_class=255`; `fit` logs the
  reference's mean IoU (`segmentation_metrics.MeanIoU`); the record holds the reference's scores of
  one confusion matrix over the test split (`segmentation_metrics.ConfusionMatrix`).

Both run through the same grid, `training.train_run`, records, resume and report.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from ngl_keras import calibration
from ngl_keras import config as config_module
from ngl_keras import data as data_module
from ngl_keras import models as models_module
from ngl_keras import segmentation_data, segmentation_metrics, segmentation_models


def predictions(model, batches, callbacks=()):
    """(predictions, labels) of the test `batches` in order (numpy): `model.predict` once over them
    (distributed as `evaluate` is: with several replicas each sees its share), and the labels read
    from the same batches."""
    outputs = model.predict(batches, verbose=0, callbacks=list(callbacks))
    labels = np.concatenate([keras.ops.convert_to_numpy(y) for _, y in batches])
    return outputs, labels


# Classification.

def _classification_model(run, train_input):
    """The run's classifier, behind the input steps that the input did not do (`data.placement`)."""
    dataset, settings = run.dataset_info, run.settings
    placement = data_module.placement()
    common = dict(name=run.model, augmentation=settings.augmentation, seed=run.seed)
    if run.model_source is not None:  # the examples as given, augmented (when on) in the model
        model = run.model_source.build(dataset.classes, kernel_l2=run.loss.kernel_l2())
        return placement.model(model, train_input, **common)
    model = models_module.build_model(
        run.model, dataset.classes, settings.image_size, channels=dataset.channels,
        weights=run.weights, kernel_l2=run.loss.kernel_l2(),
        output_activation="linear" if run.loss.logits else "softmax")
    return placement.model(model, train_input, image_size=settings.image_size, preprocess=run.model, **common)


def classification_scores(model, test, logits=False, callbacks=(), metrics=None):
    """Test accuracy, calibration and the top-k accuracies named in `metrics` ("top1", "top5") from
    one prediction of the test batches. The accuracy is `model.evaluate`'s ("accuracy" with one-hot
    labels: argmax of prediction and label agree), top-k that of keras's TopKCategoricalAccuracy
    (`top_k_accuracy`); a model ending in `logits` (a loss that takes them) is scored on their
    softmax. Several JAX processes (multi-host data parallelism): predictions span other processes'
    devices and cannot be gathered by `predict`, so the accuracies are `model.evaluate`'s (compiled
    with `metrics`) and calibration is not recorded."""
    metrics = metrics or ()
    if _processes() > 1:
        evaluated = model.evaluate(test, verbose=0, callbacks=list(callbacks), return_dict=True)
        accuracy = evaluated.get("accuracy", evaluated.get("top1"))
        return {"test_accuracy": None if accuracy is None else float(accuracy),
                **{name: float(evaluated[name]) for name in metrics}}
    outputs, labels = predictions(model, test, callbacks)
    top = {name: top_k_accuracy(outputs, labels, top_k(name)) for name in metrics}
    probabilities = np.asarray(outputs, np.float64)
    if logits:
        probabilities = np.exp(probabilities - probabilities.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
    summary = calibration.summary(probabilities, labels)
    count, accuracy, confidence = calibration.reliability(probabilities, labels)
    scores = {"test_accuracy": summary["accuracy"], "test_nll": summary["nll"], "test_ece": summary["ece"],
              "test_mean_confidence": summary["mean_confidence"],
              "test_reliability": {"count": count.tolist(), "accuracy": _nan_to_none(accuracy),
                                   "confidence": _nan_to_none(confidence)}, **top}
    if probabilities.shape[-1] == 2:
        probabilities, indices = calibration.checked(probabilities, labels)
        scores.update(binary_scores(probabilities.argmax(-1), indices))
    return scores


def binary_scores(predicted, labels):
    """A two-class problem's scores as the AnyLoss paper reports them, class 1 the positive class:
    F1, G-mean sqrt(TPR·TNR) and balanced accuracy (TPR + TNR)/2 of the predicted classes (the
    argmax: p₁ > 1/2). A ratio with a zero denominator (no positive predicted or present) is 0."""
    predicted, labels = np.asarray(predicted).ravel() == 1, np.asarray(labels).ravel() == 1
    tp = float(np.sum(predicted & labels))
    fp, fn = float(np.sum(predicted & ~labels)), float(np.sum(~predicted & labels))
    tn = float(predicted.size) - tp - fp - fn

    def ratio(a, b):
        return a / b if b else 0.0

    tpr, tnr = ratio(tp, tp + fn), ratio(tn, tn + fp)
    return {"test_f1": ratio(2 * tp, 2 * tp + fp + fn), "test_gmean": float(np.sqrt(tpr * tnr)),
            "test_balanced_accuracy": 0.5 * (tpr + tnr), "test_positive_rate": ratio(tp + fp, float(predicted.size))}


def top_k(name):
    """The k of a top-k metric's name ("top5": 5)."""
    return int(name.removeprefix("top"))


def top_k_accuracy(outputs, labels, k):
    """keras.metrics.TopKCategoricalAccuracy(k) of model `outputs` (N, C) against one-hot or soft
    `labels` (their argmax class): the share of examples whose class scores below at most k − 1
    others (a tie at the k-th place counts as in, and a NaN score of the class as −∞, as
    `keras.ops.in_top_k`)."""
    outputs = np.asarray(outputs)
    at_label = np.take_along_axis(outputs, np.argmax(labels, axis=-1)[:, None], axis=-1)
    at_label = np.where(np.isnan(at_label), -np.inf, at_label)
    return float(np.mean((outputs > at_label).sum(axis=-1) < k))


def _processes():
    """The processes of a JAX multi-process run (1 on other backends and single-process runs)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def _nan_to_none(values):
    return [None if not np.isfinite(v) else float(v) for v in values]


# Segmentation.

def _segmentation_settings(dataset, configs_dir, override=None):
    path = Path(configs_dir) / "datasets" / f"{dataset.name}.yaml"
    settings = config_module.validate(config_module.read_yaml(path), config_module.SegmentationSettings,
                                      str(path), partial=True)
    return config_module.build(config_module.SegmentationSettings, config_module.merge(settings, override or {}),
                               f"settings for {dataset.name}")


def _segmentation_inputs(run, datasets, replicas=1, test=True):
    """(train, validation, test) `SegmentationBatches`: random crops for training (the reference's
    augmentation), full images for evaluation, padded to the model's multiple. The same reader and
    batches on every backend; on TensorFlow Keras reads them through tf.data (`Placement.keras_input`)."""
    settings, dataset, root = run.settings, run.dataset_info, datasets.data_dir
    multiple = segmentation_models.model(run.model).multiple
    augmentation = segmentation_data.Augmentation(settings.crop_size, settings.scales, settings.mean, settings.flip)
    for name in ("batch_size", "eval_batch_size"):
        if getattr(settings, name) % replicas:
            raise ValueError(f"{name} {getattr(settings, name)} does not split over {replicas} replicas: give a "
                             f"multiple of {replicas}, or --strategy none (full images of different sizes are "
                             "evaluated one at a time).")
    if settings.crop_size % multiple:
        raise ValueError(f"crop_size {settings.crop_size} is not a multiple of {multiple}, which {run.model} needs.")
    train = segmentation_data.SegmentationExamples(dataset.split(root, settings.splits.train, settings.limit_train),
                                                   augmentation, seed=run.seed, shuffle=True)
    evaluation = dict(pad_multiple=multiple, mean=settings.mean)
    batches = [segmentation_data.SegmentationBatches(train, batch_size=settings.batch_size,
                                                     steps=settings.iterations_per_epoch)]
    for role in ("validation", "test") if test else ("validation",):
        examples = segmentation_data.SegmentationExamples(dataset.split(root, getattr(settings.splits, role)),
                                                          **evaluation)
        batches.append(segmentation_data.SegmentationBatches(examples, batch_size=settings.eval_batch_size))
    return tuple(batches) if test else (*batches, None)


def _segmentation_model(run, train_input):
    """The segmentation model behind the reference's preprocessing (the image mean subtracted)."""
    entry, settings = segmentation_models.model(run.model), run.settings
    net = entry.build(run.dataset_info.classes, weights=run.weights,
                      output_activation=None if run.loss.logits else "softmax")
    if run.loss.kernel_l2():
        models_module.apply_kernel_l2(net, run.loss.kernel_l2())
    images = keras.Input((None, None, 3), name="images")
    x = keras.layers.Normalization(mean=list(settings.mean), variance=[1.0] * 3, name="subtract_mean")(images)
    outputs = keras.layers.Activation("linear", dtype="float32", name="scores")(net(x))  # float32 under mixed precision
    return keras.Model(images, outputs, name=run.model)


def _segmentation_scores(model, test, run, callbacks=()):
    """The reference's scores of one confusion matrix over the test split's full images (one
    `predict` per batch: full images may differ in size from batch to batch)."""
    matrix = segmentation_metrics.ConfusionMatrix(run.dataset_info.classes)
    for x, y in data_module.placement().keras_input(test):
        matrix.update(keras.ops.convert_to_numpy(y),
                      model.predict(x, verbose=0, batch_size=len(x), callbacks=list(callbacks)))
    scores = matrix.scores()
    return {"test_accuracy": None, **{name: scores[name] for name in SEGMENTATION_METRICS},
            "class_iou": _nan_to_none(scores["class_iou"])}


SEGMENTATION_METRICS = ("miou", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iou")


@dataclass(frozen=True)
class Task:
    """What a grid's task decides (module docstring). Callables:
    `dataset(name, data_dir)`, `settings(dataset, configs_dir, override)`, `model(name)` (a
    registry entry), `inputs(run, datasets, replicas, test)`, `build_model(run, train_input)`,
    `fit_metrics(run)` (what `fit` logs), `scores(model, test, run, callbacks)` (the record's fields)."""

    name: str
    dataset: Callable
    settings: Callable
    model: Callable
    inputs: Callable
    build_model: Callable
    fit_metrics: Callable
    scores: Callable
    loss_arguments: dict    # added to every loss of the grid
    metrics: tuple          # the record's metrics, measured on the test split after training
    default_metric: str     # the report's
    curve: str              # the history key plotted per epoch

    def summary(self, record):
        """The run's result in one phrase for the grid's log."""
        value = record.get(self.default_metric)
        shown = "n/a" if value is None else f"{value:.4f}"
        line = f"test accuracy {shown}" if self.default_metric == "test_accuracy" else f"{self.default_metric} {shown}"
        if "test_f1" in record:  # a two-class problem
            line += f", F1 {record['test_f1']:.4f}"
            if record.get("test_positive_rate") in (0.0, 1.0):
                predicted = "no" if record["test_positive_rate"] == 0.0 else "every"
                line += (f"; WARNING: the model predicts {predicted} test example positive (collapsed to one class: "
                         "with AnyLoss, a smaller learning rate or a larger batch; see its docstring)")
        return line


CLASSIFICATION = Task(
    "classification",
    dataset=lambda name, data_dir=None: data_module.info(name, data_dir),
    settings=config_module.dataset_settings,
    model=models_module.info,
    inputs=lambda run, datasets, replicas=1, test=True: datasets.pipelines(run, replicas, test=test),
    build_model=_classification_model,
    fit_metrics=lambda run: ["accuracy"],
    scores=lambda model, test, run, callbacks=(): classification_scores(model, test, run.loss.logits, callbacks,
                                                                        getattr(run.settings, "metrics", None)),
    loss_arguments={},
    metrics=("test_accuracy", "test_nll", "test_ece", "test_mean_confidence"),
    default_metric="test_accuracy",
    curve="val_accuracy")

SEGMENTATION = Task(
    "segmentation",
    dataset=lambda name, data_dir=None: segmentation_data.dataset(name),
    settings=_segmentation_settings,
    model=segmentation_models.model,
    inputs=_segmentation_inputs,
    build_model=_segmentation_model,
    fit_metrics=lambda run: [segmentation_metrics.MeanIoU(run.dataset_info.classes)],
    scores=_segmentation_scores,
    loss_arguments={"ignore_class": segmentation_data.VOID},
    metrics=SEGMENTATION_METRICS,
    default_metric="miou",
    curve="val_miou")

TASKS = {task.name: task for task in (CLASSIFICATION, SEGMENTATION)}


def get(name):
    """The `Task` of `name` (a config's `task`), or a one-line ValueError naming the known ones."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]


def of_records(records):
    """The task of a grid's records (records written before tasks: classification)."""
    names = {record.get("task", "classification") for record in records}
    if len(names) > 1:
        raise ValueError(f"the records mix tasks ({', '.join(sorted(names))}); report each from its own directory.")
    return get(names.pop() if names else "classification")
