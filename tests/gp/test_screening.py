"""Screening in numpy: values equal ExpressionLoss, gradients equal autodiff of the same loss
(TensorFlow's GradientTape) and central finite differences, gradient descent on the logits
equals the GradientTape descent it replaced, and verdicts."""

import numpy as np
import pytest

from ngl_keras.gp import screening
from ngl_keras.losses import expression as ex

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax

SCREEN = screening.LossScreen()

# Every operator, and every branch of the protected ones: with EDGES below, p - 0.5 and
# p - 0.25 are exactly 0 at some elements, p itself is 0 at some, and y - 1 is exactly 0 at
# every target; a ^ b with a < 0, a = 0 and a > 0, with b constant, in y, or in p.
FORMULAS = [
    "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))",
    "-y*log(p)",
    "-(p*y) + log(p - 0.5) * y + log(abs(p - 0.25)) * y",
    "y / (p - 0.5) + p / (y - 1) + p / p",
    "sqrt(p - 0.5) * y + sqrt(p) + abs(p - 0.25) - square(p - y)",
    "tanh(3*p - y) * p ^ 2.5 + p ^ y + 2 ^ (p - y)",
    "(p - y) ^ 2 + (y * p) ^ 0.5",
    "(p - 0.5) ^ (p + 1) * y",
    "y ^ p + tanh(y / p)",
    "div(sub(p, 0.25), add(y, -1)) * neg(sqrt(abs(p - 0.5)))",
]


def edge_predictions():
    """The probe batch with exact zeros of p - 0.5, p - 0.25 and p planted in it."""
    p = SCREEN.p.copy()
    p[::4, 0], p[1::4, 1], p[2::4, 2] = 0.5, 0.25, 0.0
    return p


def test_every_operator_has_one_partial_per_operand():
    assert screening.PARTIALS.keys() == ex.OPERATORS.keys()
    assert all(len(screening.PARTIALS[name]) == op.arity for name, op in ex.OPERATORS.items())
    covered = set().union(*(set(ex.parse(f)) for f in FORMULAS))
    assert set(ex.OPERATORS) <= covered


@pytest.mark.parametrize("formula", FORMULAS)
def test_values_equal_expression_loss_without_reduction(formula):
    p = edge_predictions()
    values, _ = SCREEN.loss_and_gradient(ex.parse(formula), p)
    expected = np.asarray(ex.ExpressionLoss(formula, reduction=None)(SCREEN.y, p))
    assert values.shape == (64,) and values.dtype == np.float32
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def tape_gradient(formula, p):
    """Gradient of the batch mean of ExpressionLoss(formula) with respect to p, by GradientTape,
    in p's precision."""
    tf = pytest.importorskip("tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference is TensorFlow's autodiff")
    variable = tf.Variable(p)
    loss = ex.ExpressionLoss(formula, reduction=None, dtype=p.dtype.name)
    with tf.GradientTape() as tape:
        mean = tf.reduce_mean(loss(SCREEN.y.astype(p.dtype), variable))
    return tape.gradient(mean, variable).numpy()


@pytest.mark.parametrize("formula", FORMULAS)
def test_gradients_equal_gradient_tape_at_every_branch(formula):
    """In float64 to rounding. In float32 (the screen's precision): non-finite at the same
    elements, and equal up to float32's rounding, which cancellation magnifies (p/p's
    derivative is 1/(p+ε) − p/(p+ε)²) and which saturates tanh at 1 for a smaller argument
    in TensorFlow than in numpy."""
    p = edge_predictions()
    for dtype, rtol, share in ((np.float64, 1e-9, 1e-12), (np.float32, 2e-3, 1e-4)):
        _, grads = SCREEN.loss_and_gradient(ex.parse(formula), p.astype(dtype))
        expected = tape_gradient(formula, p.astype(dtype))
        assert grads.shape == p.shape and grads.dtype == dtype
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.isfinite(grads), finite)
        atol = share * np.abs(expected[finite]).max()
        np.testing.assert_allclose(grads[finite], expected[finite], rtol=rtol, atol=atol)
        np.testing.assert_array_equal(grads[~finite], expected[~finite])  # inf of the same sign, NaN


def jax_gradient(formula, p):
    """Gradient of the batch mean of ExpressionLoss(formula) with respect to p, by jax.grad."""
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("the reference is JAX's autodiff")
    import jax

    loss = ex.ExpressionLoss(formula, reduction=None)
    return np.asarray(jax.grad(lambda q: loss(SCREEN.y, q).mean())(p))


@pytest.mark.parametrize("formula", [f for f in FORMULAS if "(p - 0.5) ^ (p + 1)" not in f])
def test_gradients_equal_jax_grad_off_the_branch_points(formula):
    """On the probe batch as drawn. JAX differentiates |a| at a = 0 as 1, not 0, so the planted
    branch points are TensorFlow's test; and a^b for a < 0 as a^b·log(a) in b, NaN, where
    TensorFlow takes 0 (a finite value at p + 1 == 1 in float32)."""
    _, grads = SCREEN.loss_and_gradient(ex.parse(formula), SCREEN.p)
    expected = jax_gradient(formula, SCREEN.p)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(grads), finite)
    atol = 1e-4 * np.abs(expected[finite]).max()
    np.testing.assert_allclose(grads[finite], expected[finite], rtol=2e-3, atol=atol)


