"""Every loss of Table 3 takes the soft targets of the ImageNet recipe (mixup/cutmix of
label-smoothed one-hot vectors) and gives its formula evaluated elementwise with y soft."""

import math

import numpy as np
import pytest

from ngl_keras import imagenet_recipe as recipe
from ngl_keras import losses

CLASSES = 6
ALPHA_NGL = 2.4092


def _soft_case():
    """Predictions and soft targets: mixup (λ = 0.3) of two label-smoothed classes per sample."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, CLASSES))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    first, second = rng.integers(0, CLASSES, 5), rng.integers(0, CLASSES, 5)
    smooth = lambda labels: np.asarray(recipe.smoothed_one_hot(labels, CLASSES, 0.1), dtype="float64")  # noqa: E731
    y = 0.3 * smooth(first) + 0.7 * smooth(second)
    return y.astype("float32"), p.astype("float32")


def _ce(y, p):
    return -(y * np.log(np.clip(p, 1e-7, 1 - 1e-7))).sum(axis=1)


def _ngl(y, p):  # SPEC §1, elementwise over classes with y soft
    return (np.exp(ALPHA_NGL - p * (1 + y)) - np.cos(np.cos(np.sin(p)))).mean(axis=1)


def _sce(y, p, alpha=0.1, beta=1.0, a=-4.0):  # Wang et al. 2019: α·CE + β·RCE, log 0 := A
    return alpha * -(y * np.log(p)).sum(axis=1) + beta * -(p * np.log(np.clip(y, math.exp(a), 1))).sum(axis=1)


def _focal(y, p, alpha=0.25, gamma=2.0):  # Lin et al. 2017, Keras's categorical form
    p = np.clip(p / p.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
    return (alpha * (1 - p) ** gamma * -y * np.log(p)).sum(axis=1)


def _formula(y, p):  # 'p*y - log(p+1)', per sample the mean over classes (log protected by ε = 1e-6)
    return (p * y - np.log(p + 1 + 1e-6)).mean(axis=1)


@pytest.mark.any_backend
@pytest.mark.parametrize("name, by_hand", [("ce", _ce), ("ngl", _ngl), ("sce", _sce), ("focal", _focal),
                                           ("p*y - log(p+1)", _formula)])
def test_a_loss_on_soft_targets_equals_its_formula_by_hand(name, by_hand):
    y, p = _soft_case()
    assert np.all(y > 0) and np.allclose(y.sum(axis=1), 1.0) and not np.all(np.isin(y, (0.0, 1.0)))
    expected = by_hand(y.astype("float64"), p.astype("float64")).mean()
    got = float(losses.get(name)(y, p))
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.any_backend
def test_targets_from_the_recipe_mix_layer_give_ngl_its_value_by_hand():
    images = np.random.default_rng(1).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    _, y = recipe.MixUpOrCutMix(CLASSES, seed=0)(images, np.arange(8) % CLASSES)
    y = np.asarray(y)
    p = np.full((8, CLASSES), 1 / CLASSES, dtype="float32")
    assert float(losses.get("ngl")(y, p)) == pytest.approx(_ngl(y.astype("float64"), p.astype("float64")).mean(),
                                                           rel=1e-5)
