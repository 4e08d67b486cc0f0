"""Each loss against an independent numpy version of its published formula."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ngl_keras
from tests import reference as ref

RNG = np.random.default_rng(7)


def batch(b=16, c=5, shape=()):
    logits = RNG.normal(size=(b, *shape, c)).astype("float32") * 2
    labels = RNG.integers(0, c, size=(b, *shape))
    return labels, np.eye(c, dtype="float32")[labels], ref.softmax(logits).astype("float32"), logits


def test_ngl_equals_published_tensorflow_mean_over_all_elements():
    _, y, p, _ = batch()
    assert float(ngl_keras.NGL()(y, p)) == pytest.approx(ref.ngl_published_tf(y, p), abs=1e-6)


def test_ngl_hand_value_for_one_binary_example():
    # (exp(2.4092 - 0.7*2) - cos(cos(sin(0.7))) + exp(2.4092 - 0.3) - cos(cos(sin(0.3)))) / 2
    expected = (np.exp(2.4092 - 1.4) - np.cos(np.cos(np.sin(0.7)))
                + np.exp(2.1092) - np.cos(np.cos(np.sin(0.3)))) / 2
    assert float(ngl_keras.NGL()([[0.0, 1.0]], [[0.3, 0.7]])) == pytest.approx(expected, abs=1e-6)


def test_ngl_scaling_and_logits_flavours():
    _, y, p, logits = batch()
    assert float(ngl_keras.NGL(scaling=True)(y, p)) == pytest.approx(
        ref.ngl_published_tf(y, p, scaling=True), abs=1e-6)
    assert float(ngl_keras.NGL(from_logits=True)(y, logits)) == pytest.approx(
        ref.ngl_published_tf(y, ref.softmax(logits)), abs=1e-5)
    assert float(ngl_keras.NGL(alpha=1.0)(y, p)) == pytest.approx(
        ref.ngl_published_tf(y, p, alpha=1.0), abs=1e-6)


def test_ngl_optimum_below_one_as_the_paper_says():
    # With C classes and the rest spread evenly, the best true-class probability is < 1.
    for classes, expected in ((2, 0.566), (10, 0.39), (100, 0.36)):
        q = np.linspace(0.01, 0.999, 2000, dtype="float32")
        p = np.stack([q] + [(1 - q) / (classes - 1)] * (classes - 1), -1)
        y = np.zeros_like(p)
        y[:, 0] = 1
        values = np.asarray(ngl_keras.NGL(reduction=None)(y, p))
        assert q[np.argmin(values)] == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("metric", ["accuracy", "fbeta", "gmean", "balanced_accuracy"])
def test_anyloss_binary_matches_paper(metric):
    y = RNG.integers(0, 2, 64).astype("float32")
    p = RNG.uniform(size=64).astype("float32")
    got = float(ngl_keras.AnyLoss(metric=metric)(y, p[:, None]))
    assert got == pytest.approx(ref.anyloss_binary(y, p, metric), abs=1e-5)


def test_anyloss_fbeta_with_beta_two_and_other_scale():
    y = RNG.integers(0, 2, 64).astype("float32")
    p = RNG.uniform(size=64).astype("float32")
    got = float(ngl_keras.AnyLoss(metric="fbeta", beta=2.0, L=10.0)(y[:, None], p[:, None]))
    assert got == pytest.approx(ref.anyloss_binary(y, p, "fbeta", L=10.0, beta=2.0), abs=1e-5)


@pytest.mark.parametrize("average", ["macro", "micro"])
@pytest.mark.parametrize("metric", ["accuracy", "fbeta", "gmean", "balanced_accuracy"])
def test_anyloss_multiclass(metric, average):
    labels, y, p, _ = batch(b=40, c=4)
    loss = ngl_keras.AnyLoss(metric=metric, average=average, L=5.0)  # threshold: 1/C by default
    expected = ref.anyloss_multiclass(y, p, metric, average, L=5.0, threshold=1 / 4)
    assert float(loss(y, p)) == pytest.approx(expected, abs=1e-5)
    assert float(loss(labels, p)) == pytest.approx(expected, abs=1e-5)


def test_anyloss_batch_without_positives_is_finite_in_value_and_gradient():
    y = np.zeros((8, 1), "float32")
    p = tf.Variable(RNG.uniform(size=(8, 1)).astype("float32"))
    for metric in ("gmean", "balanced_accuracy", "fbeta", "accuracy"):
        with tf.GradientTape() as tape:
            value = ngl_keras.AnyLoss(metric=metric)(y, p)
        grad = tape.gradient(value, p)
        assert np.isfinite(float(value)) and np.all(np.isfinite(grad.numpy())), metric
    # All negatives predicted negative: perfect balanced accuracy on the negatives -> 1 - 0.5.
    low = np.full((8, 1), 0.01, "float32")
    assert float(ngl_keras.AnyLoss(metric="balanced_accuracy")(y, low)) == pytest.approx(0.5, abs=1e-3)


def test_anyloss_sample_weight_counts_examples():
    y = RNG.integers(0, 2, 10).astype("float32")
    p = RNG.uniform(size=10).astype("float32")
    w = RNG.integers(1, 4, 10)
    loss = ngl_keras.AnyLoss(metric="gmean", L=8.0)
    weighted = float(loss(y[:, None], p[:, None], sample_weight=w.astype("float32")))
    repeated = float(loss(np.repeat(y, w)[:, None], np.repeat(p, w)[:, None]))
    assert weighted == pytest.approx(repeated, abs=1e-5)


def test_sce_against_formula_and_default_A():
    labels, y, p, _ = batch()
    got = np.asarray(ngl_keras.SymmetricCrossEntropy(alpha=6.0, beta=0.1, A=-4.0, reduction=None)(y, p))
    np.testing.assert_allclose(got, ref.sce(y, p, 6.0, 0.1, -4.0), rtol=1e-5)
    # One-hot labels: RCE = -A (1 - p_true).
    rce = np.asarray(ngl_keras.SymmetricCrossEntropy(alpha=0.0, beta=1.0, reduction=None)(labels, p))
    np.testing.assert_allclose(rce, 4.0 * (1 - p[np.arange(16), labels]), rtol=1e-5)


def test_dice_against_formula_on_segmentation_maps():
    labels, y, p, _ = batch(b=3, c=4, shape=(6, 5))
    assert float(ngl_keras.SoftDice()(y, p)) == pytest.approx(ref.dice(y, p), abs=1e-6)
    assert float(ngl_keras.SoftDice(smooth=0.5)(labels, p)) == pytest.approx(ref.dice(y, p, 0.5), abs=1e-6)


def test_bi_tempered_with_unit_temperatures_is_softmax_cross_entropy():
    labels, _, _, logits = batch(b=32, c=7)
    got = np.asarray(ngl_keras.BiTemperedLogisticLoss(reduction=None)(labels, logits))
    ce = np.asarray(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    np.testing.assert_allclose(got, ce, atol=1e-6)


@pytest.mark.parametrize("t1,t2,smoothing", [(0.8, 1.2, 0.0), (0.5, 2.0, 0.1), (0.9, 0.6, 0.0),
                                             (1.0, 1.5, 0.0), (0.2, 4.0, 0.2)])
def test_bi_tempered_against_independent_bisection(t1, t2, smoothing):
    _, y, _, logits = batch(b=16, c=6)
    loss = ngl_keras.BiTemperedLogisticLoss(t1=t1, t2=t2, label_smoothing=smoothing, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(y, logits)), ref.bi_tempered(y, logits, t1, t2, smoothing),
                               rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("t", [0.3, 0.7, 1.3, 2.0, 4.0])
def test_tempered_softmax_sums_to_one(t):
    logits = RNG.normal(size=(128, 10)).astype("float32") * 5
    logits[0] = 0.0
    logits[1, :2] = (1e4, -1e4)
    p = np.asarray(ngl_keras.losses.tempered_softmax(logits, t))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p[2:], ref.tempered_softmax(logits[2:], t), atol=1e-5)


def _finite_difference_check(loss, y, p0):
    """Autodiff gradient of the loss (float64) against central differences."""
    p = tf.Variable(p0)
    with tf.GradientTape() as tape:
        value = loss(y, p)
    grad = tape.gradient(value, p).numpy()
    numeric = np.zeros_like(p0)
    h = 1e-6
    for idx in np.ndindex(p0.shape):
        d = np.zeros_like(p0)
        d[idx] = h
        numeric[idx] = (float(loss(y, p0 + d)) - float(loss(y, p0 - d))) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_ngl_gradient_matches_finite_differences():
    _, y, p, _ = batch(b=4, c=3)
    _finite_difference_check(ngl_keras.NGL(dtype="float64"), y.astype("float64"), p.astype("float64"))


def test_anyloss_gradient_matches_finite_differences():
    _, y, p, _ = batch(b=6, c=3)
    loss = ngl_keras.AnyLoss(metric="fbeta", L=6.0, dtype="float64")
    _finite_difference_check(loss, y.astype("float64"), p.astype("float64"))
