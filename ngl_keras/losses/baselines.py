"""The paper's baselines that Keras does not have: SCE, soft Dice, bi-tempered logistic loss;
and CE and focal loss for label maps with void pixels.

CE and focal loss are Keras's own classes, and the registry points at them; but those classes take
no `ignore_class`, so with void labels the registry builds `CrossEntropy` and `FocalCrossEntropy`
below instead: Keras's own functions, in this package's `LossFunction`.
"""

import math

import keras
from keras import ops

from ngl_keras.losses.base import (
    PACKAGE, BatchLoss, LossFunction, check_bound, check_flag, check_number, class_sums, one_hot_targets,
    probabilities,
)
from ngl_keras.settings import shown

NEWTON_STEPS = 3
PROBABILITY_FLOOR = 1e-7  # as keras.backend.epsilon(): keeps log(p) finite at p = 0
# SCE's label floor exp(A) is 0 in float32 below its smallest normal number, exp(-87.3), and log 0
# is -inf: A >= -87 (measured: -87 finite, -88 inf).
MIN_A = -87.0
# SCE's terms are at most -log(1e-7) ≈ 16 (CE) and -A <= 87 (RCE): weights up to 1e30 keep a batch's
# sum of them within float32's 3.4e38.
MAX_SCE_WEIGHT = 1e30
# The tempered normaliser raises the class count to t2 - 1 (the fixed point's partition^(t2-1)),
# which overflows float32 for C^(t2-1) > 3.4e38: t2 <= 10 holds up to ~19,000 classes (measured
# with 10 classes: finite to t2 = 32, inf from 64).
MAX_T2 = 10.0


