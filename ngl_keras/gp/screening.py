"""Checks a loss candidate must pass before it may cost a training, and its fingerprint.

On a fixed probe batch (softmax outputs and one-hot targets, from a fixed seed) a candidate
is rejected, by reason, for: non-finite values or gradients; values outside the allowed
range (the paper's rule); a constant loss; or a loss whose minimisation from uniform
predictions does not raise the true-class probability. A candidate that passes is
fingerprinted by its rounded values and gradients on the probe batch: equivalent
candidates share a fingerprint, and so a cached fitness.

Everything here is numpy in float32, the precision losses train in, so a candidate that
overflows in training overflows here too, and screening needs no deep-learning backend.
The gradients are exact, not finite differences: the formula tree is evaluated in forward
mode, each node giving its value and its elementwise derivative with respect to p (the
operator records' `partials`), with the same protected operators as `ExpressionLoss`
(`formula.operator_functions`).
"""

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ngl_keras import formula
from ngl_keras.settings import RANGE, Settings, check, integer_at_least, shown

REASONS = ("non_finite", "out_of_range", "constant", "no_improvement")
PAPER_RULES = ("out_of_range",)  # the paper's only rule; the others are ours, each can be left out


# Operator name → its record's partial derivatives, one per operand (a view, for reading).
PARTIALS = {name: op.partials for name, op in formula.OPERATORS.items()}


def value_and_derivative(tree, p, y, epsilon=formula.EPSILON):
    """The formula `tree` at every element of (p, y), and its derivative with respect to p,
    both arrays of p's shape and dtype. Call under `np.errstate(all="ignore")`: overflow
    gives inf or NaN, as in training.

    Forward mode: a subtree that does not contain p has no derivative (None) rather than 0,
    so that, as in reverse-mode autodiff, its partials are never taken (an infinite partial
    times a zero derivative would be NaN where the loss's gradient is finite).
    """
    functions = formula.operator_functions(np, epsilon)
    number = p.dtype.type  # constants in p's precision, so that float32 stays float32
    epsilon = number(epsilon)
    one = np.ones_like(p)

    def walk(start):
        node = tree[start]
        if not isinstance(node, str):
            return number(node), None, start + 1
        if node == "p":
            return p, one, start + 1
        if node == "y":
            return y, None, start + 1
        if node not in formula.OPERATORS:
            raise ValueError(f"screening knows the variables p and y; got {shown(node)} in {shown(tree)}.")
        op = formula.OPERATORS[node]
        operands, derivatives, i = [], [], start + 1
        for _ in range(op.arity):
            value, derivative, i = walk(i)
            operands.append(value)
            derivatives.append(derivative)
        value = np.asarray(functions[node](*operands), p.dtype)
        derivative = None
        for partial, d in zip(op.partials, derivatives):
            if d is not None:
                term = partial(operands, value, epsilon) * d
                derivative = term if derivative is None else derivative + term
        return value, derivative, i

    if formula.subtree_end(tree, 0) != len(tree):
        raise ValueError(f"not a well-formed prefix tree: {shown(tree)}")
    value, derivative, _ = walk(0)
    derivative = np.zeros_like(p) if derivative is None else derivative
    return (np.broadcast_to(value, p.shape).astype(p.dtype),
            np.broadcast_to(derivative, p.shape).astype(p.dtype))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def logit_gradient(p, gradient):
    """The gradient with respect to the logits z, p = softmax(z), of a function whose gradient
    with respect to p is `gradient`: p·(g − Σ_c g·p), per sample."""
    with np.errstate(all="ignore"):
        return p * (gradient - np.sum(gradient * p, -1, keepdims=True))


def _positive_integer(least):
    return check(lambda v: v >= least, f"an integer >= {least}", "{key} must be a positive integer; got {value!r}.")


