"""The formula language (ngl_keras/formula.py): parsing, printing, LaTeX, folding, compiling over an
array namespace, and each operator's record (function and derivatives) against its definition."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ngl_keras import formula as fm
from tests.paths import ROOT

pytestmark = pytest.mark.any_backend  # numpy only: the same on every backend

NGL_FORMULA = "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"


def test_importing_the_formula_language_imports_no_keras():
    code = "import sys, ngl_keras.formula; assert 'keras' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_parse_gives_the_prefix_list():
    assert fm.parse("p*(1+y)") == ["mul", "p", "add", 1.0, "y"]
    assert fm.parse("-p^2 + y") == ["add", "neg", "pow", "p", 2.0, "y"]
    assert fm.parse("p - -2*y") == ["sub", "p", "mul", -2.0, "y"]
    assert fm.parse("2**p / y") == ["div", "pow", 2.0, "p", "y"]
    assert fm.parse("div(p, add(y, 1e-3))") == ["div", "p", "add", "y", 0.001]
    assert fm.parse("a*b", variables=("a", "b")) == ["mul", "a", "b"]


@pytest.mark.parametrize("text,message", [
    ("", "does not parse at position 0: the formula is empty."),
    ("p + q", "does not parse at position 4: unknown name 'q'; variables are p, y."),
    ("p ^ ", "does not parse at position 4: expected a number, variable, function or '(', found end of formula."),
    ("(" * 101 + "p" + ")" * 101, "does not parse at position 100: it nests deeper than 100 levels."),
])
def test_parse_errors_name_the_position_and_the_problem(text, message):
    with pytest.raises(ValueError) as error:
        fm.parse(text)
    assert str(error.value).endswith(message)


def test_printer_parenthesises_by_precedence_and_latex_groups():
    assert fm.to_text(fm.parse("(p - y) - (p - y)")) == "p - y - (p - y)"
    assert fm.to_text(fm.parse("(p * y) / (p / y)")) == "p * y / (p / y)"
    assert fm.to_text(fm.parse("(p ^ y) ^ 2 + -(p + y) + (-2) ^ p")) == "(p ^ y) ^ 2.0 + -(p + y) + (-2.0) ^ p"
    assert fm.to_text(["neg", 3.0]) == "neg(3.0)"  # "-3.0" would read back as the constant -3.0
    assert fm.to_latex(fm.parse("y / sqrt(p)")) == r"\frac{y}{\sqrt{p}}"
    assert fm.to_latex(fm.parse("square(p + y) * exp(p - y)")) == r"{\left(p + y\right)}^{2} \cdot e^{p - y}"


def test_folding_replaces_constant_subtrees_by_their_value():
    assert fm.fold_constants(fm.parse("exp(2 + 0.4092 - p) * (3 - 1)")) == ["mul", "exp", "sub", 2 + 0.4092, "p", 2.0]
    assert fm.fold_constants(fm.parse("log(0) * p")) == ["mul", float(np.log(1e-6)), "p"]  # protected: finite


def test_compiled_ngl_formula_equals_its_definition():
    p, y = np.linspace(0, 1, 11), (np.arange(11) % 2).astype(float)
    compiled = fm.compile_tree(fm.parse(NGL_FORMULA), fm.operator_functions(np))
    np.testing.assert_allclose(compiled({"p": p, "y": y}), np.exp(2.4092 - p * (1 + y)) - np.cos(np.cos(np.sin(p))),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="not a well-formed prefix tree"):
        fm.compile_tree(["neg", "p", "y"], fm.operator_functions(np))


def test_protected_operators_match_their_definitions():
    a = np.array([2.0, -3.0, 0.0, 1e-9])
    b = np.array([0.0, 0.0, -1e-9, 4.0])
    np.testing.assert_allclose(fm.protected_div(a, b, np), [2 / 1e-6, -3 / 1e-6, 0.0, 1e-9 / 4.000001])
    np.testing.assert_allclose(fm.protected_log(np.array([0.0, -np.e]), np), [np.log(1e-6), np.log(np.e + 1e-6)])
    np.testing.assert_allclose(fm.protected_sqrt(np.array([0.0, -4.0]), np), [1e-3, np.sqrt(4 + 1e-6)])
    functions = fm.operator_functions(np, epsilon=0.5)
    assert functions["div"](1.0, 0.0) == 2.0 and functions["log"](0.0) == np.log(0.5)


def _operands(op, rng):
    """Operand arrays (float64) away from every kink and pole: both signs where the operator is
    defined there (pow: positive bases only)."""
    size = 200
    magnitude = [rng.uniform(0.3, 2.0, size) for _ in range(op.arity)]
    signs = [rng.choice([-1.0, 1.0], size) for _ in range(op.arity)]
    if op.name == "pow":
        signs[0] = np.ones(size)
    return [m * s for m, s in zip(magnitude, signs)]


@pytest.mark.parametrize("name", sorted(fm.OPERATORS))
def test_each_operators_partials_equal_the_numeric_derivative_of_its_function(name):
    op = fm.OPERATORS[name]
    assert len(op.partials) == op.arity
    function = fm.operator_functions(np)[name]
    x = _operands(op, np.random.default_rng(0))
    value = function(*x)
    h = 1e-6
    for k, partial in enumerate(op.partials):
        up, down = list(x), list(x)
        up[k], down[k] = x[k] + h, x[k] - h
        numeric = (function(*up) - function(*down)) / (2 * h)
        exact = np.broadcast_to(partial(x, value, fm.EPSILON), numeric.shape)
        np.testing.assert_allclose(exact, numeric, rtol=1e-6, atol=1e-6, err_msg=f"∂{name}/∂operand {k}")


def test_every_operator_record_is_complete_and_the_infix_symbols_parse_to_it():
    for name, op in fm.OPERATORS.items():
        assert op.name == name and op.arity in (1, 2) and op.latex.count("{0}") == 1
        assert isinstance(op.precedence, fm.Precedence)
        if op.infix:
            assert fm.parse(f"p {op.infix} y") == [name, "p", "y"]
        assert fm.parse(f"{name}({', '.join(['p', 'y'][:op.arity])})")[0] == name


def _random_tree(draw, depth):
    leaves = st.one_of(st.sampled_from(["p", "y"]),
                       st.floats(-100, 100, allow_nan=False, width=32).map(float))
    if depth == 0 or draw(st.booleans()):
        return [draw(leaves)]
    name = draw(st.sampled_from(sorted(fm.OPERATORS)))
    tree = [name]
    for _ in range(fm.OPERATORS[name].arity):
        tree += _random_tree(draw, depth - 1)
    return tree


@st.composite
def trees(draw):
    return _random_tree(draw, 5)


@given(trees())
def test_text_round_trips_to_the_same_tree(tree):
    assert fm.parse(fm.to_text(tree)) == tree


@given(trees())
def test_compiled_tree_agrees_with_numpy_and_folding_keeps_values(tree):
    rng = np.random.default_rng(1)
    env = {"p": rng.uniform(size=5), "y": rng.integers(0, 2, 5).astype(float)}
    with np.errstate(all="ignore"):
        direct = fm.compile_tree(tree, fm.operator_functions(np))(env)
        folded = fm.compile_tree(fm.fold_constants(tree), fm.operator_functions(np))(env)
    np.testing.assert_allclose(np.broadcast_to(folded, (5,)), np.broadcast_to(direct, (5,)),
                               rtol=1e-9, equal_nan=True)


# Finite by construction (issue 26): constants float32 holds; a probe for formulas that overflow.

@pytest.mark.parametrize("text,position", [("1e999*p*y", 0), ("p*y*1e308", 4), ("p*y*-3.5e38", 5)])
def test_a_constant_beyond_float32_does_not_parse(text, position):
    with pytest.raises(ValueError) as error:
        fm.parse(text)
    constant = text[position:].split("*")[0].lstrip("-")
    assert str(error.value) == (f"formula {text!r} does not parse at position {position}: the constant "
                                f"{constant!r} is beyond float32's range (|x| <= 3.403e+38), where the loss computes.")


def test_float32_constants_parse_and_folding_keeps_a_formula_that_parses():
    assert fm.parse("p*y*3.4e38") == ["mul", "mul", "p", "y", 3.4e38]
    folded = fm.fold_constants(fm.parse("exp(exp(5))*p*y"))  # e^148 is beyond float32: left unfolded
    assert folded[:3] == ["mul", "mul", "exp"] and fm.parse(fm.to_text(folded)) == folded


@pytest.mark.parametrize("text,overflows", [
    ("p*y*1e30*1e30", True), ("exp(exp(exp(p+10)))*y", True), ("exp(90 - p*(1+y))", True),
    ("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))", False), ("p*y*3e38", False), ("log(p)*y", False),
])
def test_the_probe_batch_finds_formulas_that_overflow_float32(text, overflows):
    assert fm.probe_overflows(fm.parse(text)) is overflows


def test_a_parse_error_echoes_a_long_formula_in_80_characters():
    with pytest.raises(ValueError) as error:
        fm.parse("p*" + "q" * 50_000_000)
    assert str(error.value) == ("formula 'p*" + "q" * 77 + "… (str of 50,000,002 characters) does not parse at "
                                "position 2: unknown name '" + "q" * 79 + "… (str of 50,000,000 characters); "
                                "variables are p, y.")
