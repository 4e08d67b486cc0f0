"""AnyLoss: confusion-matrix metrics turned into losses (Han, Moniz & Chawla, KDD 2024)."""

import keras
from keras import ops

from ngl_keras.losses.base import (
    PACKAGE, BatchLoss, check_flag, check_positive, class_sums, one_hot_targets,
)

METRICS = ("accuracy", "fbeta", "gmean", "balanced_accuracy")
AVERAGES = ("macro", "micro")


def _metric(name, tp, pos, soft_pos, n, beta, epsilon):
    """metric(TP, TN, FP, FN) from TP, P = TP + FN, S = TP + FP and n (AnyLoss, Eq. 3-6)."""
    tn = n - pos - soft_pos + tp
    if name == "accuracy":
        return (tp + tn) / n
    if name == "fbeta":
        b2 = beta * beta
        return (1.0 + b2) * tp / (b2 * pos + soft_pos + epsilon)
    neg = n - pos
    if name == "gmean":
        return ops.sqrt(tp * tn / ((pos + epsilon) * (neg + epsilon)) + epsilon)
    return 0.5 * (tp / (pos + epsilon) + tn / (neg + epsilon))  # balanced accuracy


def anyloss(y_true, y_pred, metric="fbeta", beta=1.0, L=73.0, average="macro",
            from_logits=False, epsilon=1e-7, sample_weight=None):
    """Batch AnyLoss: ``1 − metric`` of the soft confusion matrix built from ``A(p)``.

    ``A(p) = 1 / (1 + exp(−L·(p − 0.5)))``; TP = Σ y·A(p), FN = P − TP, FP = S − TP,
    TN = n − P − S + TP with n the (weighted) number of examples in the batch.
    One output unit: the binary loss of the paper. C ≥ 2 units (softmax): one-vs-rest
    matrices per class, macro- or micro-averaged.
    """
    if len(y_pred.shape) == 1:
        y_pred = ops.expand_dims(y_pred, -1)
    binary = y_pred.shape[-1] == 1
    y = one_hot_targets(y_true, y_pred)
    if from_logits:
        p = ops.sigmoid(y_pred) if binary else ops.softmax(y_pred, axis=-1)
    else:
        p = y_pred
    a = ops.sigmoid(L * (p - 0.5))
    tp, pos, soft_pos, n = class_sums(y, a, sample_weight)
    if average == "micro" and not binary:
        classes = float(y_pred.shape[-1])
        tp, pos, soft_pos, n = ops.sum(tp), ops.sum(pos), ops.sum(soft_pos), n * classes
    return 1.0 - ops.mean(_metric(metric, tp, pos, soft_pos, n, beta, epsilon))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AnyLoss(BatchLoss):
    """AnyLoss: a confusion-matrix metric as a differentiable loss.

    Each prediction p is sharpened by the approximation function
    ``A(p) = 1 / (1 + exp(−L·(p − 0.5)))`` (AnyLoss paper, Eq. 1) and the batch's soft
    confusion matrix is

        TP = Σ y·A(p)   FN = P − TP   FP = S − TP   TN = n − P − S + TP
        (P = Σ y, S = Σ A(p), n = examples in the batch)

    and the loss is ``1 − metric``: accuracy (TP+TN)/n, F-beta (1+β²)TP/(β²P+S),
    G-mean sqrt(TP·TN/(P(n−P))) or balanced accuracy (TP/P + TN/(n−P))/2.

    This is a batch-level loss: it returns one scalar per batch (see `BatchLoss` for what
    sample weights and distribution strategies do with it). With one output unit (sigmoid)
    it is the paper's binary loss. With C ≥ 2 softmax outputs, which the paper leaves as
    future work, this package's extension builds one-vs-rest matrices per class and averages
    the metric over classes (``average="macro"``) or computes it on the summed counts
    (``average="micro"``, n = examples × C).

    Where this differs from the published code, on purpose: n is the batch size (the code
    uses the training-set size, which biases G-mean and balanced accuracy on mini-batches);
    an `epsilon` in every ratio keeps a batch with no positives (or no negatives) finite in
    value and gradient (the code gives NaN); A is always applied (one published example
    forgets the sigmoid).

    Args:
        metric: "accuracy", "fbeta", "gmean" or "balanced_accuracy".
        beta: β of F-beta (1 gives F1).
        L: amplifying scale of A, > 0 (73, the paper's recommendation).
        average: "macro" or "micro" for C ≥ 2 outputs.
        from_logits: apply sigmoid (one unit) or softmax (C units) to `y_pred` first.
        epsilon: the stabiliser added to denominators.

    Usage:
        model.compile(optimizer="adam", loss=ngl_keras.AnyLoss(metric="fbeta"))
    """

    def __init__(self, metric="fbeta", beta=1.0, L=73.0, average="macro", from_logits=False,
                 epsilon=1e-7, reduction="sum_over_batch_size", name=None, dtype=None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}.")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}; got {average!r}.")
        super().__init__(
            anyloss, name=name or f"anyloss_{metric}", reduction=reduction, dtype=dtype,
            metric=metric, beta=check_positive("beta", beta), L=check_positive("L", L),
            average=average, from_logits=check_flag("from_logits", from_logits),
            epsilon=check_positive("epsilon", epsilon),
        )