@dataclass(frozen=True)
class ScreeningSettings(Settings):
    allowed_range: tuple[float, ...] = field(default=(-1e3, 1e3), metadata=RANGE)
    probe_batch: int = field(default=64, metadata=_positive_integer(1))
    probe_classes: int = field(default=10, metadata=_positive_integer(2))
    improvement_steps: int = field(default=20, metadata=_positive_integer(1))
    improvement_rate: float = field(default=1.0, metadata=check(lambda v: v > 0, "> 0",
                                                                "{key} must be > 0; got {value!r}."))
    fingerprint_digits: int = field(default=5, metadata=integer_at_least(0))
    seed: int = 1234
    # the rejections applied; PAPER_RULES runs the paper's search exactly
    rules: tuple[str, ...] = field(default=REASONS, metadata=check(
        lambda v: all(rule in REASONS for rule in v), "a list drawn from REASONS",
        "screening rules must be a list drawn from " + str(list(REASONS)).replace("{", "{{") + "; got {value!r}.",
        covers_type=True))


class LossScreen:
    """`screen(tree) -> (reason or None, fingerprint)` for loss trees over p and y."""

    def __init__(self, settings=ScreeningSettings(), epsilon=formula.EPSILON):
        self.settings, self.epsilon = settings, epsilon
        rng = np.random.default_rng(settings.seed)
        b, c = settings.probe_batch, settings.probe_classes
        logits = rng.normal(size=(b, c)) * np.linspace(0.1, 6.0, b)[:, None]  # flat to peaked
        self.labels = rng.integers(0, c, b)
        self.y = np.eye(c, dtype=np.float32)[self.labels]
        self.p = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)

    def loss_and_gradient(self, tree, p):
        """Per-sample loss of `tree` at predictions `p` (shape (B,), what `ExpressionLoss(...,
        reduction=None)` gives: the mean over classes), and the gradient of its batch mean
        with respect to p (shape (B, C))."""
        with np.errstate(all="ignore"):
            value, derivative = value_and_derivative(tree, p, self.y, self.epsilon)
            return value.mean(-1), derivative / p.dtype.type(derivative.size)

    def __call__(self, tree):
        values, grads = self.loss_and_gradient(tree, self.p)
        rules = self.settings.rules
        if "non_finite" in rules and not (np.all(np.isfinite(values)) and np.all(np.isfinite(grads))):
            return "non_finite", None
        low, high = self.settings.allowed_range
        if "out_of_range" in rules and not np.all((values >= low) & (values <= high)):  # NaN too
            return "out_of_range", None
        # Constant for training: the same value on every probe sample, and no gradient for the
        # logits (a loss like -(y + p) has a gradient in p, but Σ_c p = 1 makes it constant).
        # Both up to float32 rounding, which grows with the loss's magnitude.
        with np.errstate(all="ignore"):
            scale = max(1.0, float(np.nan_to_num(np.abs(values), posinf=1e30).max()))
            constant = np.ptp(values) <= 1e-6 * scale and \
                np.abs(logit_gradient(self.p, grads)).max() <= 1e-9 * scale
        if "constant" in rules and constant:
            return "constant", None
        if "no_improvement" in rules and not self._improves(tree):
            return "no_improvement", None
        digits = self.settings.fingerprint_digits
        rounded = np.concatenate([values.ravel(), grads.ravel()]).astype(np.float64)
        text = np.array2string(np.round(rounded, digits) + 0.0, precision=digits, threshold=10**9)
        return None, hashlib.sha256(text.encode()).hexdigest()[:24]

    def _improves(self, tree):
        """Gradient descent on logits from uniform predictions raises the true-class probability."""
        probability = self.descend(tree, self.settings.improvement_steps)
        return probability is not None and probability > 1.0 / self.settings.probe_classes + 1e-3

    def descend(self, tree, steps):
        """Mean true-class probability of the probe batch after `steps` of gradient descent on
        logits that start uniform, minimising the batch mean of the loss `tree`; None if a
        gradient is not finite."""
        s = self.settings
        z = np.zeros_like(self.p)
        for _ in range(steps):
            p = softmax(z)
            grad = logit_gradient(p, self.loss_and_gradient(tree, p)[1])
            if not np.all(np.isfinite(grad)):
                return None
            z -= np.float32(s.improvement_rate * s.probe_classes) * grad
        return float(np.mean(np.sum(softmax(z) * self.y, -1)))
