"""The formula language: operators, parser, printer, LaTeX, constant folding and compiler.

A formula over variables (p and y for a loss) is a flat prefix list: operator names, variable
names and float constants, ``"p*(1+y)"`` -> ``["mul", "p", "add", 1.0, "y"]``, the representation
the genetic search evolves (like DEAP's `gp`). Each operator is one `Operator` record: name,
arity, infix symbol, precedence (by name), LaTeX, its function over an array namespace `xp`
(numpy, `keras.ops`, ...) and its partial derivatives (numpy, for screening). One recursive walk
compiles a tree to a function over any such namespace.

Operators: + − × ÷ ^ (also add, sub, mul, div, pow as functions), exp, log, sqrt, sin, cos,
tanh, abs, neg, square. ÷, log and sqrt are protected (defined below, once) so that every
formula is finite wherever its operands are. Plain Python and numpy: no Keras here.
"""

import enum
import functools
import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ngl_keras.settings import FLOAT32_MAX, shown  # plain Python: the message and float32 rules

EPSILON = 1e-6  # default ε of the protected operators (the paper's ε is unknown)


# Protected operators: one definition each, for any array namespace `xp` (keras.ops or numpy).

def protected_div(a, b, xp, epsilon=EPSILON):
    """a / (b ± ε), ε taken away from zero on b's side: finite for b = 0."""
    return a / xp.where(b >= 0, b + epsilon, b - epsilon)


def protected_log(a, xp, epsilon=EPSILON):
    """log(|a| + ε)."""
    return xp.log(xp.abs(a) + epsilon)


def protected_sqrt(a, xp, epsilon=EPSILON):
    """sqrt(|a| + ε): defined everywhere, finite gradient at 0."""
    return xp.sqrt(xp.abs(a) + epsilon)


# Partial derivatives, in numpy: the ones autodiff takes of the functions above. The `where` of
# protected ÷ passes the derivative to the branch it takes (b + ε and b − ε both have derivative
# 1), and |a| has derivative sign(a), 0 at a = 0 as in TensorFlow (JAX takes 1 there).

def _divisor(b, epsilon):
    """The denominator of `protected_div`: b ± ε, away from zero on b's side."""
    return np.where(b >= 0, b + epsilon, b - epsilon)


def _log_where_positive(a):
    """log(a) where a > 0, else 0: ∂(a^b)/∂b = a^b·log(a) has no real value for a ≤ 0, and
    TensorFlow's gradient of pow takes 0 there (JAX takes log(a), NaN for a < 0)."""
    positive = a > 0
    return np.where(positive, np.log(np.where(positive, a, 1)), 0)


class Precedence(enum.IntEnum):
    """How tightly a printed subtree binds; a higher one needs no parentheses where a lower does."""

    SUM = 1        # a + b, a - b
    PRODUCT = 2    # a * b, a / b
    NEGATION = 3   # -a, and a negative constant
    POWER = 4      # a ^ b
    ATOM = 5       # a variable, a non-negative constant, a function call


@dataclass(frozen=True)
class Operator:
    """One operator of the formula language, with every fact about it.

    `function(xp, epsilon, *operands)` computes it over the array namespace `xp`; `partials` has
    one function per operand, `(operands, value, epsilon) -> ∂value/∂operand` in numpy (the value
    is the operator's own result). `operand_bounds`: the precedence an operand needs to be printed
    without parentheses, per operand (empty: the printed form delimits its operands itself, as a
    function call does); `latex_groups`: the LaTeX template delimits its operands (\\frac, \\sqrt,
    e^{...}, function calls), so they need no parentheses there.
    """

    name: str
    arity: int
    function: Callable
    partials: tuple
    latex: str                              # template over {0}, {1}
    infix: str = ""                         # symbol of a binary infix operator
    precedence: Precedence = Precedence.ATOM
    operand_bounds: tuple = ()
    latex_groups: bool = True


# Left-associative binary operators: the right operand needs a stricter bound than the left.
_SUM_BOUNDS = (Precedence.SUM, Precedence.PRODUCT)
_PRODUCT_BOUNDS = (Precedence.PRODUCT, Precedence.NEGATION)

