"""What every loss of the package shares: target handling and the thin `Loss` base.

Labels come one-hot (same shape as the predictions) or as integer class indices with shape
``y_pred.shape[:-1]`` or ``y_pred.shape[:-1] + (1,)``; predictions have any rank ``(B, ..., C)``.
Both label forms become float one-hot targets here, so every formula sees the same thing.

Integer labels outside ``[0, C)`` (or not whole numbers) raise ValueError when their values are
known (an eager call). Inside a compiled `fit` they are not known when the graph is built; there,
as Keras's own sparse losses do on accelerators, such a label turns its example's target into NaN,
so the loss is NaN (and `keras.callbacks.TerminateOnNaN` stops training) instead of silently
training on a zero target. `ngl_keras.data` checks every label when a split is loaded.

Segmentation: with ``ignore_class`` (255, the void label), integer label maps may hold that value.
Its positions get weight 0, so they contribute neither to the value nor to the gradient; a
per-position loss is the mean over the valid positions only (as Keras's own sparse cross entropy
with ``ignore_class``), a batch-level loss counts only valid positions in its sums.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from ngl_keras.settings import FLOAT32_MAX, in_float32, shown  # plain Python: the message and float32 rules

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
    if len(pred_shape) < 2:
        raise ValueError(
            f"y_pred shape {pred_shape} has no class axis: predictions must be (batch, ..., classes), "
            f"e.g. {pred_shape + (1,)} for one output per example; y_true has shape {true_shape}."
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
    if check_label_range(y_true, num_classes):
        return ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype=y_pred.dtype)
    # Values unknown (a compiled graph): a bad label makes its target NaN (module docstring).
    labels = ops.cast(y_true, "float32")
    valid = ops.logical_and(ops.logical_and(labels >= 0.0, labels < float(num_classes)),
                            ops.equal(labels, ops.floor(labels)))
    poison = ops.where(valid, ops.zeros_like(labels), ops.full_like(labels, float("nan")))
    targets = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype=y_pred.dtype)
    return targets + ops.cast(ops.expand_dims(poison, -1), y_pred.dtype)


def check_label_range(labels, num_classes):
    """Raise on integer labels outside [0, C) when their values are known; return whether they were."""
    values = _concrete(labels)
    if values is None:
        return False
    if values.size == 0:
        return True
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError("Integer labels must be whole numbers; got non-integer values in y_true.")
    low, high = values.min(), values.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"Integer labels must lie in [0, {num_classes}) for {num_classes} classes; "
            f"got values from {low:g} to {high:g}."
        )
    return True


def check_ignore_class(value):
    """None, or the label to ignore as an int (a whole number >= 0)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"ignore_class must be None or a class id >= 0 (255: void); got {value!r}.")
    return int(value)


def void_mask(y_true, y_pred, ignore_class):
    """(labels with `ignore_class` replaced by class 0, float mask of shape ``y_pred.shape[:-1]``:
    0 at the ignored positions, 1 elsewhere). Needs integer labels of shape ``y_pred.shape[:-1]``
    or that with a trailing 1."""
    pred_shape, true_shape = _static_shape(y_pred), _static_shape(y_true)
    if _dims_match(true_shape, pred_shape[:-1] + (1,)) and not _dims_match(true_shape, pred_shape[:-1]):
        y_true = ops.squeeze(y_true, axis=-1)
    elif not _dims_match(true_shape, pred_shape[:-1]):
        raise ValueError(f"ignore_class needs integer labels of shape {pred_shape[:-1]} (or with a trailing 1) "
                         f"for predictions of shape {pred_shape}; got labels of shape {true_shape}.")
    valid = ops.not_equal(y_true, ops.cast(ignore_class, y_true.dtype))
    return ops.where(valid, y_true, ops.zeros_like(y_true)), ops.cast(valid, y_pred.dtype)


def _times_sample_weight(mask, sample_weight):
    """`mask` times the sample weights, broadcast over the positions of each example."""
    if sample_weight is None:
        return mask
    weight = ops.cast(ops.convert_to_tensor(_as_array(sample_weight)), mask.dtype)
    if len(weight.shape) == len(mask.shape) + 1:
        weight = ops.squeeze(weight, axis=-1)
    while len(weight.shape) < len(mask.shape):
        weight = ops.expand_dims(weight, -1)
    return mask * weight


def probabilities(y_pred, from_logits):
    """Softmax of logits (``from_logits=True``) or the predictions as given."""
    return ops.softmax(y_pred, axis=-1) if from_logits else y_pred


# Argument checks: a loss's arguments are checked where the loss is built, naming the argument.

