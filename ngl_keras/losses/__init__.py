"""The losses, and the one registry that maps their names to them.

    ngl_keras.losses.get("ngl")                       # NGL()
    ngl_keras.losses.get("sce", alpha=6.0, beta=0.1)  # SymmetricCrossEntropy(...)
    ngl_keras.losses.get("exp(p) - y*p")              # any formula: ExpressionLoss(...)
    ngl_keras.losses.get("focal", ignore_class=255)   # segmentation: void pixels ignored
"""

import functools
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import keras

from ngl_keras.losses.anyloss import AnyLoss, anyloss
from ngl_keras.losses.base import check_flag, check_ignore_class, check_number
from ngl_keras.losses.baselines import (
    BiTemperedLogisticLoss, CrossEntropy, FocalCrossEntropy, SoftDice, SymmetricCrossEntropy,
    bi_tempered_logistic_loss, cross_entropy, focal_cross_entropy, soft_dice, symmetric_cross_entropy,
    tempered_softmax,
)
from ngl_keras.losses.expression import ExpressionLoss, expression_loss
from ngl_keras.losses.ngl import NGL, ngl
from ngl_keras.settings import in_float32, shown
from ngl_keras.names import LOSSES as LOSS_NAMES, YAML_FORM, parse_loss


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: how to build it, the model-side L2 it asks for, where it comes from."""

    name: str
    build: Callable
    source: str
    fixed: dict = field(default_factory=dict)  # arguments the name implies
    kernel_l2: float = 0.0                     # default L2 strength on the model's kernels
    build_ignoring: Callable = None            # the build for void labels, where `build` takes no ignore_class
    bounds: dict = field(default_factory=dict)  # argument -> (test, accepted): for Keras's own losses


# Focal loss weighs CE by (1 − p)^γ, p clipped to 1 − 1e-7: with γ < 0 that weight grows as p nears 1
# (the opposite of focal) and overflows float32 below γ ≈ −5.5.
_FOCAL_GAMMA = (lambda v: v >= 0, "a number >= 0 (with gamma < 0, (1 - p)^gamma grows as p nears 1 and "
                "overflows float32 below -5.5)")


# Each registered name's classes (the one that builds it, and the one for void labels where that
# one takes no ignore_class); its source, arguments and fixed values are the Keras-free table
# ngl_keras.names.LOSSES, which checks a command line before Keras loads.
_CLASSES = {
    "ce": (keras.losses.CategoricalCrossentropy, CrossEntropy),
    "sparse_ce": (keras.losses.SparseCategoricalCrossentropy, None),
    "ce_l2": (keras.losses.CategoricalCrossentropy, CrossEntropy),
    "focal": (keras.losses.CategoricalFocalCrossentropy, FocalCrossEntropy),
    "ngl": (NGL, None),
    "sce": (SymmetricCrossEntropy, None),
    "dice": (SoftDice, None),
    "bi_tempered": (BiTemperedLogisticLoss, None),
    "anyloss": (AnyLoss, None),
    "anyloss_accuracy": (AnyLoss, None),
    "anyloss_f1": (AnyLoss, None),
    "anyloss_fbeta": (AnyLoss, None),
    "anyloss_gmean": (AnyLoss, None),
    "anyloss_balanced_accuracy": (AnyLoss, None),
}
_BOUNDS = {"focal": {"gamma": _FOCAL_GAMMA}}  # limits of Keras's own losses' arguments
_ENTRIES = tuple(LossEntry(name, build, LOSS_NAMES[name].source, LOSS_NAMES[name].fixed, LOSS_NAMES[name].kernel_l2,
                           ignoring, _BOUNDS.get(name, {})) for name, (build, ignoring) in _CLASSES.items())
REGISTRY = {entry.name: entry for entry in _ENTRIES}


def names():
    return sorted(REGISTRY)


def entry(name):
    """The registry entry of `name` (any capitals); a formula gets an ExpressionLoss entry."""
    _, found, _ = parse_loss(name)
    if found in REGISTRY:
        return REGISTRY[found]
    return LossEntry(name, functools.partial(ExpressionLoss, name), "formula", {})


def split_kwargs(name, kwargs):
    """(loss arguments, kernel L2 strength) for `name` with user arguments `kwargs`."""
    found = entry(name)
    kwargs = dict(kwargs or {})
    for key, value in kwargs.items():  # Keras's own losses take NaN, inf and "no" without a word
        if key == "from_logits":
            check_flag(f"loss {shown(name)}: from_logits", value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"loss {shown(name)}: {key} must be a finite number; got {shown(value)}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not in_float32(value):
            check_number(f"loss {shown(name)}: {key}", value)  # beyond float32: says so
        if key in found.bounds:
            test, accepted = found.bounds[key]
            check_number(f"loss {shown(name)}: {key}", value, test, accepted)
    l2 = kwargs.pop("l2", found.kernel_l2) if found.kernel_l2 else found.kernel_l2
    if found.kernel_l2:
        l2 = check_number(f"loss {shown(name)}: l2", l2, lambda v: v >= 0, "a finite number >= 0")
    if "l2" in kwargs:
        raise ValueError(f"loss {shown(name)} takes no 'l2'; only 'ce_l2' regularises the kernels.")
    clash = set(found.fixed) & set(kwargs)
    if clash:
        raise ValueError(f"loss {shown(name)} fixes {sorted(clash)}; use 'anyloss' to set them.")
    return {**found.fixed, **kwargs}, float(l2)


def _ignores(build):
    return "ignore_class" in inspect.signature(build).parameters


def get(name, **kwargs):
    """The loss registered as `name` (or a formula), built with `kwargs`.

    An unknown name raises ValueError listing the known ones; arguments the loss does not
    take raise ValueError naming them. `ignore_class=255` (segmentation) gives a loss that
    ignores void labels, or a ValueError naming a loss that cannot; `ignore_class=None` is the
    classification loss, unchanged.
    """
    ignore_class = check_ignore_class(kwargs.pop("ignore_class", None))
    if isinstance(name, keras.losses.Loss):
        if ignore_class is not None and getattr(name, "ignore_class", None) != ignore_class:
            raise ValueError(f"loss {name.name!r} ({type(name).__name__}) cannot ignore void labels "
                             f"(ignore_class={ignore_class}); build it with ignore_class={ignore_class}, "
                             "or name a registered loss.")
        return name
    name, kwargs = _with_call_arguments(name, kwargs)
    found = entry(name)
    loss_kwargs, _ = split_kwargs(name, kwargs)
    build = found.build
    if ignore_class is not None:
        build = found.build_ignoring or build
        if not _ignores(build):
            raise ValueError(f"loss {name!r} cannot ignore void labels (ignore_class={ignore_class}).")
        loss_kwargs["ignore_class"] = ignore_class
    try:
        return build(**loss_kwargs)
    except TypeError as error:
        raise ValueError(f"loss {shown(name)} does not accept {shown(sorted(kwargs))}: {error} (in a config: {YAML_FORM}).") from None


def kernel_l2(name, **kwargs):
    """L2 strength the model builder applies to the kernels for loss `name` (0 for most)."""
    return split_kwargs(*_with_call_arguments(name, kwargs))[1]


def _with_call_arguments(name, kwargs):
    """(registered name, arguments) of `ngl(alpha=3.0)`-style text (its arguments under `kwargs`);
    other names as given."""
    if not isinstance(name, str):
        return name, kwargs
    _, found, arguments = parse_loss(name)
    return (found, {**arguments, **kwargs}) if found in REGISTRY else (name, kwargs)


__all__ = [
    "NGL", "AnyLoss", "SymmetricCrossEntropy", "SoftDice", "BiTemperedLogisticLoss",
    "ExpressionLoss", "CrossEntropy", "FocalCrossEntropy", "ngl", "anyloss", "symmetric_cross_entropy",
    "soft_dice", "cross_entropy", "focal_cross_entropy",
    "bi_tempered_logistic_loss", "tempered_softmax", "expression_loss", "get", "names",
    "entry", "kernel_l2", "REGISTRY", "parse_loss",
]