def test_the_protected_branches_take_the_derivatives_of_autodiff():
    """At a = 0: |a|, log(|a| + ε) and sqrt(|a| + ε) have derivative 0 (sign(0) = 0); at b = 0
    the ÷ takes the b + ε branch: ∂(a/(b+ε))/∂b = −a/ε²."""
    p = np.array([[0.5, 0.2]], np.float32)
    y = np.array([[1.0, 0.0]], np.float32)
    for text in ("abs(p - 0.5)", "log(p - 0.5)", "sqrt(p - 0.5)"):
        with np.errstate(all="ignore"):
            _, d = screening.value_and_derivative(ex.parse(text), p, y)
        assert d[0, 0] == 0.0 and d[0, 1] != 0.0
    with np.errstate(all="ignore"):
        value, d = screening.value_and_derivative(ex.parse("y / (p - 0.5)"), p, y)
    assert value[0, 0] == pytest.approx(1e6, rel=1e-6)
    assert d[0, 0] == pytest.approx(-1e12, rel=1e-5)


@pytest.mark.parametrize("formula", [f for f in FORMULAS if "(p - 0.5) ^" not in f and "^ 0.5" not in f])
def test_gradients_equal_central_finite_differences(formula):
    """In float64, with a step relative to p, on the elements where p > 1e-4 (the probe
    batch also holds p ~ 1e-20, where a step that the ε of the protected operators does not
    swallow would cross the kink of |p| at 0)."""
    p = SCREEN.p.astype(np.float64)
    y = SCREEN.y.astype(np.float64)
    tree = ex.parse(formula)
    h = 1e-6 * p
    with np.errstate(all="ignore"):
        _, derivative = screening.value_and_derivative(tree, p, y)
        upper, _ = screening.value_and_derivative(tree, p + h, y)
        lower, _ = screening.value_and_derivative(tree, p - h, y)
    assert derivative.dtype == np.float64
    away = p > 1e-4
    assert away.sum() > 300
    np.testing.assert_allclose(derivative[away], ((upper - lower) / (2 * h))[away], rtol=1e-5, atol=1e-8)


def tape_descent(formula, steps, rate=1.0):
    """The GradientTape gradient descent on logits that the numpy descent replaced."""
    tf = pytest.importorskip("tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference is TensorFlow's autodiff")
    loss = ex.ExpressionLoss(formula, reduction=None)
    classes = SCREEN.p.shape[-1]
    z = tf.Variable(tf.zeros_like(SCREEN.p))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss(SCREEN.y, tf.nn.softmax(z)))
        z.assign_sub(rate * classes * tape.gradient(value, z))
    return float(tf.reduce_mean(tf.reduce_sum(tf.nn.softmax(z) * SCREEN.y, -1)))


@pytest.mark.parametrize("formula", ["exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))", "-y*log(p)",
                                     "square(p - y)", "-y*p", "exp(2.4 - p*(1+y)) - cos(cos(sin(p)))"])
@pytest.mark.parametrize("steps", [1, 20, 40])
def test_descent_reproduces_the_gradient_tape_descent(formula, steps):
    probability = SCREEN.descend(ex.parse(formula), steps)
    assert probability > 0.1  # each of these raises the true-class probability from uniform
    assert probability == pytest.approx(tape_descent(formula, steps), rel=1e-5, abs=1e-6)


def test_descent_returns_none_when_a_gradient_is_not_finite():
    assert SCREEN.descend(ex.parse("exp(1000*p)*y"), 5) is None


@pytest.mark.parametrize("formula,reason", [
    ("-(y + p)", "constant"),                    # a gradient in p, none for the logits: Σ p = 1
    ("(p / -3.7351) * 2 + y", "constant"),
    ("y ^ p * log(y + 2)", "constant"),          # 0^p = 0 and 1^p = 1: no dependence on p
    ("square(3.7119) + (y + p)", "constant"),    # float32 rounding of 13.98 is not a variation
    ("1e-4 * (1 - p) ^ 2 * y", "no_improvement"),  # small, but not constant
    ("(y * p) ^ 0.5", "non_finite"),             # finite values, NaN gradient at y = 0
    ("-y*p", None),
])
def test_verdicts_that_need_the_gradient(formula, reason):
    assert SCREEN(ex.parse(formula))[0] == reason


def test_fingerprint_follows_values_and_gradients():
    same = [SCREEN(ex.parse(f)) for f in ("-y*log(p)", "-(log(p)*y)", "0 - y*log(p)")]
    assert {r for r, _ in same} == {None} and len({f for _, f in same}) == 1
    assert SCREEN(ex.parse("-y*p*1.001"))[1] not in {f for _, f in same} | {SCREEN(ex.parse("-y*p"))[1]}


def test_a_tree_with_another_variable_is_refused_by_name():
    with pytest.raises(ValueError, match=r"screening knows the variables p and y; got 'x' in \['mul', 'p', 'x'\]"):
        SCREEN(["mul", "p", "x"])