def cross_entropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    """Per-position categorical cross entropy: `keras.losses.categorical_crossentropy`."""
    return keras.losses.categorical_crossentropy(one_hot_targets(y_true, y_pred), y_pred,
                                                 from_logits=from_logits, label_smoothing=label_smoothing)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CrossEntropy(LossFunction):
    """Categorical cross entropy −Σ_c y_c·log p_c, Keras's function, with `ignore_class`
    (`ngl_keras.losses.base`): the registry's "ce" for label maps with void pixels.

    Usage:
        loss = ngl_keras.losses.CrossEntropy(ignore_class=255)   # labels (B, H, W), p (B, H, W, C)
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="cross_entropy", dtype=None, ignore_class=None):
        super().__init__(cross_entropy, name=name, reduction=reduction, dtype=dtype, ignore_class=ignore_class,
                         from_logits=check_flag("from_logits", from_logits),
                         label_smoothing=check_number("label_smoothing", label_smoothing,
                                                      lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"))


def focal_cross_entropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0):
    """Per-position focal loss: `keras.losses.categorical_focal_crossentropy`."""
    return keras.losses.categorical_focal_crossentropy(one_hot_targets(y_true, y_pred), y_pred, alpha=alpha,
                                                       gamma=gamma, from_logits=from_logits,
                                                       label_smoothing=label_smoothing)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FocalCrossEntropy(LossFunction):
    """Focal loss (Lin et al., ICCV 2017) −Σ_c α·(1 − p_c)^γ·y_c·log p_c, Keras's function, with
    `ignore_class` (`ngl_keras.losses.base`): the registry's "focal" for label maps with void pixels.

    Usage:
        loss = ngl_keras.losses.FocalCrossEntropy(ignore_class=255)
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                 reduction="sum_over_batch_size", name="focal_cross_entropy", dtype=None, ignore_class=None):
        super().__init__(focal_cross_entropy, name=name, reduction=reduction, dtype=dtype, ignore_class=ignore_class,
                         alpha=check_number("alpha", alpha, lambda v: v >= 0, "a finite number >= 0"),
                         gamma=check_number("gamma", gamma, lambda v: v >= 0, "a finite number >= 0"),
                         from_logits=check_flag("from_logits", from_logits),
                         label_smoothing=check_number("label_smoothing", label_smoothing,
                                                      lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"))


def symmetric_cross_entropy(y_true, y_pred, alpha=0.1, beta=1.0, A=-4.0, from_logits=False):
    """Per-sample SCE = α·CE(y, p) + β·RCE(y, p), RCE = −Σ_c p_c·log y_c with log 0 := A."""
    y = one_hot_targets(y_true, y_pred)
    p = probabilities(y_pred, from_logits)
    p = ops.clip(p, PROBABILITY_FLOOR, 1.0)
    ce = -ops.sum(y * ops.log(p), axis=-1)
    log_y = ops.log(ops.clip(y, math.exp(A), 1.0))  # log 0 -> A, as clipping labels to e^A
    rce = -ops.sum(p * log_y, axis=-1)
    return alpha * ce + beta * rce


@keras.saving.register_keras_serializable(package=PACKAGE)
class SymmetricCrossEntropy(LossFunction):
    """Symmetric cross entropy (Wang et al., ICCV 2019, Eq. 4-6).

        SCE = α·CE(y, p) + β·RCE(y, p),   RCE = −Σ_c p_c · log(y_c),   log 0 := A

    With one-hot labels RCE = −A·(1 − p_true). The SCE paper uses A = −4; the authors' code
    clips labels to 1e-4 (A ≈ −9.21). Typical α/β: 0.1/1.0 (CIFAR-10), 6.0/0.1 (CIFAR-100).
    Per-sample values.

    Usage:
        model.compile(optimizer="adam", loss=ngl_keras.SymmetricCrossEntropy(alpha=0.1, beta=1.0))
    """

    def __init__(self, alpha=0.1, beta=1.0, A=-4.0, from_logits=False,
                 reduction="sum_over_batch_size", name="sce", dtype=None, ignore_class=None):
        super().__init__(symmetric_cross_entropy, name=name, reduction=reduction, dtype=dtype,
                         ignore_class=ignore_class,
                         alpha=_sce_weight("alpha", alpha), beta=_sce_weight("beta", beta),
                         A=check_bound("A (the value of log 0)",
                                       check_number("A (the value of log 0)", A, lambda v: v < 0, "a finite number < 0"),
                                       lambda v: v >= MIN_A, f"at least {MIN_A:g}: below, exp(A) is 0 in float32 "
                                       "and log 0 is -inf"),
                         from_logits=check_flag("from_logits", from_logits))


def _sce_weight(name, value):
    return check_bound(name, check_number(name, value, lambda v: v >= 0, "a finite number >= 0"),
                       lambda v: v <= MAX_SCE_WEIGHT, f"at most {MAX_SCE_WEIGHT:g}, so that float32 holds "
                       "the weighted sum")


def soft_dice(y_true, y_pred, smooth=1.0, from_logits=False, sample_weight=None):
    """Batch soft Dice loss: 1 − mean_c (2·Σ y·p + s) / (Σ y + Σ p + s)."""
    y = one_hot_targets(y_true, y_pred)
    p = probabilities(y_pred, from_logits)
    overlap, true_sum, pred_sum, _ = class_sums(y, p, sample_weight)
    dice = (2.0 * overlap + smooth) / (true_sum + pred_sum + smooth)
    return 1.0 - ops.mean(dice)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftDice(BatchLoss):
    """Multi-class soft Dice loss (the segmentation baseline).

        Dice_c = (2·Σ y_c·p_c + s) / (Σ y_c + Σ p_c + s),   loss = 1 − mean_c Dice_c

    sums over every example and position of the batch (a batch-level loss: one scalar per
    batch; see `BatchLoss` for sample weights and distribution). `smooth` (s) keeps a class
    absent from the batch at Dice 1 instead of 0/0.

    Usage:
        model.compile(optimizer="adam", loss=ngl_keras.SoftDice())   # (B, H, W, C) softmax
    """

    def __init__(self, smooth=1.0, from_logits=False, reduction="sum_over_batch_size",
                 name="dice", dtype=None, ignore_class=None):
        super().__init__(soft_dice, name=name, reduction=reduction, dtype=dtype, ignore_class=ignore_class,
                         smooth=check_number("smooth", smooth, lambda v: v >= 0, "a finite number >= 0"),
                         from_logits=check_flag("from_logits", from_logits))


# Bi-tempered logistic loss (Amid, Warmuth, Anil & Koren, NeurIPS 2019).

def log_t(u, t):
    """Tempered logarithm: log(u) for t = 1, else (u^(1−t) − 1) / (1 − t)."""
    if t == 1.0:
        return ops.log(u)
    return (ops.power(u, 1.0 - t) - 1.0) / (1.0 - t)


def exp_t(u, t):
    """Tempered exponential: exp(u) for t = 1, else max(1 + (1−t)·u, 0)^(1/(1−t))."""
    if t == 1.0:
        return ops.exp(u)
    return ops.power(ops.maximum(1.0 + (1.0 - t) * u, 0.0), 1.0 / (1.0 - t))


def _normalization_fixed_point(z, t, num_iters):
    """λ with Σ exp_t(z − λ, t) = 1 for t > 1 and max(z) = 0: the paper's fixed-point iteration."""
    normalized = z
    for _ in range(num_iters):
        partition = ops.sum(exp_t(normalized, t), axis=-1, keepdims=True)
        normalized = z * ops.power(partition, 1.0 - t)
    partition = ops.sum(exp_t(normalized, t), axis=-1, keepdims=True)
    return -log_t(1.0 / partition, t)


def _normalization_bisection(z, t, num_iters):
    """λ with Σ exp_t(z − λ, t) = 1 for t < 1 (finite support) and max(z) = 0: bisection."""
    support = ops.sum(ops.cast(z > -1.0 / (1.0 - t), z.dtype), axis=-1, keepdims=True)
    lower = ops.zeros_like(support)
    upper = -log_t(1.0 / support, t)
    for _ in range(num_iters):
        middle = 0.5 * (upper + lower)
        total = ops.sum(exp_t(z - middle, t), axis=-1, keepdims=True)
        below = ops.cast(total < 1.0, z.dtype)
        lower = lower * below + middle * (1.0 - below)
        upper = upper * (1.0 - below) + middle * below
    return 0.5 * (upper + lower)


def tempered_normalization(z, t, num_iters):
    """The normaliser λ(z) of the tempered softmax of `z` (max(z) = 0), with its exact gradient.

    The iterations only find λ; its gradient is the escort distribution
    ``exp_t(z − λ)^t / Σ exp_t(z − λ)^t`` (implicit function theorem), so no gradient flows
    through the loop and XLA sees a fixed, unrolled graph.
    """
    search = _normalization_fixed_point if t > 1.0 else _normalization_bisection

    def solve(z):
        # Newton steps on g(λ) = Σ exp_t(z − λ) − 1 polish the paper's estimate to float
        # precision: g is convex and decreasing for every t, so Newton converges from
        # either side (after one step from the right, monotonically from the left).
        lam = search(z, t, num_iters)
        for _ in range(NEWTON_STEPS):
            terms = exp_t(z - lam, t)
            slope = ops.sum(ops.power(terms, t), axis=-1, keepdims=True)
            lam = lam + (ops.sum(terms, axis=-1, keepdims=True) - 1.0) / slope
        return lam

    @ops.custom_gradient
    def normalization(z):
        lam = solve(ops.stop_gradient(z))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            escorts = ops.power(exp_t(z - lam, t), t)
            escorts = escorts / ops.sum(escorts, axis=-1, keepdims=True)
            return upstream * escorts

        return lam, grad

    return normalization(z)


def tempered_softmax(activations, t, num_iters=5):
    """exp_t(a − λ(a), t), summing to 1 over the last axis; softmax for t = 1.

    Computed on a − max(a) (shift-invariant), so logits of any size keep float precision.
    """
    if t == 1.0:
        return ops.softmax(activations, axis=-1)
    z = activations - ops.stop_gradient(ops.max(activations, axis=-1, keepdims=True))
    return exp_t(z - tempered_normalization(z, t, num_iters), t)


def bi_tempered_logistic_loss(y_true, y_pred, t1=1.0, t2=1.0, num_iters=5,
                              label_smoothing=0.0):
    """Per-sample bi-tempered loss of logits `y_pred` (the paper's Eq. 9, with smoothing)."""
    y = one_hot_targets(y_true, y_pred)
    classes = y_pred.shape[-1]
    if label_smoothing > 0.0:
        y = (1.0 - label_smoothing * classes / (classes - 1)) * y + label_smoothing / (classes - 1)
    if t1 == 1.0 and t2 == 1.0:
        # Exactly softmax cross entropy, written with log_softmax to stay finite for any logit.
        log_p = ops.log_softmax(y_pred, axis=-1)
        return ops.sum(y * (ops.log(y + 1e-10) - log_p), axis=-1)
    p = tempered_softmax(y_pred, t2, num_iters)
    if t1 == 1.0:
        log_p = ops.log(ops.maximum(p, 1e-30))
    else:
        log_p = log_t(p, t1)
    first = (log_t(y + 1e-10, t1) - log_p) * y
    second = (ops.power(y, 2.0 - t1) - ops.power(p, 2.0 - t1)) / (2.0 - t1)
    return ops.sum(first - second, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BiTemperedLogisticLoss(LossFunction):
    """Bi-tempered logistic loss (Amid et al., NeurIPS 2019), robust to label noise.

        loss = Σ_c [ y_c·(log_t1(y_c) − log_t1(ŷ_c)) − (y_c^(2−t1) − ŷ_c^(2−t1)) / (2 − t1) ]
        ŷ = tempered_softmax(logits, t2)

    t1 < 1 bounds the loss, t2 > 1 gives the tempered softmax heavy tails; t1 = t2 = 1 is
    exactly softmax cross entropy. The tempered softmax's normaliser has no closed form:
    fixed-point iteration for t2 > 1, bisection for t2 < 1 (`num_iters` steps). Takes
    logits. Per-sample values.

    Args:
        t1: temperature of the logarithm, in [0, 1].
        t2: temperature of the exponential (the softmax), > 0.
        num_iters: iterations of the normaliser, >= 1.
        label_smoothing: in [0, 1).

    Usage:
        model.compile(optimizer="adam", loss=ngl_keras.BiTemperedLogisticLoss(t1=0.8, t2=1.2))
    """

    def __init__(self, t1=1.0, t2=1.0, num_iters=5, label_smoothing=0.0,
                 reduction="sum_over_batch_size", name="bi_tempered", dtype=None, ignore_class=None):
        if not isinstance(num_iters, int) or isinstance(num_iters, bool) or num_iters < 1:
            raise ValueError(f"num_iters must be an integer >= 1; got {shown(num_iters)}.")
        super().__init__(bi_tempered_logistic_loss, name=name, reduction=reduction, dtype=dtype,
                         ignore_class=ignore_class,
                         t1=check_number("t1", t1, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
                         t2=check_bound("t2", check_number("t2", t2, lambda v: v > 0.0, "a finite number > 0"),
                                        lambda v: v <= MAX_T2, f"at most {MAX_T2:g}: above, the tempered "
                                        "normaliser overflows float32"),
                         num_iters=num_iters,
                         label_smoothing=check_number("label_smoothing", label_smoothing,
                                                      lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"))
