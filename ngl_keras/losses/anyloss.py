"""AnyLoss: confusion-matrix metrics turned into losses (Han, Moniz & Chawla, KDD 2024)."""

import keras
from keras import ops

from ngl_keras.losses.base import (
    PACKAGE, BatchLoss, check_bound, check_flag, check_positive, class_sums, one_hot_targets,
)
from ngl_keras.settings import shown

METRICS = ("accuracy", "fbeta", "gmean", "balanced_accuracy")
MAX_BETA = 1e18  # F-beta's β² must stay within float32's 3.4e38 (measured: 1e19 finite, 1e20 inf)
AVERAGES = ("macro", "micro", "binary")


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


PAPER_THRESHOLD, PAPER_L = 0.5, 73.0  # AnyLoss paper: one sigmoid output
SOFTMAX_SPAN = 2.0  # L·(1/C) for C >= 3 softmax outputs: the amplifier's tangent at 1/C reaches 0 at p = 0


def amplifier_defaults(classes):
    """(threshold, L) of the amplifier ``A(p) = sigmoid(L·(p − threshold))`` for `classes`
    outputs: the paper's (0.5, 73) for one sigmoid output or two softmax outputs, and
    (1/C, 2C) for C >= 3 softmax outputs. The derivation is in the `AnyLoss` docstring.
    """
    if classes <= 2:
        return PAPER_THRESHOLD, PAPER_L
    return 1.0 / classes, SOFTMAX_SPAN * classes


def anyloss(y_true, y_pred, metric="fbeta", beta=1.0, L=None, average="macro",
            from_logits=False, epsilon=1e-7, threshold=None, sample_weight=None):
    """Batch AnyLoss: ``1 − metric`` of the soft confusion matrix built from ``A(p)``.

    ``A(p) = 1 / (1 + exp(−L·(p − t)))``; TP = Σ y·A(p), FN = P − TP, FP = S − TP,
    TN = n − P − S + TP with n the (weighted) number of examples in the batch.
    One output unit: the binary loss of the paper. C ≥ 2 units (softmax): one-vs-rest
    matrices per class, macro- or micro-averaged; two units with ``average="binary"``: the
    matrix of class 1 alone (the paper's binary loss on a two-way softmax). ``L=None`` and ``threshold=None`` (t) take
    `amplifier_defaults` for the number of outputs.
    """
    if len(y_pred.shape) == 1:
        y_pred = ops.expand_dims(y_pred, -1)
    binary = y_pred.shape[-1] == 1
    y = one_hot_targets(y_true, y_pred)
    if from_logits:
        p = ops.sigmoid(y_pred) if binary else ops.softmax(y_pred, axis=-1)
    else:
        p = y_pred
    default_threshold, default_scale = amplifier_defaults(y_pred.shape[-1])
    threshold = default_threshold if threshold is None else threshold
    scale = default_scale if L is None else L
    a = ops.sigmoid(scale * (p - threshold))
    tp, pos, soft_pos, n = class_sums(y, a, sample_weight)
    if average == "binary" and not binary:
        if y_pred.shape[-1] != 2:
            raise ValueError(f"average='binary' scores the positive class of one sigmoid output or two softmax "
                             f"outputs; these predictions have {y_pred.shape[-1]}: use 'macro' or 'micro'.")
        tp, pos, soft_pos = tp[1:], pos[1:], soft_pos[1:]  # class 1 is the positive class
    if average == "micro" and not binary:
        classes = float(y_pred.shape[-1])
        tp, pos, soft_pos, n = ops.sum(tp), ops.sum(pos), ops.sum(soft_pos), n * classes
    return 1.0 - ops.mean(_metric(metric, tp, pos, soft_pos, n, beta, epsilon))


