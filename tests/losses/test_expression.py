"""The formula language: parsing, printing, LaTeX, protected operators, equality with NGL."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ngl_keras
from ngl_keras.losses import expression as ex

NGL_FORMULA = "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"


def test_parse_gives_the_prefix_list():
    assert ex.parse("p*(1+y)") == ["mul", "p", "add", 1.0, "y"]
    assert ex.parse("-p^2 + y") == ["add", "neg", "pow", "p", 2.0, "y"]
    assert ex.parse("p - -2*y") == ["sub", "p", "mul", -2.0, "y"]
    assert ex.parse("2**p / y") == ["div", "pow", 2.0, "p", "y"]
    assert ex.parse("div(p, add(y, 1e-3))") == ["div", "p", "add", "y", 0.001]


def test_expression_loss_equals_ngl():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 10)).astype("float32") * 3
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    labels = rng.integers(0, 10, 64)
    assert float(ngl_keras.ExpressionLoss(NGL_FORMULA)(labels, p)) == pytest.approx(
        float(ngl_keras.NGL()(labels, p)), abs=1e-6)


def test_prints_as_text_and_latex_with_constants_folded():
    loss = ngl_keras.ExpressionLoss("exp(2 + 0.4092 - p*(1+y)) - cos(cos(sin(p))) * (3 - 1)")
    assert str(loss) == "exp(2.4092 - p * (1 + y)) - cos(cos(sin(p))) * 2"
    assert loss.latex() == (r"e^{2.409 - p \cdot \left(1 + y\right)} - "
                            r"\cos\left(\cos\left(\sin\left(p\right)\right)\right) \cdot 2")
    assert ex.to_latex(ex.parse("y / sqrt(p)")) == r"\frac{y}{\sqrt{p}}"


def test_protected_operators_match_their_definitions():
    a = np.array([2.0, -3.0, 0.0, 1e-9])
    b = np.array([0.0, 0.0, -1e-9, 4.0])
    np.testing.assert_allclose(ex.protected_div(a, b, np), [2 / 1e-6, -3 / 1e-6, 0.0, 1e-9 / 4.000001])
    np.testing.assert_allclose(ex.protected_log(np.array([0.0, -np.e]), np), [np.log(1e-6), np.log(np.e + 1e-6)])
    np.testing.assert_allclose(ex.protected_sqrt(np.array([0.0, -4.0]), np), [1e-3, np.sqrt(4 + 1e-6)])
    # The loss uses the same definitions: y / p at p = 0 is finite.
    value = ngl_keras.ExpressionLoss("y / p + log(p) * y + sqrt(p - y)")([[0.0, 1.0]], [[1.0, 0.0]])
    expected = (0 / 1e-6 + np.log(1 + 1e-6) * 0 + np.sqrt(1 + 1e-6)
                + 1 / 1e-6 + np.log(1e-6) + np.sqrt(1 + 1e-6)) / 2
    assert float(value) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("text,position,found", [
    ("exp(p +", 7, "found end of formula"),
    ("p * (y", 6, "expected ')', found end of formula"),
    ("p y", 2, "unexpected 'y' after a complete expression"),
    ("p + # y", 4, "unexpected character '#'"),
    ("sin(p, y) * y", 5, "expected ')', found ','"),
    ("div(p) * y", 5, "expected ',', found ')'"),
    ("import(p) * y", 0, "unknown function 'import'"),
])
def test_parse_errors_say_where(text, position, found):
    with pytest.raises(ValueError) as error:
        ngl_keras.ExpressionLoss(text)
    assert f"does not parse at position {position}" in str(error.value)
    assert found in str(error.value)


def _random_tree(draw, depth):
    leaves = st.one_of(st.sampled_from(["p", "y"]),
                       st.floats(-100, 100, allow_nan=False, width=32).map(float))
    if depth == 0 or draw(st.booleans()):
        return [draw(leaves)]
    name = draw(st.sampled_from(sorted(ex.OPERATORS)))
    tree = [name]
    for _ in range(ex.OPERATORS[name].arity):
        tree += _random_tree(draw, depth - 1)
    return tree


@st.composite
def trees(draw):
    return _random_tree(draw, 5)


@given(trees())
def test_text_round_trips_to_the_same_tree(tree):
    assert ex.parse(ex.to_text(tree)) == tree


@given(trees())
def test_compiled_tree_agrees_with_numpy_and_folding_keeps_values(tree):
    rng = np.random.default_rng(1)
    env = {"p": rng.uniform(size=5), "y": rng.integers(0, 2, 5).astype(float)}
    with np.errstate(all="ignore"):
        direct = ex.compile_tree(tree, ex.operator_functions(np))(env)
        folded = ex.compile_tree(ex.fold_constants(tree), ex.operator_functions(np))(env)
    np.testing.assert_allclose(np.broadcast_to(folded, (5,)), np.broadcast_to(direct, (5,)),
                               rtol=1e-9, equal_nan=True)
