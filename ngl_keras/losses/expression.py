"""Formulas over p (prediction) and y (target) as Keras losses: the one bridge from text to loss.

A formula is parsed once into a flat prefix list (operators by name, variables by name,
constants as floats), the same representation the genetic search evolves. One recursive
walk compiles it to `keras.ops` (for losses) or numpy (for the search's own fitness cases).

    ExpressionLoss("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")    # equals NGL()

Operators: + − × ÷ ^ (also add, sub, mul, div, pow as functions), exp, log, sqrt, sin, cos,
tanh, abs, neg, square. ÷, log and sqrt are protected (defined below, once) so that every
formula is finite wherever its operands are.
"""

import functools
import math
import re
from dataclasses import dataclass

import keras
from keras import ops

from ngl_keras.losses.base import PACKAGE, LossFunction, check_positive, one_hot_targets

EPSILON = 1e-6  # default ε of the protected operators (the paper's ε is unknown)


# Protected operators: one definition each, for any array module `xp` (keras.ops or numpy).

def protected_div(a, b, xp, epsilon=EPSILON):
    """a / (b ± ε), ε taken away from zero on b's side: finite for b = 0."""
    return a / xp.where(b >= 0, b + epsilon, b - epsilon)


def protected_log(a, xp, epsilon=EPSILON):
    """log(|a| + ε)."""
    return xp.log(xp.abs(a) + epsilon)


def protected_sqrt(a, xp, epsilon=EPSILON):
    """sqrt(|a| + ε): defined everywhere, finite gradient at 0."""
    return xp.sqrt(xp.abs(a) + epsilon)


@dataclass(frozen=True)
class Operator:
    name: str
    arity: int
    infix: str = ""       # symbol of a binary infix operator
    precedence: int = 5   # binding strength when printed (5: a function call or an atom)
    latex: str = ""       # LaTeX template over {0}, {1}


OPERATORS = {op.name: op for op in (
    Operator("add", 2, "+", 1, "{0} + {1}"),
    Operator("sub", 2, "-", 1, "{0} - {1}"),
    Operator("mul", 2, "*", 2, r"{0} \cdot {1}"),
    Operator("div", 2, "/", 2, r"\frac{{{0}}}{{{1}}}"),
    Operator("pow", 2, "^", 4, "{{{0}}}^{{{1}}}"),
    Operator("neg", 1, "", 3, "-{0}"),
    Operator("exp", 1, latex=r"e^{{{0}}}"),
    Operator("log", 1, latex=r"\log\left({0}\right)"),
    Operator("sqrt", 1, latex=r"\sqrt{{{0}}}"),
    Operator("sin", 1, latex=r"\sin\left({0}\right)"),
    Operator("cos", 1, latex=r"\cos\left({0}\right)"),
    Operator("tanh", 1, latex=r"\tanh\left({0}\right)"),
    Operator("abs", 1, latex=r"\left|{0}\right|"),
    Operator("square", 1, latex=r"{{{0}}}^{{2}}"),
)}
_BY_SYMBOL = {op.infix: op.name for op in OPERATORS.values() if op.infix}


def operator_functions(xp, epsilon=EPSILON):
    """Operator name → function of arrays, for the array module `xp` (keras.ops or numpy)."""
    return {
        "add": xp.add, "sub": xp.subtract, "mul": xp.multiply,
        "div": lambda a, b: protected_div(a, b, xp, epsilon),
        "pow": xp.power, "neg": xp.negative, "exp": xp.exp,
        "log": lambda a: protected_log(a, xp, epsilon),
        "sqrt": lambda a: protected_sqrt(a, xp, epsilon),
        "sin": xp.sin, "cos": xp.cos, "tanh": xp.tanh, "abs": xp.abs, "square": xp.square,
    }


def arity(node):
    """Children of a prefix-list node: an operator's arity, 0 for variables and constants."""
    return OPERATORS[node].arity if isinstance(node, str) and node in OPERATORS else 0


def variables_of(tree):
    return {n for n in tree if isinstance(n, str) and n not in OPERATORS}


# Parsing: text -> prefix list. A small recursive-descent parser; user text is never evaluated.
# Subtrees are built as nested nodes (constant time each) and flattened once at the end, so that
# parsing is linear in the formula's length; the depth of nesting is capped (MAX_DEPTH) so that
# neither the parser nor the recursive walks below can exhaust Python's stack.

MAX_DEPTH = 100  # tree levels; the search's trees have at most 100 nodes (gp.engine.Limits.max_size)

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*)"
                    r"|(\*\*|[-+*/^(),]))")


class _Node:
    """An operator applied to child nodes (or leaves: variable names and floats) while parsing."""

    __slots__ = ("name", "children", "depth")

    def __init__(self, name, children, depth):
        self.name, self.children, self.depth = name, children, depth


def _depth(item):
    return item.depth if isinstance(item, _Node) else 1