OPERATORS = {op.name: op for op in (
    Operator("add", 2, lambda xp, e, a, b: xp.add(a, b),
             (lambda x, v, e: 1, lambda x, v, e: 1),
             "{0} + {1}", "+", Precedence.SUM, _SUM_BOUNDS, latex_groups=False),
    Operator("sub", 2, lambda xp, e, a, b: xp.subtract(a, b),
             (lambda x, v, e: 1, lambda x, v, e: -1),
             "{0} - {1}", "-", Precedence.SUM, _SUM_BOUNDS, latex_groups=False),
    Operator("mul", 2, lambda xp, e, a, b: xp.multiply(a, b),
             (lambda x, v, e: x[1], lambda x, v, e: x[0]),
             r"{0} \cdot {1}", "*", Precedence.PRODUCT, _PRODUCT_BOUNDS, latex_groups=False),
    Operator("div", 2, lambda xp, e, a, b: protected_div(a, b, xp, e),
             (lambda x, v, e: 1 / _divisor(x[1], e), lambda x, v, e: -v / _divisor(x[1], e)),
             r"\frac{{{0}}}{{{1}}}", "/", Precedence.PRODUCT, _PRODUCT_BOUNDS),
    Operator("pow", 2, lambda xp, e, a, b: xp.power(a, b),
             (lambda x, v, e: x[1] * np.power(x[0], x[1] - 1), lambda x, v, e: v * _log_where_positive(x[0])),
             "{{{0}}}^{{{1}}}", "^", Precedence.POWER, (Precedence.ATOM, Precedence.ATOM), latex_groups=False),
    Operator("neg", 1, lambda xp, e, a: xp.negative(a), (lambda x, v, e: -1,),
             "-{0}", precedence=Precedence.NEGATION, operand_bounds=(Precedence.POWER,), latex_groups=False),
    Operator("exp", 1, lambda xp, e, a: xp.exp(a), (lambda x, v, e: v,), r"e^{{{0}}}"),
    Operator("log", 1, lambda xp, e, a: protected_log(a, xp, e),
             (lambda x, v, e: np.sign(x[0]) / (np.abs(x[0]) + e),), r"\log\left({0}\right)"),
    Operator("sqrt", 1, lambda xp, e, a: protected_sqrt(a, xp, e),
             (lambda x, v, e: np.sign(x[0]) * 0.5 / v,), r"\sqrt{{{0}}}"),
    Operator("sin", 1, lambda xp, e, a: xp.sin(a), (lambda x, v, e: np.cos(x[0]),), r"\sin\left({0}\right)"),
    Operator("cos", 1, lambda xp, e, a: xp.cos(a), (lambda x, v, e: -np.sin(x[0]),), r"\cos\left({0}\right)"),
    Operator("tanh", 1, lambda xp, e, a: xp.tanh(a), (lambda x, v, e: 1 - v * v,), r"\tanh\left({0}\right)"),
    Operator("abs", 1, lambda xp, e, a: xp.abs(a), (lambda x, v, e: np.sign(x[0]),), r"\left|{0}\right|"),
    Operator("square", 1, lambda xp, e, a: xp.square(a), (lambda x, v, e: 2 * x[0],),
             r"{{{0}}}^{{2}}", operand_bounds=(Precedence.ATOM,), latex_groups=False),
)}
_BY_SYMBOL = {op.infix: op.name for op in OPERATORS.values() if op.infix}


