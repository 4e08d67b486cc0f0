"""The formula interpreter: the program layout, exactness against ExpressionLoss (value and gradient
over the engine's random trees), a formula swapped inside a compiled training step without a new
trace, the size limit, and a diverging candidate reported as non-finite."""

import math
import random

import keras
import numpy as np
import pytest
from keras import ops

from ngl_keras.formula import OPERATORS, parse, to_text
from ngl_keras.gp import engine
from ngl_keras.gp.interpreter import (
    CONSTANT, FIRST_VARIABLE, OPCODE_OPERATORS, InterpretedLoss, PopulationLoss, encode, evaluate,
    interpreted_loss, population_loss,
)
from ngl_keras.losses.expression import ExpressionLoss, expression_loss

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax

NGL_FORMULA = "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"


def random_trees(count, seed=0):
    """The engine's initial population over every operator (protected ÷, log, sqrt, and pow)."""
    pset = engine.PrimitiveSet(operators=tuple(OPERATORS), variables=("p", "y"), required=("p", "y"))
    rng = random.Random(seed)
    return [engine.ramped_half_and_half(pset, rng, engine.Limits()) for _ in range(count)]


def predictions(batch=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, classes)).astype("float32") * 3
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return p.astype("float32"), rng.integers(0, classes, batch)


def compiled_value_and_gradient(fn, jit_compile):
    """`fn(program, p, y) -> per-sample values` as one compiled function returning (values, ∂Σ/∂p):
    jax.jit on JAX (XLA, as its eager operations), on TensorFlow a graph with XLA or without (the
    kernels of its eager operations)."""
    if keras.backend.backend() == "jax":
        import jax

        def value_and_gradient(program, p, y):
            values, pullback = jax.vjp(lambda q: fn(program, q, y), p)
            return values, pullback(ops.ones_like(values))[0]

        return jax.jit(value_and_gradient)
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def value_and_gradient(program, p, y):
        with tf.GradientTape() as tape:
            tape.watch(p)
            values = fn(program, p, y)
        return values, tape.gradient(values, p)

    return value_and_gradient


def eager_value_and_gradient(fn, p):
    if keras.backend.backend() == "jax":
        import jax

        values, pullback = jax.vjp(fn, p)
        return values, pullback(ops.ones_like(values))[0]
    import tensorflow as tf

    p = tf.constant(p)
    with tf.GradientTape() as tape:
        tape.watch(p)
        values = fn(p)
    return values, tape.gradient(values, p)


def test_encode_lays_out_opcodes_constants_and_operands():
    opcodes, constants, operands = encode(["mul", "p", "add", 1.5, "y"], max_size=6)
    mul, add = OPCODE_OPERATORS.index("mul"), OPCODE_OPERATORS.index("add")
    p, y = FIRST_VARIABLE, FIRST_VARIABLE + 1
    assert opcodes.tolist() == [mul, p, add, CONSTANT, y, CONSTANT]
    assert constants.tolist() == [0, 0, 0, 1.5, 0, 0]
    # mul's operands start at 1 (p) and 2 (add ...); add's at 3 and 4; others point at themselves
    assert operands.tolist() == [[1, 2], [1, 1], [3, 4], [3, 3], [4, 4], [5, 5]]
    assert (opcodes.dtype, constants.dtype, operands.dtype) == (np.int32, np.float32, np.int32)


def test_a_tree_over_max_size_is_refused():
    tree = parse(" + ".join(["p * y"] * 26))  # 26 products, 25 sums: 103 nodes
    assert len(tree) == 103
    with pytest.raises(ValueError, match="a tree of 103 nodes does not fit the interpreter's max_size 100"):
        encode(tree, max_size=100)
    with pytest.raises(ValueError, match="a tree of 5 nodes does not fit the interpreter's max_size 4"):
        InterpretedLoss("p * (1 + y)", max_size=4)


def test_a_formula_must_use_p_and_y():
    with pytest.raises(ValueError, match=r"must use p and y; it does not use y"):
        InterpretedLoss("exp(p)")