def _flatten(root):
    """Nested nodes -> prefix list, with an explicit stack (no recursion)."""
    out, stack = [], [root]
    while stack:
        item = stack.pop()
        if isinstance(item, _Node):
            out.append(item.name)
            stack.extend(reversed(item.children))
        else:
            out.append(item)
    return out


class _Parser:
    def __init__(self, text, variables):
        self.text, self.variables, self.pos = text, variables, 0
        self.tokens = []
        self.nesting = 0
        while True:
            match = _TOKEN.match(text, self.pos)
            if not match:
                rest = text[self.pos:]
                if rest.strip():
                    self.fail(self.pos + len(rest) - len(rest.lstrip()), "unexpected character "
                              f"{rest.strip()[0]!r}")
                break
            kind = "num" if match.group(1) else "name" if match.group(2) else "sym"
            value = match.group(match.lastindex)
            self.tokens.append((kind, "^" if value == "**" else value, match.start(match.lastindex)))
            self.pos = match.end()
        self.i = 0

    def fail(self, position, message):
        shown = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        raise ValueError(f"formula {shown!r} does not parse at position {position}: {message}.")

    def node(self, name, position, *children):
        depth = 1 + max(_depth(child) for child in children)
        if depth > MAX_DEPTH:
            self.fail(position, f"it nests deeper than {MAX_DEPTH} levels (each operator, and each "
                      "term of a long sum or product, is one level; group terms in parentheses)")
        return _Node(name, children, depth)

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text))

    def take(self, value=None):
        token = self.peek()
        if value is not None and token[1] != value:
            found = "end of formula" if token[0] == "end" else repr(token[1])
            self.fail(token[2], f"expected {value!r}, found {found}")
        self.i += 1
        return token

    def parse(self):
        if not self.tokens:
            self.fail(0, "the formula is empty")
        tree = self.expression()
        kind, value, position = self.peek()
        if kind != "end":
            self.fail(position, f"unexpected {value!r} after a complete expression")
        return _flatten(tree)

    def _at_symbol(self, symbols):
        kind, value, _ = self.peek()
        return kind == "sym" and value in symbols

    def expression(self):
        tree = self.term()
        while self._at_symbol("+-"):
            _, symbol, position = self.take()
            tree = self.node(_BY_SYMBOL[symbol], position, tree, self.term())
        return tree

    def term(self):
        tree = self.unary()
        while self._at_symbol("*/"):
            _, symbol, position = self.take()
            tree = self.node(_BY_SYMBOL[symbol], position, tree, self.unary())
        return tree

    def unary(self):
        # Every way back into the grammar (parentheses, arguments, exponents) passes here once.
        self.nesting += 1
        try:
            if self.nesting > MAX_DEPTH:
                self.fail(self.peek()[2], f"it nests deeper than {MAX_DEPTH} levels")
            return self._signed()
        finally:
            self.nesting -= 1

    def _signed(self):
        signs = []  # positions of the minus signs in front of the operand, outermost first
        while self._at_symbol("+-"):
            _, symbol, position = self.take()
            if symbol == "-":
                signs.append(position)
            elif signs and signs[-1] is not None:
                signs.append(None)  # a '+' between '-' and a number: "-+3" is neg(3), not -3
        if signs and signs[-1] is not None and self.peek()[0] == "num" and self._next_is_not("^"):
            signs.pop()
            tree = -float(self.take()[1])  # "-3" is the constant -3
        else:
            tree = self.power()
        for position in reversed([s for s in signs if s is not None]):
            tree = self.node("neg", position, tree)
        return tree

    def _next_is_not(self, symbol):
        following = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else ("end", "", 0)
        return following[1] != symbol

    def power(self):
        base = self.atom()
        if self._at_symbol("^"):
            position = self.take()[2]
            return self.node("pow", position, base, self.unary())
        return base

    def atom(self):
        kind, value, position = self.peek()
        if kind == "num":
            self.take()
            return float(value)
        if kind == "name":
            self.take()
            if value in OPERATORS:
                op = OPERATORS[value]
                self.take("(")
                children = [self.expression()]
                for _ in range(op.arity - 1):
                    self.take(",")
                    children.append(self.expression())
                self.take(")")
                return self.node(value, position, *children)
            if self.peek()[1] == "(":
                self.fail(position, f"unknown function {value!r}; known: {', '.join(OPERATORS)}")
            if value not in self.variables:
                self.fail(position, f"unknown name {value!r}; variables are "
                          f"{', '.join(self.variables)}")
            return value
        if kind == "sym" and value == "(":
            self.take()
            tree = self.expression()
            self.take(")")
            return tree
        found = "end of formula" if kind == "end" else repr(value)
        self.fail(position, f"expected a number, variable, function or '(', found {found}")


def parse(text, variables=("p", "y")):
    """Formula text → prefix list, e.g. ``"p*(1+y)"`` → ``["mul", "p", "add", 1.0, "y"]``.

    Linear in the length of `text`; a formula nested deeper than `MAX_DEPTH` levels raises
    ValueError.
    """
    if not isinstance(text, str):
        raise ValueError(f"a formula must be a string; got {type(text).__name__}.")
    return _Parser(text, tuple(variables)).parse()


