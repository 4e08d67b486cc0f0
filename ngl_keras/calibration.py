"""Calibration: how far a classifier's predicted probabilities can be trusted, from the same
predictions as its accuracy (numpy only, so every backend gives the same numbers).

- negative log-likelihood: mean of -log p(true class), the probability clipped at `EPSILON`;
- expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3):
  the examples binned by their top probability into `BINS` equal-width bins of (0, 1],
  ECE = Σ_b (|b| / n) · |accuracy(b) − confidence(b)|;
- mean top probability: the model's average confidence, the quantity an over-confident model
  inflates (the NGL paper explains NGL's gain as keeping it down).
"""

import numpy as np

BINS = 15      # Guo et al. 2017's bin count
EPSILON = 1e-7  # a probability below this counts as this in the log-likelihood (float32's scale)
METRICS = ("nll", "ece", "mean_confidence")


def checked(probabilities, labels):
    """(probabilities as float64 (examples, classes), class indices (examples,)) from labels given as
    indices, one-hot or soft (the class of the largest weight); a clear error on shapes or classes
    that do not fit."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (examples, classes); got shape {probabilities.shape}.")
    if labels.ndim == 2:  # one-hot or soft labels: the class with the largest weight
        labels = labels.argmax(-1)
    labels = labels.reshape(-1).astype(np.int64)
    if labels.shape[0] != probabilities.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {probabilities.shape[0]} predictions.")
    if labels.size and (labels.min() < 0 or labels.max() >= probabilities.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {probabilities.shape[1]}); got "
                         f"{labels.min()} to {labels.max()}.")
    return probabilities, labels


def negative_log_likelihood(probabilities, labels):
    probabilities, labels = checked(probabilities, labels)
    true = probabilities[np.arange(labels.size), labels]
    return float(-np.log(np.clip(true, EPSILON, 1.0)).mean())


def reliability(probabilities, labels, bins=BINS):
    """Per bin of the top probability: (count, accuracy, mean confidence); empty bins have NaN.
    Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 falls in bin 0."""
    probabilities, labels = checked(probabilities, labels)
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
    return count, accuracy, mean_confidence


def expected_calibration_error(probabilities, labels, bins=BINS):
    count, accuracy, confidence = reliability(probabilities, labels, bins)
    used = count > 0
    return float((count[used] / count.sum() * np.abs(accuracy[used] - confidence[used])).sum())


def summary(probabilities, labels, bins=BINS):
    """{"nll", "ece", "mean_confidence", "accuracy"} of one set of predictions (the record's fields)."""
    probabilities, labels = checked(probabilities, labels)
    return {"nll": negative_log_likelihood(probabilities, labels),
            "ece": expected_calibration_error(probabilities, labels, bins),
            "mean_confidence": float(probabilities.max(-1).mean()),
            "accuracy": float((probabilities.argmax(-1) == labels).mean())}