def per_sample(program, p, y):
    return ops.mean(evaluate(*program, [p, y]), axis=-1)


def assert_same(actual, expected, message, rtol=1e-5):
    for a, b, atol in zip(actual, expected, (1e-6, 1e-5)):  # values, gradients
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=rtol, atol=atol,
                                   equal_nan=True, err_msg=message)


def test_exact_against_expression_loss_over_random_trees():
    """50 trees through ONE compiled evaluator: value and gradient equal ExpressionLoss's (eager)."""
    p, labels = predictions()
    y = np.eye(10, dtype="float32")[labels]
    interpreter = compiled_value_and_gradient(per_sample, jit_compile=False)
    trees = random_trees(50)
    assert {node for tree in trees for node in tree} >= {"div", "log", "sqrt", "pow"}
    assert any(isinstance(node, float) for tree in trees for node in tree)
    for tree in trees:
        expected = eager_value_and_gradient(lambda q: expression_loss(labels, q, to_text(tree)), p)
        assert_same(interpreter(tuple(encode(tree)), p, y), expected, to_text(tree, digits=4))


def test_the_loss_training_computes_is_exact_over_random_trees():
    """Through the loss's program as a training step reads it (on TensorFlow: the value and the
    gradient each one XLA-compiled function inside a step compiled without XLA, Keras's CPU
    default), formula after formula in one compiled function: ExpressionLoss's value and gradient
    under XLA. (Against TensorFlow's own kernels XLA's differ in the last bits, tanh more: near
    log(tanh(x → 0)) a gradient moves by 2 %.) rtol 1e-4 as in the XLA test below."""
    p, labels = predictions(seed=2)
    y = np.eye(10, dtype="float32")[labels]
    loss = InterpretedLoss("p * y")
    step = None
    for tree in random_trees(20 if keras.backend.backend() == "tensorflow" else 5, seed=2):  # JAX: a jit a tree
        loss.set_formula(tree)
        if step is None or keras.backend.backend() == "jax":  # jax.jit reads the program when it traces
            step = compiled_value_and_gradient(lambda program, q, targets: interpreted_loss(targets, q, loss.program),
                                               jit_compile=False)
        text = to_text(tree)
        expression = compiled_value_and_gradient(
            lambda program, q, targets: expression_loss(targets, q, text), jit_compile=True)
        assert_same(step((), p, y), expression((), p, y), to_text(tree, digits=4), rtol=1e-4)


def test_a_population_is_each_of_its_programs_and_a_non_finite_one_adds_nothing():
    """Eight formulas as one population loss over predictions side by side: each block's value and
    gradient are its own formula's `interpreted_loss`; one whose loss is infinite on this batch
    is left out of the sum, and the others' gradients do not change."""
    trees = random_trees(7, seed=5) + [parse("exp(exp(exp(2*y + p)))")]  # inf where y = 1
    blocks = [predictions(8, 10, seed=k)[0] for k in range(len(trees))]
    _, labels = predictions(8, 10, seed=0)
    y = np.eye(10, dtype="float32")[labels]
    population = PopulationLoss(trees)
    step = compiled_value_and_gradient(lambda program, q, targets: population_loss(targets, q, population.program),
                                       jit_compile=False)
    total, gradient = (ops.convert_to_numpy(x) for x in step((), np.concatenate(blocks, -1), y))
    expected, finite = np.zeros(8, "float32"), []
    for k, (tree, block) in enumerate(zip(trees, blocks)):
        single = InterpretedLoss(tree)
        value, grad = compiled_value_and_gradient(
            lambda program, q, targets: interpreted_loss(targets, q, single.program), jit_compile=False)((), block, y)
        value = ops.convert_to_numpy(value)
        finite.append(bool(np.isfinite(np.mean(value))))
        if finite[-1]:
            expected += value
            np.testing.assert_allclose(gradient[:, 10 * k:10 * k + 10], ops.convert_to_numpy(grad), rtol=1e-5,
                                       atol=1e-6, err_msg=to_text(tree))
    assert sum(finite) >= 4 and not finite[-1], finite
    np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-5)