# Walking prefix lists: subtrees, printing, folding, compiling.

def subtree_end(tree, start):
    """End (exclusive) of the subtree that starts at `start`: one linear scan."""
    needed, i = 1, start
    while needed:
        needed += arity(tree[i]) - 1
        i += 1
    return i


def _children(tree, start):
    spans, i = [], start + 1
    for _ in range(arity(tree[start])):
        end = subtree_end(tree, i)
        spans.append((i, end))
        i = end
    return spans


def _number(value, digits):
    text = repr(float(value)) if digits is None else f"{value:.{digits}g}"
    return text


def _format(tree, start, digits, latex):
    """(text, precedence) of the subtree at `start`."""
    node = tree[start]
    if not isinstance(node, str):
        text = _number(node, digits)
        return (text, 3) if node < 0 else (text, 5)
    if node not in OPERATORS:
        return node, 5
    op = OPERATORS[node]
    parts = [_format(tree, a, digits, latex) for a, _ in _children(tree, start)]
    if latex:
        if op.name in ("div", "sqrt", "exp") or op.arity == 1 and op.name not in ("neg", "square"):
            args = [t for t, _ in parts]
        else:
            args = [_wrap(t, p, op, k, latex) for k, (t, p) in enumerate(parts)]
        return op.latex.format(*args), op.precedence
    if op.infix:
        left, right = (_wrap(t, p, op, k, latex) for k, (t, p) in enumerate(parts))
        return f"{left} {op.infix} {right}", op.precedence
    if op.name == "neg" and not (isinstance(tree[start + 1], float)):
        return "-" + _wrap(*parts[0], op, 0, latex), op.precedence
    return f"{node}({', '.join(t for t, _ in parts)})", 5


def _wrap(text, precedence, op, position, latex):
    """Parenthesise an operand that binds more loosely than its operator requires."""
    if op.name == "pow":
        need = precedence <= 4 if position == 0 else precedence < 5
    elif op.name == "neg":
        need = precedence < 4
    elif op.name == "square":
        need = precedence < 5
    else:  # left-associative binary operators: the right operand needs a stricter bound
        need = precedence < op.precedence or (position == 1 and precedence == op.precedence)
    if not need:
        return text
    return rf"\left({text}\right)" if latex else f"({text})"


def to_text(tree, digits=None):
    """Formula text that `parse` reads back to the same tree (constants exact by default)."""
    return _format(tree, 0, digits, latex=False)[0]


def to_latex(tree, digits=4):
    return _format(tree, 0, digits, latex=True)[0]


def fold_constants(tree, epsilon=EPSILON):
    """Replace every subtree without variables by its value (for display)."""
    import numpy as np

    functions = operator_functions(np, epsilon)

    def fold(start):
        node = tree[start]
        if arity(node) == 0:
            return [node], subtree_end(tree, start)
        folded = [node]
        for a, _ in _children(tree, start):
            folded += fold(a)[0]
        if not variables_of(folded):
            with np.errstate(all="ignore"):
                value = float(compile_tree(folded, functions)({}))
            if math.isfinite(value):
                folded = [value]
        return folded, subtree_end(tree, start)

    return fold(0)[0]


def compile_tree(tree, functions):
    """Prefix list → function of a dict of variables, by one recursive walk."""

    def build(start):
        node = tree[start]
        if not isinstance(node, str):
            value = float(node)
            return lambda env: value
        if node not in OPERATORS:
            return lambda env: env[node]
        fn = functions[node]
        kids = [build(a) for a, _ in _children(tree, start)]
        if len(kids) == 1:
            (only,) = kids
            return lambda env: fn(only(env))
        first, second = kids
        return lambda env: fn(first(env), second(env))

    if subtree_end(tree, 0) != len(tree):
        raise ValueError(f"not a well-formed prefix tree: {tree!r}")
    return build(0)


# The loss.

@functools.lru_cache(maxsize=4096)
def _compiled(formula, epsilon):
    tree = parse(formula)
    missing = {"p", "y"} - variables_of(tree)
    if missing:
        raise ValueError(f"formula {formula!r} must use both p and y; it does not use "
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
                 dtype=None):
        epsilon = check_positive("epsilon", epsilon)
        if not isinstance(formula, str):
            raise ValueError(f"formula must be a string; got {type(formula).__name__}.")
        self.tree = _compiled(formula, float(epsilon))[0]  # raises on a bad formula, here
        super().__init__(expression_loss, name=name or "expression_loss", reduction=reduction,
                         dtype=dtype, formula=formula, epsilon=float(epsilon))

    @property
    def formula(self):
        return self._fn_kwargs["formula"]

    def latex(self, digits=4):
        return to_latex(fold_constants(self.tree, self._fn_kwargs["epsilon"]), digits)

    def __str__(self):
        return to_text(fold_constants(self.tree, self._fn_kwargs["epsilon"]), digits=6)
