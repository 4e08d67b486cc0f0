"""Figures: the binary loss curves of the paper's Figure 1."""

import numpy as np

from ngl_keras import losses as losses_module
from ngl_keras.files import atomic_savefig


def binary_loss_curve(loss, points=501):
    """(p, values): the loss of one example with true label 1 and prediction [1 − p, p]."""
    p = np.linspace(0.0, 1.0, points, dtype="float32")
    y_pred = np.stack([1.0 - p, p], axis=-1)
    y_true = np.tile(np.array([[0.0, 1.0]], dtype="float32"), (points, 1))
    if isinstance(loss, losses_module.base.BatchLoss):  # one scalar per batch: one batch per p
        values = np.array([float(loss(y_true[i:i + 1], y_pred[i:i + 1])) for i in range(points)])
    else:
        config = loss.get_config()
        config["reduction"] = None
        values = np.asarray(type(loss).from_config(config)(y_true, y_pred))
    return p, values


def loss_curves(losses=("ce", "ngl"), path="loss_curves.png", points=501):
    """Plot the binary loss curves (true label 1, p from 0 to 1) of registered names,
    formulas or loss objects to a PNG at `path`; return {label: (p, values, argmin p)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    figure, axes = plt.subplots(figsize=(6, 4))
    for item in losses:
        loss = losses_module.get(item) if isinstance(item, str) else item
        label = item if isinstance(item, str) else loss.name
        p, values = binary_loss_curve(loss, points)
        finite = np.isfinite(values)
        best = float(p[finite][np.argmin(values[finite])])
        curves[label] = (p, values, best)
        axes.plot(p, values, label=f"{label} (min at p = {best:.3f})")
    axes.set_xlabel("predicted probability of the true class, p")
    axes.set_ylabel("loss")
    axes.set_title("Binary loss curves, true label 1")
    # CE-like curves rise to infinity at p = 0: scale to what the curves do for p >= 0.05
    tops = [np.nanmax(np.where(p >= 0.05, v, np.nan)) for p, v, _ in curves.values()]
    axes.set_ylim(bottom=min(0.0, *(np.nanmin(v) for _, v, _ in curves.values())),
                  top=1.1 * max(tops))
    axes.legend()
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=100)
    return curves