def small_model(loss, owned=True):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    if owned:
        model.loss_program = loss.program
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=True)
    return model


def counting_traces(loss):
    """Counts the calls of `loss.call` in Python: inside a compiled step, one per trace."""
    traces = []
    call = loss.call

    def counted(*args):
        traces.append(1)
        return call(*args)

    loss.call = counted
    return traces


def test_set_formula_changes_a_compiled_step_without_a_new_trace():
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    labels = np.arange(8) % 3
    loss = InterpretedLoss(NGL_FORMULA)
    model = small_model(loss)
    traces = counting_traces(loss)
    traced = []
    for text in (NGL_FORMULA, "p * (1 + y) - y", "sqrt(p - y) / (y + 0.5) + log(p) * y"):
        loss.set_formula(text)
        expected = float(ExpressionLoss(text)(labels, model(x)))  # before the step updates the weights
        assert model.train_on_batch(x, labels) == pytest.approx(expected, rel=1e-5)
        traced.append(len(traces))
    assert traced[0] >= 1 and traced == [traced[0]] * 3  # traced for the first formula only


def test_a_program_the_model_does_not_own_never_gives_a_stale_loss():
    # On TensorFlow the step reads the loss's weights; on JAX it would keep the first formula as a
    # constant, so the loss refuses to be traced there.
    x = np.ones((4, 4), "float32")
    labels = np.arange(4) % 3
    loss = InterpretedLoss(NGL_FORMULA)
    model = small_model(loss, owned=False)
    try:
        model.train_on_batch(x, labels)
    except ValueError as error:
        assert "make the model own it (model.loss_program = loss.program)" in str(error)
        return
    loss.set_formula("p * y + p")
    expected = float(ExpressionLoss("p * y + p")(labels, model(x)))
    assert model.train_on_batch(x, labels) == pytest.approx(expected, rel=1e-5)


def test_a_diverging_candidate_is_non_finite_like_expression_loss():
    text = "p * exp(100 * y) - exp(100 * y)"  # inf - inf for the true class
    x = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    labels = np.arange(16) % 3
    losses = {}
    for loss in (ExpressionLoss(text), InterpretedLoss(text)):
        model = small_model(loss, owned=isinstance(loss, InterpretedLoss))
        history = model.fit(x, labels, batch_size=4, epochs=2, verbose=0,
                            callbacks=[keras.callbacks.TerminateOnNaN()])
        losses[type(loss).__name__] = history.history["loss"]
    assert len(losses["InterpretedLoss"]) == len(losses["ExpressionLoss"]) == 1
    assert not math.isfinite(losses["InterpretedLoss"][0])
    assert not math.isfinite(losses["ExpressionLoss"][0])


def test_config_round_trip_keeps_the_formula():
    loss = InterpretedLoss("p * (1 + y)", max_size=20, epsilon=1e-4)
    loss.set_formula(NGL_FORMULA)
    again = InterpretedLoss.from_config(loss.get_config())
    assert (again.tree, again.program.max_size) == (parse(NGL_FORMULA), 20)
    p, labels = predictions()
    assert float(again(labels, p)) == pytest.approx(float(ExpressionLoss(NGL_FORMULA, epsilon=1e-4)(labels, p)),
                                                    rel=1e-6)


def test_under_xla_equal_to_expression_loss_under_xla():
    """The compiled training step's case: both compiled by XLA. XLA folds ExpressionLoss's constant
    subtrees when it compiles (the interpreter computes them in the step), a last-bit difference
    that the random trees' large powers amplify to ~1e-5: rtol 1e-4 here."""
    p, labels = predictions(seed=1)
    y = np.eye(10, dtype="float32")[labels]
    interpreter = compiled_value_and_gradient(per_sample, jit_compile=True)
    for tree in random_trees(10, seed=1):
        text = to_text(tree)
        expression = compiled_value_and_gradient(
            lambda program, q, targets: expression_loss(targets, q, text), jit_compile=True)
        assert_same(interpreter(tuple(encode(tree)), p, y), expression((), p, y), to_text(tree, digits=4),
                    rtol=1e-4)
