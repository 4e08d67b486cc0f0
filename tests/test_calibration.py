"""ngl_keras.calibration against hand-computed values and a loop-over-bins numpy reference."""

import math

import numpy as np
import pytest

from ngl_keras import calibration

P = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
LABELS = np.array([0, 1, 1, 1])  # right, wrong (top 0.6), right, right


def test_hand_computed_values():
    assert calibration.negative_log_likelihood(P, LABELS) == pytest.approx(
        -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4)
    # 15 bins: each example alone in its bin, ECE = mean |correct - confidence|
    assert calibration.expected_calibration_error(P, LABELS) == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    # 2 bins: all four in (0.5, 1]: accuracy 0.75 = mean confidence 0.75
    assert calibration.expected_calibration_error(P, LABELS, bins=2) == pytest.approx(0.0)
    summary = calibration.summary(P, np.eye(2)[LABELS])  # one-hot labels read as their class
    assert summary["mean_confidence"] == pytest.approx(0.75)
    assert summary["accuracy"] == pytest.approx(0.75)


def _ece_reference(p, y, bins):
    confidence, correct = p.max(1), p.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if lo == 0.0:
            inside |= confidence == 0.0
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@pytest.mark.parametrize("seed", range(5))
def test_ece_matches_a_loop_over_bins(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(500, 10)) * rng.uniform(0.5, 5)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 10, 500)
    assert calibration.expected_calibration_error(p, y) == pytest.approx(_ece_reference(p, y, 15), abs=1e-12)


def test_reliability_bins_hold_every_example():
    count, accuracy, confidence = calibration.reliability(P, LABELS)
    assert count.sum() == 4 and count.shape == (15,)
    assert np.isnan(accuracy[0]) and np.nanmax(confidence) == pytest.approx(0.9)


def test_zero_probability_is_clipped_not_infinite():
    assert calibration.negative_log_likelihood([[1.0, 0.0]], [1]) == pytest.approx(-math.log(calibration.EPSILON))


@pytest.mark.parametrize("p, y, message", [
    (np.ones((3,)), [0, 1, 2], "must be \\(examples, classes\\)"),
    (P, [0, 1], "2 labels for 4 predictions"),
    (P, [0, 1, 2, 1], "class indices in \\[0, 2\\)"),
])
def test_bad_shapes_are_refused(p, y, message):
    with pytest.raises(ValueError, match=message):
        calibration.summary(p, y)
