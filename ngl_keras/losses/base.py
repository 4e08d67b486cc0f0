"""What every loss of the package shares: target handling and the thin `Loss` base.

Labels come one-hot (same shape as the predictions) or as integer class indices with shape
``y_pred.shape[:-1]`` or ``y_pred.shape[:-1] + (1,)``; predictions have any rank ``(B, ..., C)``.
Both label forms become float one-hot targets here, so every formula sees the same thing.
"""

import keras
import numpy as np
from keras import ops

PACKAGE = "ngl_keras"


def _static_shape(x):
    return tuple(x.shape)


def _concrete(x):
    """The values of `x` as numpy when they are known now (eager call), else None (inside a trace)."""
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # a symbolic tensor: its values do not exist yet
        return None


def _as_array(x):
    return np.asarray(x) if isinstance(x, (list, tuple)) else x


def _dims_match(a, b):
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def one_hot_targets(y_true, y_pred):
    """`y_true` as float targets with the shape of `y_pred`.

    Integer labels are checked against ``[0, C)`` whenever their values are known (eager
    calls); inside a compiled graph the check is the data pipeline's job.
    """
    pred_shape = _static_shape(y_pred)
    true_shape = _static_shape(y_true)
    if len(pred_shape) < 1 or pred_shape[-1] is None:
        raise ValueError(
            f"y_pred must have a known class axis last, shape (batch, ..., classes); got {pred_shape}."
        )
    num_classes = pred_shape[-1]
    if _dims_match(true_shape, pred_shape):
        return ops.cast(y_true, y_pred.dtype)
    if num_classes == 1 and _dims_match(true_shape, pred_shape[:-1]):
        return ops.cast(ops.expand_dims(y_true, -1), y_pred.dtype)
    if _dims_match(true_shape, pred_shape[:-1] + (1,)):
        y_true = ops.squeeze(y_true, axis=-1)
    elif not _dims_match(true_shape, pred_shape[:-1]):
        raise ValueError(
            f"y_true shape {true_shape} cannot match y_pred shape {pred_shape}: expected one-hot "
            f"labels of shape {pred_shape} or integer labels of shape {pred_shape[:-1]} "
            f"or {pred_shape[:-1] + (1,)}."
        )
    check_label_range(y_true, num_classes)
    return ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype=y_pred.dtype)


def check_label_range(labels, num_classes):
    values = _concrete(labels)
    if values is None or values.size == 0:
        return
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError("Integer labels must be whole numbers; got non-integer values in y_true.")
    low, high = values.min(), values.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"Integer labels must lie in [0, {num_classes}) for {num_classes} classes; "
            f"got values from {low:g} to {high:g}."
        )


def probabilities(y_pred, from_logits):
    """Softmax of logits (``from_logits=True``) or the predictions as given."""
    return ops.softmax(y_pred, axis=-1) if from_logits else y_pred


def check_positive(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a number > 0; got {value!r}.")
    return float(value)


class LossFunction(keras.losses.Loss):
    """A `Loss` that only stores keyword arguments and forwards them to a plain function.

    Reduction, `sample_weight`, dtype and distribution come from `keras.losses.Loss`; the
    arguments come back from `get_config`, so `from_config(get_config())` rebuilds the loss.
    """

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None, **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        # Plain Python lists arrive as lists of tensors: make them one tensor each.
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(self._fn_kwargs)
        return config

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._fn_kwargs.items())
        return f"{type(self).__name__}({args})"


def class_sums(y, q, sample_weight=None):
    """Per-class batch sums of a soft confusion matrix: (Σ w·y·q, Σ w·y, Σ w·q, Σ w).

    `y` and `q` have shape ``(B, ..., C)``; every position ``(b, ...)`` is one example of
    weight ``w`` (the sample weight of its batch element, 1 without weights). The first three
    results have shape ``(C,)``, the last is a scalar.
    """
    if sample_weight is None:
        w = ops.ones_like(y[..., :1])
    else:
        w = ops.convert_to_tensor(sample_weight, dtype=y.dtype)
        rank = len(y.shape)
        if len(w.shape) == rank and w.shape[-1] not in (1, None):
            raise ValueError(
                f"sample_weight shape {tuple(w.shape)} does not fit predictions {tuple(y.shape)}: "
                f"give one weight per example, shape {tuple(y.shape[:-1])}."
            )
        while len(w.shape) < rank:
            w = ops.expand_dims(w, -1)
        w = w * ops.ones_like(y[..., :1])
    axes = tuple(range(len(y.shape) - 1))
    return (
        ops.sum(w * y * q, axis=axes),
        ops.sum(w * y, axis=axes),
        ops.sum(w * q, axis=axes),
        ops.sum(w),
    )


class BatchLoss(LossFunction):
    """A loss defined on the whole batch (one scalar, not a mean of per-sample terms).

    Sample weights weight each example's contribution to the batch sums instead of
    multiplying per-sample values, and the scalar is divided by the number of replicas
    under `tf.distribute`, as Keras does for per-sample losses, so that the summed
    replica gradients are the gradient of the mean over replicas. Under a strategy with R
    replicas, each replica computes the loss of its own shard (B/R examples) and training
    minimises the mean of those R values; the reported loss is that mean too.
    """

    def __call__(self, y_true, y_pred, sample_weight=None):
        from keras.src.losses.loss import scale_loss_for_distribution

        with keras.name_scope(self.name):
            y_pred = ops.convert_to_tensor(_as_array(y_pred), dtype=self.dtype)
            y_true = ops.convert_to_tensor(_as_array(y_true), dtype=self.dtype)
            value = self.fn(y_true, y_pred, sample_weight=sample_weight, **self._fn_kwargs)
            return scale_loss_for_distribution(value)
