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


_ENTRIES = (
    LossEntry("ce", keras.losses.CategoricalCrossentropy,
              "categorical cross entropy (Keras; one-hot labels)", build_ignoring=CrossEntropy),
    LossEntry("sparse_ce", keras.losses.SparseCategoricalCrossentropy,
              "categorical cross entropy (Keras; integer labels)"),
    # CE + L2: the loss is CE; the model builder puts `l2` on every kernel. Strength unknown
    # in the paper: 1e-4 is our default, the configs say so.
    LossEntry("ce_l2", keras.losses.CategoricalCrossentropy,
              "CE with L2 weight regularisation on the kernels (paper baseline)", kernel_l2=1e-4,
              build_ignoring=CrossEntropy),
    LossEntry("focal", keras.losses.CategoricalFocalCrossentropy,
              "focal loss, Lin et al. 2017 (Keras; one-hot labels)", build_ignoring=FocalCrossEntropy,
              bounds={"gamma": _FOCAL_GAMMA}),
    LossEntry("ngl", NGL, "Next Generation Loss, Akhmedova & Körber 2024"),
    LossEntry("sce", SymmetricCrossEntropy, "symmetric cross entropy, Wang et al. 2019"),
    LossEntry("dice", SoftDice, "multi-class soft Dice (batch-level)"),
    LossEntry("bi_tempered", BiTemperedLogisticLoss, "bi-tempered logistic loss, Amid et al. 2019"),
    LossEntry("anyloss", AnyLoss, "AnyLoss, Han et al. 2024 (batch-level)"),
    LossEntry("anyloss_accuracy", AnyLoss, "AnyLoss of accuracy", {"metric": "accuracy"}),
    LossEntry("anyloss_f1", AnyLoss, "AnyLoss of F1", {"metric": "fbeta", "beta": 1.0}),
    LossEntry("anyloss_fbeta", AnyLoss, "AnyLoss of F-beta", {"metric": "fbeta"}),
    LossEntry("anyloss_gmean", AnyLoss, "AnyLoss of G-mean", {"metric": "gmean"}),
    LossEntry("anyloss_balanced_accuracy", AnyLoss, "AnyLoss of balanced accuracy",
              {"metric": "balanced_accuracy"}),
)
REGISTRY = {entry.name: entry for entry in _ENTRIES}


def names():
    return sorted(REGISTRY)


def _is_formula(name):
    return any(ch in name for ch in "()+-*/^ ")


def entry(name):
    """The registry entry of `name`; a formula gets an ExpressionLoss entry."""
    if not isinstance(name, str):
        raise ValueError(f"a loss name must be a string; got {shown(name)}.")
    key = name.strip().lower()
    if key in REGISTRY:
        return REGISTRY[key]
    if _is_formula(name):
        return LossEntry(name, functools.partial(ExpressionLoss, name), "formula", {})
    raise ValueError(f"unknown loss {shown(name)}; known losses: {', '.join(names())}, "
                     "or a formula over p and y such as 'exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))'.")


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
        raise ValueError(f"loss {shown(name)} does not accept {shown(sorted(kwargs))}: {error}") from None


def kernel_l2(name, **kwargs):
    """L2 strength the model builder applies to the kernels for loss `name` (0 for most)."""
    return split_kwargs(name, kwargs)[1]


__all__ = [
    "NGL", "AnyLoss", "SymmetricCrossEntropy", "SoftDice", "BiTemperedLogisticLoss",
    "ExpressionLoss", "CrossEntropy", "FocalCrossEntropy", "ngl", "anyloss", "symmetric_cross_entropy",
    "soft_dice", "cross_entropy", "focal_cross_entropy",
    "bi_tempered_logistic_loss", "tempered_softmax", "expression_loss", "get", "names",
    "entry", "kernel_l2", "REGISTRY",
]
