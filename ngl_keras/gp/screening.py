"""Checks a loss candidate must pass before it may cost a training, and its fingerprint.

On a fixed probe batch (softmax outputs and one-hot targets, from a fixed seed) a candidate
is rejected, by reason, for: non-finite values or gradients; values outside the allowed
range (the paper's rule); a constant loss; or a loss whose minimisation from uniform
predictions does not raise the true-class probability. A candidate that passes is
fingerprinted by its rounded values and gradients on the probe batch: equivalent
candidates share a fingerprint, and so a cached fitness.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

REASONS = ("non_finite", "out_of_range", "constant", "no_improvement")
PAPER_RULES = ("out_of_range",)  # the paper's only rule; the others are ours, each can be left out


@dataclass(frozen=True)
class ScreeningSettings:
    allowed_range: tuple = (-1e3, 1e3)
    probe_batch: int = 64
    probe_classes: int = 10
    improvement_steps: int = 20
    improvement_rate: float = 1.0
    fingerprint_digits: int = 5
    seed: int = 1234
    rules: tuple = REASONS  # the rejections applied; PAPER_RULES runs the paper's search exactly

    def __post_init__(self):
        if isinstance(self.rules, str) or any(rule not in REASONS for rule in self.rules):
            raise ValueError(f"screening rules must be a list drawn from {list(REASONS)}; got {self.rules!r}.")
        low, high = self.allowed_range
        if not low < high:
            raise ValueError(f"allowed_range must be [low, high] with low < high; got {list(self.allowed_range)}.")
        for name in ("probe_batch", "probe_classes", "improvement_steps"):
            if getattr(self, name) < (2 if name == "probe_classes" else 1):
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}.")


class LossScreen:
    """`screen(tree) -> (reason or None, fingerprint)` for loss trees over p and y."""

    def __init__(self, settings=ScreeningSettings(), epsilon=1e-6):
        import tensorflow as tf

        self.settings, self.epsilon = settings, epsilon
        rng = np.random.default_rng(settings.seed)
        b, c = settings.probe_batch, settings.probe_classes
        logits = rng.normal(size=(b, c)) * np.linspace(0.1, 6.0, b)[:, None]  # flat to peaked
        self.labels = rng.integers(0, c, b)
        self.y = tf.constant(np.eye(c)[self.labels], tf.float32)
        self.p = tf.constant(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), tf.float32)

    def per_sample(self, tree):
        from ngl_keras.losses import expression

        loss = expression.ExpressionLoss(expression.to_text(tree), epsilon=self.epsilon, reduction=None)
        return lambda y, p: loss(y, p)

    def __call__(self, tree):
        import tensorflow as tf

        loss = self.per_sample(tree)
        with np.errstate(all="ignore"):
            p = tf.Variable(self.p)
            with tf.GradientTape() as tape:
                values = loss(self.y, p)
            grads = tape.gradient(tf.reduce_mean(values), p)
            values = values.numpy()
            grads = np.zeros(p.shape, np.float32) if grads is None else grads.numpy()
            rules = self.settings.rules
            if "non_finite" in rules and not (np.all(np.isfinite(values)) and np.all(np.isfinite(grads))):
                return "non_finite", None
            low, high = self.settings.allowed_range
            if "out_of_range" in rules and not np.all((values >= low) & (values <= high)):  # NaN too
                return "out_of_range", None
            if "constant" in rules and np.ptp(values) < 1e-7 and np.abs(grads).max() < 1e-9:
                return "constant", None
            if "no_improvement" in rules and not self._improves(loss):
                return "no_improvement", None
        digits = self.settings.fingerprint_digits
        rounded = np.concatenate([values.ravel(), grads.ravel()])
        text = np.array2string(np.round(rounded, digits) + 0.0, precision=digits, threshold=10**9)
        return None, hashlib.sha256(text.encode()).hexdigest()[:24]

    def _improves(self, loss):
        """Gradient descent on logits from uniform predictions raises the true-class probability."""
        probability = self.descend(loss, self.settings.improvement_steps)
        return probability is not None and probability > 1.0 / self.settings.probe_classes + 1e-3

    def descend(self, loss, steps):
        """Mean true-class probability of the probe batch after `steps` of gradient descent on
        logits that start uniform, minimising `loss(y, p)`; None if a gradient is not finite."""
        import tensorflow as tf

        s = self.settings
        z = tf.Variable(tf.zeros_like(self.p))
        for _ in range(steps):
            with tf.GradientTape() as tape:
                value = tf.reduce_mean(loss(self.y, tf.nn.softmax(z)))
            grad = tape.gradient(value, z)
            if grad is None or not np.all(np.isfinite(grad.numpy())):
                return None
            z.assign_sub(s.improvement_rate * s.probe_classes * grad)
        return float(tf.reduce_mean(tf.reduce_sum(tf.nn.softmax(z) * self.y, -1)))
