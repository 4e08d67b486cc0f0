"""The segmentation metrics: one confusion matrix over a whole validation set, and the scores the
DeepLab reference implementation reports from it.

The matrix is accumulated in numpy (predictions are converted with `keras.ops.convert_to_numpy`), so
every backend gives the same numbers. Rows are the ground truth, columns the prediction; void pixels
(label 255) are dropped before counting. The scores are those of `scores()` in
kazuto1011/deeplab-pytorch, libs/utils/metric.py (after wkentaro/pytorch-fcn), SPEC §8:

    pixel accuracy         = trace(hist) / sum(hist)
    mean accuracy          = nanmean_c(hist[c, c] / row_c)
    IoU_c                  = hist[c, c] / (row_c + col_c − hist[c, c])
    mean IoU               = nanmean of IoU_c over classes with row_c > 0 (≥ 1 ground-truth pixel)
    frequency-weighted IoU = Σ_{c: row_c > 0} (row_c / sum(hist)) · IoU_c

Differs from Keras's `MeanIoU`, on purpose: there a class that is predicted but absent from the
ground truth counts with IoU 0; here (as in the reference) it does not enter the mean.

    matrix = ConfusionMatrix(classes=21)
    matrix.update(labels, model.predict(images))   # per batch, over the whole validation set
    matrix.scores()["miou"]
"""

import keras
import numpy as np

VOID = 255


def label_map(labels, classes, void=VOID):
    """Integer labels of shape (B, H, W) from (B, H, W) or (B, H, W, 1); a value outside
    [0, classes) ∪ {void} is a one-line ValueError."""
    labels = np.asarray(keras.ops.convert_to_numpy(labels))
    if labels.ndim == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (batch, height, width) or (batch, height, width, 1); "
                         f"got {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must be integer class ids; got non-integer values.")
        labels = labels.astype(np.int64)
    bad = (labels != void) & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise ValueError(f"label value {int(labels[bad][0])} is outside [0, {classes}) and not the void "
                         f"label {void}.")
    return labels.astype(np.int64)


def predicted_map(predictions, classes):
    """Class ids of shape (B, H, W) from scores (logits or probabilities) of shape (B, H, W, classes)
    or from a label map (B, H, W) or (B, H, W, 1)."""
    predictions = np.asarray(keras.ops.convert_to_numpy(predictions))
    if predictions.ndim == 4 and predictions.shape[-1] == classes and classes > 1:
        return np.argmax(predictions, axis=-1)
    return label_map(predictions, classes, void=None)


class ConfusionMatrix:
    """`matrix[t, p]` counts the pixels of ground-truth class t predicted as p, void pixels dropped,
    summed over every `update`."""

    def __init__(self, classes, void=VOID):
        if classes < 1:
            raise ValueError(f"classes must be >= 1; got {classes}.")
        self.classes, self.void = classes, void
        self.matrix = np.zeros((classes, classes), np.int64)

    def update(self, labels, predictions):
        """Add one batch: `labels` (B, H, W[, 1]) with void pixels, `predictions` scores
        (B, H, W, classes) or a label map of the labels' shape."""
        labels = label_map(labels, self.classes, self.void)
        predicted = predicted_map(predictions, self.classes)
        if predicted.shape != labels.shape:
            raise ValueError(f"predictions of shape {predicted.shape} (as label maps) do not match labels of "
                             f"shape {labels.shape}; upsample the logits to the label size first.")
        valid = labels != self.void
        pairs = self.classes * labels[valid] + predicted[valid]
        self.matrix += np.bincount(pairs, minlength=self.classes ** 2).reshape(self.classes, self.classes)
        return self

    def scores(self):
        return scores(self.matrix)


def scores(matrix):
    """{"pixel_accuracy", "mean_accuracy", "miou", "frequency_weighted_iou", "class_iou"} of a
    confusion matrix (rows: ground truth), with the reference's semantics (module docstring).
    `class_iou` holds NaN for a class neither present nor predicted."""
    hist = np.asarray(matrix, np.float64)
    if hist.sum() == 0:
        raise ValueError("the confusion matrix is empty: no pixel outside the void label was counted.")
    diagonal, truth, predicted = np.diag(hist), hist.sum(axis=1), hist.sum(axis=0)
    present = truth > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        class_accuracy = diagonal / truth
        iou = diagonal / (truth + predicted - diagonal)
    frequency = truth / hist.sum()
    return {
        "pixel_accuracy": float(diagonal.sum() / hist.sum()),
        "mean_accuracy": float(np.mean(class_accuracy[present])),
        "miou": float(np.mean(iou[present])),
        "frequency_weighted_iou": float((frequency[present] * iou[present]).sum()),
        "class_iou": iou,
    }


class MeanIoU(keras.metrics.Metric):
    """Mean IoU with the reference's semantics (`scores`), as a Keras metric: the confusion matrix
    accumulated over an epoch in keras.ops (int32 counts, any backend, inside `fit`), so that `fit`
    logs `miou` and `val_miou` each epoch and ReduceLROnPlateau can follow the validation mean IoU.
    A record's numbers come from `ConfusionMatrix` on the predictions (numpy), this only steers
    training."""

    def __init__(self, classes, void=VOID, name="miou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.classes, self.void = classes, void
        self.matrix = self.add_variable(shape=(classes * classes,), initializer="zeros", dtype="int32",
                                        name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, axis=-1)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        valid = ops.not_equal(y_true, self.void)
        pairs = ops.reshape(ops.where(valid, y_true, 0) * self.classes + predicted, (-1,))
        counts = ops.segment_sum(ops.reshape(ops.cast(valid, "int32"), (-1,)), pairs,
                                 num_segments=self.classes * self.classes)
        self.matrix.assign_add(counts)

    def result(self):
        ops = keras.ops
        hist = ops.cast(ops.reshape(self.matrix, (self.classes, self.classes)), "float32")
        diagonal = ops.diagonal(hist)
        truth, predicted = ops.sum(hist, axis=1), ops.sum(hist, axis=0)
        iou = diagonal / ops.maximum(truth + predicted - diagonal, 1.0)
        present = ops.cast(truth > 0, "float32")
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.matrix.assign(keras.ops.zeros((self.classes * self.classes,), "int32"))

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "void": self.void}