@keras.saving.register_keras_serializable(package=PACKAGE)
class AnyLoss(BatchLoss):
    """AnyLoss: a confusion-matrix metric as a differentiable loss.

    Each prediction p is sharpened by the approximation function
    ``A(p) = 1 / (1 + exp(−L·(p − t)))`` (AnyLoss paper, Eq. 1, with t = 0.5) and the batch's
    soft confusion matrix is

        TP = Σ y·A(p)   FN = P − TP   FP = S − TP   TN = n − P − S + TP
        (P = Σ y, S = Σ A(p), n = examples in the batch)

    and the loss is ``1 − metric``: accuracy (TP+TN)/n, F-beta (1+β²)TP/(β²P+S),
    G-mean sqrt(TP·TN/(P(n−P))) or balanced accuracy (TP/P + TN/(n−P))/2.

    This is a batch-level loss: it returns one scalar per batch (see `BatchLoss` for what
    sample weights and distribution strategies do with it). With one output unit (sigmoid)
    it is the paper's binary loss. With C ≥ 2 softmax outputs, which the paper leaves as
    future work, this package's extension builds one-vs-rest matrices per class and averages
    the metric over classes (``average="macro"``) or computes it on the summed counts
    (``average="micro"``, n = examples × C). Two softmax outputs with ``average="binary"``
    score class 1 alone, the positive class: p₁ = sigmoid(z₁ − z₀), so this is exactly the
    paper's binary loss on a one-sigmoid model (macro would average the positive and the
    negative class's metric, which on imbalanced data is another objective).

    The amplifier's defaults (``L=None, threshold=None``; `amplifier_defaults`):

    - One sigmoid output, and two softmax outputs: t = 0.5, L = 73, the paper's values
      (73 is the largest integer for which A(1) < 1 in float64). A two-class softmax output
      p₁ = sigmoid(z₁ − z₀) is the sigmoid model, and p > 1/2 is exactly its decision.
    - C ≥ 3 softmax outputs: t = 1/C and L = 2C. Derivation: a softmax model starts with
      every p_c ≈ 1/C, so with the paper's t = 0.5 and L = 73 every A(p) sits on the flat
      tail, A'(1/10) = 73·A·(1 − A) ≈ 1.5·10⁻¹¹, and a 10-class model does not learn (it
      stayed at chance for 15 epochs; docs/BENCHMARKS.md §5). 1/C is where the binary
      threshold 1/2 comes from (the uniform prediction, C = 2), and a class below 1/C can
      never be the argmax, so t = 1/C. For C ≥ 3, p_c > 1/C does not decide the argmax
      (only p_c > 1/2 does), so the step cannot be as sharp as the paper's: A is taken as the
      same function of the probability relative to uniform for every C,
      A = sigmoid(k·(C·p − 1)), i.e. L = k·C, with k = 2, for which A's tangent at 1/C spans
      p from 0 to 2/C. Then A(0) = 0.12, A(2/C) = 0.88, A(3/C) = 0.98: a class counts as
      predicted from about twice its uniform share, and no example is out of the gradient's
      reach at either end (A' at p = 0 is 42 % of its peak). Measured: small CNN on real
      Fashion-MNIST, 2 epochs of 16,384 images, F1 macro, test accuracy % for seeds 0/1/2
      (CE: 80.0/80.3/81.4):

          t = 1/C, L = 5: 69.8 (seed 0)      t = 1/C, L = 10: 77.6/79.1/77.2
          t = 1/C, L = 15: 72.1/-/72.8       t = 1/C, L = 20 (= 2C): 78.7/79.7/74.0
          t = 1/C, L = 30: 76.4/-/72.9       t = 1/C, L = 40: 74.0/74.4/72.6
          t = 0.3, L = 10: 66.9/78.2         t = 0.5, L = 73 (the paper's): 10.0 (chance)

      L from 10 to 30 is within the seed-to-seed noise of this short run (±3 points);
      40 (the paper's own rule, A(1) < 1 in float64, applied to t = 1/C) is lower on every
      seed. The 3-epoch figures are in docs/BENCHMARKS.md §5.

    When to use it, and when not (docs/BENCHMARKS.md §18: imbalanced one-vs-rest Fashion-MNIST
    problems, 5 % positives, an MLP, 3 paired seeds): with the paper's L = 73 at Adam 1e-3 and
    batch 128, AnyLoss F1 collapsed to predicting no positive on 2 of 3 problems (every seed):
    once every p is well below the threshold, A is flat and no gradient leads back. A learning
    rate of 1e-4, a batch of 1024, or L = 10 each avoided it; with 1e-4 its F1 matched binary cross
    entropy's (+0.008 ± 0.058), never the paper's +0.11. So: use it when you must optimise F1,
    G-mean or balanced accuracy directly, with a learning rate about ten times below what cross
    entropy takes or large batches (several positives in every batch), and check the predicted
    positive rate (the grid's log warns when a two-class model predicts one class only). The
    G-mean and balanced-accuracy losses trade accuracy for recall (2–5× too many positives there).
    Otherwise cross entropy is the safer default.

    Where this differs from the published code, on purpose: n is the batch size (the code
    uses the training-set size, which biases G-mean and balanced accuracy on mini-batches);
    an `epsilon` in every ratio keeps a batch with no positives (or no negatives) finite in
    value and gradient (the code gives NaN); A is always applied (one published example
    forgets the sigmoid).

    Args:
        metric: "accuracy", "fbeta", "gmean" or "balanced_accuracy".
        beta: β of F-beta (1 gives F1).
        L: amplifying scale of A, > 0; None: 73 for one or two outputs, 2C for C ≥ 3.
        average: "macro" or "micro" for C ≥ 2 outputs; "binary": class 1 of two outputs (one
            output is always binary).
        from_logits: apply sigmoid (one unit) or softmax (C units) to `y_pred` first.
        epsilon: the stabiliser added to denominators.
        threshold: t of A, in (0, 1); None: 0.5 for one or two outputs, 1/C for C ≥ 3.

    Usage:
        model.compile(optimizer="adam", loss=ngl_keras.AnyLoss(metric="fbeta"))
    """

    def __init__(self, metric="fbeta", beta=1.0, L=None, average="macro", from_logits=False,
                 epsilon=1e-7, threshold=None, reduction="sum_over_batch_size", name=None, dtype=None,
                 ignore_class=None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {shown(metric)}.")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}; got {shown(average)}.")
        super().__init__(
            anyloss, name=name or f"anyloss_{metric}", reduction=reduction, dtype=dtype, ignore_class=ignore_class,
            metric=metric, beta=check_bound("beta", check_positive("beta", beta), lambda v: v <= MAX_BETA,
                                             f"at most {MAX_BETA:g}, so that beta² stays finite in float32"),
            L=None if L is None else check_positive("L", L),
            average=average, from_logits=check_flag("from_logits", from_logits),
            epsilon=check_positive("epsilon", epsilon),
            threshold=None if threshold is None else check_threshold(threshold),
        )


def check_threshold(value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value < 1.0:
        raise ValueError(f"threshold must be a number in (0, 1); got {shown(value)}.")
    return float(value)
