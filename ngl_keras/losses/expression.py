"""Formulas over p (prediction) and y (target) as Keras losses: the one bridge from text to loss.

The formula language itself (operators, parser, printer, LaTeX, folding, compiler) is
`ngl_keras.formula`; here a formula is parsed once and compiled to `keras.ops`.

    ExpressionLoss("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")    # equals NGL()
"""

import functools

import keras
from keras import ops

# Re-exported: code written before ngl_keras.formula existed (tests, and the old revisions that
# benchmarks/screening_speed.py loads) imports these names from here.
from ngl_keras.formula import (  # noqa: F401
    EPSILON, MAX_DEPTH, OPERATORS, Operator, Precedence, arity, compile_tree, fold_constants,
    operator_functions, parse, protected_div, protected_log, protected_sqrt, subtree_end, to_latex,
    to_text, variables_of,
)
from ngl_keras.losses.base import PACKAGE, LossFunction, check_positive, one_hot_targets
from ngl_keras.settings import shown


@functools.lru_cache(maxsize=4096)
def _compiled(formula, epsilon):
    tree = parse(formula)
    missing = {"p", "y"} - variables_of(tree)
    if missing:
        raise ValueError(f"formula {shown(formula)} must use both p and y; it does not use "
                         f"{' or '.join(sorted(missing))}.")
    return tree, compile_tree(tree, operator_functions(ops, epsilon))


def expression_loss(y_true, y_pred, formula, epsilon=EPSILON):
    """Per-sample mean over classes of the formula evaluated at (p = y_pred, y = one-hot)."""
    y = one_hot_targets(y_true, y_pred)
    values = _compiled(formula, epsilon)[1]({"p": y_pred, "y": y})
    return ops.mean(values + ops.zeros_like(y_pred), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExpressionLoss(LossFunction):
    """A loss written as a formula over p (prediction, softmax output) and y (one-hot target).

    Per sample: the mean over classes of the formula's value, like NGL's (1/C)·Σ_c.
    The formula is parsed once (never evaluated as Python), must use both p and y, and is
    compiled to `keras.ops`; ÷, log and sqrt are protected (a/(b ± ε), log(|a| + ε),
    sqrt(|a| + ε)). The loss serializes as its formula string.

    Usage:
        loss = ngl_keras.ExpressionLoss("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
        print(loss.formula, loss.latex())
        model.compile(optimizer="adam", loss=loss)
    """

    def __init__(self, formula, epsilon=EPSILON, reduction="sum_over_batch_size", name=None,
                 dtype=None, ignore_class=None):
        epsilon = check_positive("epsilon", epsilon)
        if not isinstance(formula, str):
            raise ValueError(f"formula must be a string; got {type(formula).__name__}.")
        self.tree = _compiled(formula, float(epsilon))[0]  # raises on a bad formula, here
        super().__init__(expression_loss, name=name or "expression_loss", reduction=reduction,
                         dtype=dtype, ignore_class=ignore_class, formula=formula, epsilon=float(epsilon))

    @property
    def formula(self):
        return self._fn_kwargs["formula"]

    def latex(self, digits=4):
        return to_latex(fold_constants(self.tree, self._fn_kwargs["epsilon"]), digits)

    def __str__(self):
        return to_text(fold_constants(self.tree, self._fn_kwargs["epsilon"]), digits=6)