def operator_functions(xp, epsilon=EPSILON):
    """Operator name → function of arrays, for the array namespace `xp` (keras.ops or numpy)."""
    return {name: functools.partial(op.function, xp, epsilon) for name, op in OPERATORS.items()}


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
        raise ValueError(f"formula {shown(self.text)} does not parse at position {position}: {message}.")

    def constant(self):
        """The number token taken now, as a float that float32 holds (training computes in float32)."""
        _, text, position = self.take()
        value = float(text)
        if not abs(value) <= FLOAT32_MAX:
            self.fail(position, f"the constant {shown(text)} is beyond float32's range (|x| <= "
                      f"{FLOAT32_MAX:.4g}), where the loss computes")
        return value

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
            found = "end of formula" if token[0] == "end" else shown(token[1])
            self.fail(token[2], f"expected {value!r}, found {found}")
        self.i += 1
        return token

    def parse(self):
        if not self.tokens:
            self.fail(0, "the formula is empty")
        tree = self.expression()
        kind, value, position = self.peek()
        if kind != "end":
            self.fail(position, f"unexpected {shown(value)} after a complete expression")
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
            tree = -self.constant()  # "-3" is the constant -3
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
            return self.constant()
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
                self.fail(position, f"unknown function {shown(value)}; known: {', '.join(OPERATORS)}")
            if value not in self.variables:
                self.fail(position, f"unknown name {shown(value)}; variables are "
                          f"{', '.join(self.variables)}")
            return value
        if kind == "sym" and value == "(":
            self.take()
            tree = self.expression()
            self.take(")")
            return tree
        found = "end of formula" if kind == "end" else shown(value)
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
    return repr(float(value)) if digits is None else f"{value:.{digits}g}"


def _format(tree, start, digits, latex):
    """(text, precedence) of the subtree at `start`."""
    node = tree[start]
    if not isinstance(node, str):
        return _number(node, digits), Precedence.NEGATION if node < 0 else Precedence.ATOM
    if node not in OPERATORS:
        return node, Precedence.ATOM
    op = OPERATORS[node]
    parts = [_format(tree, a, digits, latex) for a, _ in _children(tree, start)]
    if latex:
        if op.latex_groups:
            args = [text for text, _ in parts]
        else:
            args = [_wrap(text, precedence, bound, latex) for (text, precedence), bound in zip(parts, op.operand_bounds)]
        return op.latex.format(*args), op.precedence
    if op.infix:
        left, right = (_wrap(text, precedence, bound, latex) for (text, precedence), bound in zip(parts, op.operand_bounds))
        return f"{left} {op.infix} {right}", op.precedence
    if op.name == "neg" and not isinstance(tree[start + 1], float):  # neg(3.0) would read back as -3.0
        return "-" + _wrap(*parts[0], op.operand_bounds[0], latex), op.precedence
    return f"{node}({', '.join(text for text, _ in parts)})", Precedence.ATOM


def _wrap(text, precedence, bound, latex):
    """Parenthesise an operand that binds more loosely than its place requires (`bound`)."""
    if precedence >= bound:
        return text
    return rf"\left({text}\right)" if latex else f"({text})"


def to_text(tree, digits=None):
    """Formula text that `parse` reads back to the same tree (constants exact by default)."""
    return _format(tree, 0, digits, latex=False)[0]


def to_latex(tree, digits=4):
    return _format(tree, 0, digits, latex=True)[0]


def fold_constants(tree, epsilon=EPSILON):
    """Replace every subtree without variables by its value (for display)."""
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
            if abs(value) <= FLOAT32_MAX:  # a folded formula parses again (`_Parser.constant`)
                folded = [value]
        return folded, subtree_end(tree, start)

    return fold(0)[0]


def compile_tree(tree, functions):
    """Prefix list → function of a dict of variables, by one recursive walk; `functions` is
    `operator_functions(xp, epsilon)` for the array namespace the result computes in."""

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
        raise ValueError(f"not a well-formed prefix tree: {shown(tree)}")
    return build(0)


PROBE_CLASSES, PROBE_ROWS = 10, 5


def probe_overflows(tree, epsilon=EPSILON):
    """Whether formula `tree` (over p and y) is not finite in float32 on a fixed probe batch: p
    spread over (0, 1), y one-hot, and the mean over classes that a loss takes. Such a formula
    is inf or NaN at the first training step, whatever the model."""
    p = np.linspace(1e-3, 1 - 1e-3, PROBE_ROWS * PROBE_CLASSES, dtype=np.float32).reshape(PROBE_ROWS, -1)
    y = np.eye(PROBE_CLASSES, dtype=np.float32)[np.arange(PROBE_ROWS) * 2 % PROBE_CLASSES]
    with np.errstate(all="ignore"):
        values = np.asarray(compile_tree(tree, operator_functions(np, epsilon))({"p": p, "y": y}), np.float32)
        means = np.mean(values + np.zeros_like(p), axis=-1, dtype=np.float32)
    return not np.all(np.isfinite(means))
