"""Independent numpy versions of the published formulas, for the tests' reference values, and the
shared random inputs they are checked on."""

import numpy as np


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def ngl_published_tf(y, p, alpha=2.4092, scaling=False):
    """The published TensorFlow NGL: element-wise formula, mean over all elements."""
    if scaling:
        p = 1.0 / (1.0 + np.exp(-p))
    return np.mean(np.exp(alpha - p * (1 + y)) - np.cos(np.cos(np.sin(p))))


def anyloss_binary(y, p, metric, L=73.0, beta=1.0, threshold=0.5):
    """AnyLoss paper, binary, no epsilon: 1 - metric of the soft confusion matrix."""
    a = 1.0 / (1.0 + np.exp(-L * (p - threshold)))
    n = len(y)
    P, S, TP = y.sum(), a.sum(), (y * a).sum()
    FN, FP = P - TP, S - TP
    TN = n - P - S + TP
    if metric == "accuracy":
        m = (TP + TN) / n
    elif metric == "fbeta":
        m = (1 + beta**2) * TP / ((1 + beta**2) * TP + beta**2 * FN + FP)
    elif metric == "gmean":
        m = np.sqrt(TP / (TP + FN) * TN / (TN + FP))
    else:
        m = 0.5 * (TP / (TP + FN) + TN / (TN + FP))
    return 1.0 - m


def anyloss_multiclass(y, p, metric, average, L=73.0, beta=1.0, threshold=0.5):
    """One-vs-rest per class; macro = mean of per-class losses, micro = pooled counts."""
    y, p = y.reshape(-1, y.shape[-1]), p.reshape(-1, p.shape[-1])
    if average == "macro":
        return np.mean([anyloss_binary(y[:, c], p[:, c], metric, L, beta, threshold) for c in range(y.shape[1])])
    return anyloss_binary(y.ravel(), p.ravel(), metric, L, beta, threshold)


def sce(y, p, alpha, beta, A):
    pc = np.clip(p, 1e-7, 1.0)
    ce = -(y * np.log(pc)).sum(-1)
    rce = -(pc * np.log(np.where(y > 0, y, np.exp(A)))).sum(-1)
    return alpha * ce + beta * rce


def dice(y, p, smooth=1.0):
    axes = tuple(range(y.ndim - 1))
    d = (2 * (y * p).sum(axes) + smooth) / (y.sum(axes) + p.sum(axes) + smooth)
    return 1 - d.mean()


def _exp_t(u, t):
    if t == 1:
        return np.exp(u)
    # For t > 1, exp_t has a pole at u = 1/(t - 1): past it the value is +inf on purpose (the
    # bisection reads it as "too large"), 0 ** negative, not a warning.
    with np.errstate(divide="ignore"):
        return np.maximum(1 + (1 - t) * u, 0) ** (1 / (1 - t))


def _log_t(u, t):
    return np.log(u) if t == 1 else (u ** (1 - t) - 1) / (1 - t)


def tempered_softmax(a, t):
    """By bisection to machine precision on λ (independent of the package's solver)."""
    out = np.empty_like(a, dtype=np.float64)
    for i, row in enumerate(np.asarray(a, np.float64).reshape(-1, a.shape[-1])):
        lo, hi = row.max() - 1e3, row.max() + 1e8
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if _exp_t(row - mid, t).sum() > 1:
                lo = mid
            else:
                hi = mid
        out.reshape(-1, a.shape[-1])[i] = _exp_t(row - 0.5 * (lo + hi), t)
    return out


def bi_tempered(y, logits, t1, t2, label_smoothing=0.0):
    c = y.shape[-1]
    if label_smoothing:
        y = (1 - label_smoothing * c / (c - 1)) * y + label_smoothing / (c - 1)
    p = tempered_softmax(logits, t2)
    first = (_log_t(y + 1e-10, t1) - _log_t(p, t1)) * y
    second = (y ** (2 - t1) - p ** (2 - t1)) / (2 - t1)
    return (first - second).sum(-1)


def affine_case(shape, seed):
    """A batch of 6 float images of `shape` and per-image (flip, shift_x, shift_y, zoom_x, zoom_y)
    inside the published augmentation's ranges, half of them flipped."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, shape).astype("float32")
    flip = np.array([True, False, True, False, True, False])
    shift_x, shift_y = rng.uniform(-0.1, 0.1, (2, 6)).astype("float32")
    zoom_x, zoom_y = rng.uniform(0.8, 1.2, (2, 6)).astype("float32")
    return x, (flip, shift_x, shift_y, zoom_x, zoom_y)
