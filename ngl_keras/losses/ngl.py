"""NGL, the Next Generation Loss (Akhmedova & Körber, ICPR 2024, the search's function f5)."""

import keras
from keras import ops

from ngl_keras.losses.base import (
    PACKAGE, LossFunction, check_bound, check_flag, check_number, one_hot_targets, probabilities,
)

ALPHA = 2.4092
# exp(α − p(1+y)) is largest at p = 0: exp(α). float32 overflows at exp(88.7); α <= 80 leaves a
# factor e^8.7 ≈ 6,000 for the batch's sum and the gradient's factor 1 + y (measured: α = 80 finite
# in value and gradient for a batch of 64, α = 85 inf).
MAX_ALPHA = 80.0


def ngl(y_true, y_pred, alpha=ALPHA, from_logits=False, scaling=False):
    """Per-sample NGL: ``(1/C) Σ_c [exp(α − p_c·(1 + y_c)) − cos(cos(sin(p_c)))]``.

    Returns shape ``y_pred.shape[:-1]``; its mean over a batch is the published TensorFlow
    implementation's mean over all batch × class elements.
    """
    y = one_hot_targets(y_true, y_pred)
    p = probabilities(y_pred, from_logits)
    if scaling:
        p = ops.sigmoid(p)
    values = ops.exp(alpha - p * (1.0 + y)) - ops.cos(ops.cos(ops.sin(p)))
    return ops.mean(values, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NGL(LossFunction):
    """Next Generation Loss, found by genetic programming.

    Formula (paper, the loss f5 = NGL), with p the softmax output, y the one-hot target,
    C classes and α = 2.4092:

        NGL(y, p) = (1/C) · Σ_c [ exp(α − p_c·(1 + y_c)) − cos(cos(sin(p_c))) ]

    Per-sample values; the batch loss is their mean. The loss is minimal at a true-class
    probability below 1 (≈ 0.566 for two classes, ≈ 0.39 for ten), the implicit
    regularisation the paper describes.

    Args:
        alpha: the constant α.
        from_logits: apply softmax to `y_pred` first (the published PyTorch flavour).
        scaling: apply a sigmoid to the probabilities before the formula, as the published
            Keras example does (flag `scaling` of the published TensorFlow code; the paper
            does not mention it).
        ignore_class: a label (255: void) whose positions count neither in the value nor in
            the gradient (`ngl_keras.losses.base`); None for classification.

    Usage:
        model.compile(optimizer="adam", loss=ngl_keras.NGL(), metrics=["accuracy"])
        ngl_keras.NGL()([[0, 1]], [[0.3, 0.7]])          # one-hot labels
        ngl_keras.NGL()([1], [[0.3, 0.7]])               # integer labels, same value
    """

    def __init__(self, alpha=ALPHA, from_logits=False, scaling=False,
                 reduction="sum_over_batch_size", name="ngl", dtype=None, ignore_class=None):
        super().__init__(ngl, name=name, reduction=reduction, dtype=dtype, ignore_class=ignore_class,
                         alpha=check_bound("alpha", check_number("alpha", alpha), lambda v: v <= MAX_ALPHA,
                                           f"at most {MAX_ALPHA:g}, so that exp(alpha) times a batch stays "
                                           "finite in float32 (exp overflows it at 88.7)"),
                         from_logits=check_flag("from_logits", from_logits),
                         scaling=check_flag("scaling", scaling))
