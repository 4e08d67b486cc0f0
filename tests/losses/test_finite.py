"""Finite by construction (issue 26): every loss argument is checked against the range where the
float32 computation stays finite, messages echo values shortened, and predictions without a
class axis are refused."""

import numpy as np
import pytest
from keras import ops

import ngl_keras
from ngl_keras import losses

pytestmark = pytest.mark.any_backend  # keras.ops only: runs again under KERAS_BACKEND=jax


@pytest.mark.parametrize("build,message", [
    (lambda: ngl_keras.NGL(alpha=1e6), "alpha must be at most 80, so that exp(alpha) times a batch stays finite in "
                                       "float32 (exp overflows it at 88.7); got 1000000.0."),
    (lambda: ngl_keras.SymmetricCrossEntropy(A=-100.0),
     "A (the value of log 0) must be at least -87: below, exp(A) is 0 in float32 and log 0 is -inf; got -100.0."),
    (lambda: ngl_keras.SymmetricCrossEntropy(alpha=1e35),
     "alpha must be at most 1e+30, so that float32 holds the weighted sum; got 1e+35."),
    (lambda: ngl_keras.BiTemperedLogisticLoss(t2=64.0),
     "t2 must be at most 10: above, the tempered normaliser overflows float32; got 64.0."),
    (lambda: ngl_keras.AnyLoss(beta=1e20), "beta must be at most 1e+18, so that beta² stays finite in float32; got 1e+20."),
    (lambda: ngl_keras.AnyLoss(L=1e39), "L must lie within float32's range (|x| <= 3.403e+38), where the loss computes; "
                                        "got 1e+39."),
    (lambda: losses.get("focal", gamma=-1.0), "loss 'focal': gamma must be a number >= 0 (with gamma < 0, "
                                              "(1 - p)^gamma grows as p nears 1 and overflows float32 below -5.5); got -1.0."),
    (lambda: losses.get("ce", label_smoothing=10 ** 400), "loss 'ce': label_smoothing must lie within float32's range"),
    (lambda: ngl_keras.NGL(alpha="x" * 10_000_000), "alpha must be a finite number; got '" + "x" * 79
                                                    + "… (str of 10,000,000 characters)."),
    (lambda: losses.get("ngl" * 1000), "unknown loss '" + "ngl" * 26 + "n… (str of 3,000 characters); known losses"),
])
def test_an_argument_outside_the_finite_range_is_refused_naming_it(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert str(error.value).startswith(message)


def _finite_on_a_batch(loss, logits):
    """Whether `loss` is finite on 64 examples of 10 classes (logits of scale 5, or their softmax).
    The gradients at these bounds were measured finite too (TensorFlow tape; see the constants)."""
    z = np.random.default_rng(0).normal(0, 5, (64, 10)).astype("float32")
    x = ops.convert_to_tensor(z) if logits else ops.softmax(ops.convert_to_tensor(z))
    return bool(np.isfinite(ops.convert_to_numpy(loss(np.arange(64) % 10, x))))


@pytest.mark.parametrize("loss,logits", [
    (ngl_keras.NGL(alpha=80.0), False), (ngl_keras.SymmetricCrossEntropy(A=-87.0, alpha=1e30), False),
    (ngl_keras.BiTemperedLogisticLoss(t1=0.0, t2=10.0), True), (ngl_keras.AnyLoss(beta=1e18), False),
])
def test_the_bounds_themselves_are_finite(loss, logits):
    assert _finite_on_a_batch(loss, logits)


def test_predictions_without_a_class_axis_are_refused_naming_both_shapes():
    with pytest.raises(ValueError) as error:
        ngl_keras.NGL()(np.arange(10), np.linspace(0.05, 0.95, 10).astype("float32"))
    assert str(error.value) == ("y_pred shape (10,) has no class axis: predictions must be (batch, ..., classes), "
                                "e.g. (10, 1) for one output per example; y_true has shape (10,).")


def test_the_valid_label_forms_are_unchanged():
    p = np.array([[0.2, 0.8], [0.6, 0.4]], "float32")
    expected = float(ngl_keras.NGL()(np.array([[0, 1], [1, 0]], "float32"), p))
    for labels in (np.array([1, 0]), np.array([[1], [0]])):
        assert float(ngl_keras.NGL()(labels, p)) == pytest.approx(expected)
    maps = np.tile(p[:, None, None, :], (1, 3, 3, 1))  # dense (B, H, W, C) with (B, H, W)
    assert float(ngl_keras.NGL()(np.tile(np.array([1, 0])[:, None, None], (1, 3, 3)), maps)) == pytest.approx(expected)
    assert float(ngl_keras.AnyLoss()(np.array([1.0, 0.0]), np.array([0.8, 0.2], "float32"))) == pytest.approx(0.0, abs=1e-6)
