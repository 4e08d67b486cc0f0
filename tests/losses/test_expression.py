"""ExpressionLoss: a formula as a Keras loss (equality with NGL, printing, the protected operators in the
loss, parse errors at construction). The formula language itself: tests/test_formula.py."""

import numpy as np
import pytest

import ngl_keras

NGL_FORMULA = "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"


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


def test_the_loss_uses_the_protected_operators():
    # The loss uses the definitions of ngl_keras.formula (tested there): y / p at p = 0 is finite.
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