def check_number(name, value, condition=None, accepted="a finite number"):
    """`value` as a float if it is a real number (not a bool) that float32 holds, meeting
    `condition`. A loss computes in float32: a larger argument is inf there."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {accepted}; got {shown(value)}.")
    if not in_float32(value) and (isinstance(value, numbers.Integral) or math.isfinite(value)):
        raise ValueError(f"{name} must lie within float32's range (|x| <= {FLOAT32_MAX:.4g}), where the loss "
                         f"computes; got {shown(value)}.")
    if not math.isfinite(value) or (condition is not None and not condition(float(value))):
        raise ValueError(f"{name} must be {accepted}; got {shown(value)}.")
    return float(value)


def check_bound(name, value, test, accepted):
    """`value` (already checked) if `test` holds: the range where the loss stays finite in float32."""
    if not test(value):
        raise ValueError(f"{name} must be {accepted}; got {shown(value)}.")
    return value


def check_positive(name, value):
    return check_number(name, value, lambda v: v > 0, "a finite number > 0")


def check_flag(name, value):
    """`value` as a bool if it is one: a string such as "no" is an error, not True."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false; got {shown(value)}.")
    return bool(value)


def _shape_of(x):
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else np.shape(x)


def check_sample_weight(sample_weight, y_pred):
    """A one-line ValueError for sample weights that cannot fit the predictions' example axes.

    Accepted: a scalar, shape ``(B,)``, ``(B, ...)`` up to ``y_pred.shape[:-1]``, or that with a
    trailing 1; a dimension of 1 (or unknown) fits any.
    """
    if sample_weight is None:
        return
    weight, pred = _shape_of(sample_weight), _shape_of(y_pred)
    examples = pred[:-1]
    dims = weight[:-1] if len(weight) == len(pred) and weight and weight[-1] in (1, None) else weight
    if len(dims) > len(examples) or not all(
            a is None or b is None or a == 1 or a == b for a, b in zip(dims, examples)):
        also = f" (or {examples})" if len(examples) > 1 else ""
        raise ValueError(f"sample_weight shape {weight} does not fit predictions of shape {pred}: give "
                         f"one weight per example, shape {examples[:1]}{also}.")


class LossFunction(keras.losses.Loss):
    """A `Loss` that only stores keyword arguments and forwards them to a plain function.

    Reduction, `sample_weight`, dtype and distribution come from `keras.losses.Loss`; the
    arguments come back from `get_config`, so `from_config(get_config())` rebuilds the loss.
    With `ignore_class` (module docstring) the ignored positions' weight is 0 and the others'
    is scaled by positions / valid positions, so Keras's mean over all positions is the mean over
    the valid ones (what Keras's `apply_mask` does for its own masked losses).
    """

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None, ignore_class=None, **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self.ignore_class = check_ignore_class(ignore_class)
        self._fn_kwargs = kwargs

    def __call__(self, y_true, y_pred, sample_weight=None):
        check_sample_weight(sample_weight, _as_array(y_pred))
        if self.ignore_class is not None:
            y_pred = ops.convert_to_tensor(_as_array(y_pred), dtype=self.dtype)
            y_true, valid = void_mask(ops.convert_to_tensor(_as_array(y_true)), y_pred, self.ignore_class)
            valid = ops.cast(valid, "float32")   # a position count overflows float16
            positions = ops.cast(ops.size(valid), "float32")
            sample_weight = _times_sample_weight(valid * positions / ops.maximum(ops.sum(valid), 1.0),
                                                 sample_weight)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        # Plain Python lists arrive as lists of tensors: make them one tensor each.
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(self._fn_kwargs)
        if self.ignore_class is not None:   # absent otherwise: classification configs stay as they were
            config["ignore_class"] = self.ignore_class
        return config

    def __repr__(self):
        arguments = {**self._fn_kwargs, **({} if self.ignore_class is None else {"ignore_class": self.ignore_class})}
        args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
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

    There are no per-example values to reduce, so `reduction` accepts only Keras's default,
    "sum_over_batch_size" (kept in the config for serialization); any other raises ValueError.
    """

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None, ignore_class=None, **kwargs):
        if reduction != "sum_over_batch_size":
            raise ValueError(
                f"reduction {shown(reduction)} cannot apply to {type(self).__name__}: a batch-level loss "
                "has one value per batch, not one per example; only 'sum_over_batch_size' (the "
                "default) is accepted.")
        super().__init__(fn, name=name, reduction=reduction, dtype=dtype, ignore_class=ignore_class, **kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # keras.src.losses.loss.scale_loss_for_distribution: keras (checked on 3.15.1) exports no
        # public way to divide a value by the replica count as `keras.losses.Loss.__call__` does
        # (it applies it only after its per-example reduction). Listed in tests/test_private_apis.py.
        from keras.src.losses.loss import scale_loss_for_distribution

        check_sample_weight(sample_weight, _as_array(y_pred))
        with keras.name_scope(self.name):
            y_pred = ops.convert_to_tensor(_as_array(y_pred), dtype=self.dtype)
            y_true = ops.convert_to_tensor(_as_array(y_true), dtype=self.dtype)
            if self.ignore_class is not None:   # the ignored positions weigh 0 in the batch sums
                y_true, valid = void_mask(y_true, y_pred, self.ignore_class)
                sample_weight = _times_sample_weight(valid, sample_weight)
            value = self.fn(y_true, y_pred, sample_weight=sample_weight, **self._fn_kwargs)
            return scale_loss_for_distribution(value)
