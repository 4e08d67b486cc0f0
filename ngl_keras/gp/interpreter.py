"""Formula trees as data, evaluated by one compiled program.

A search candidate's loss is a tree of `ngl_keras.formula` (a flat prefix list, at most
`gp.engine.Limits.max_size` nodes). `ExpressionLoss` compiles each tree to its own `keras.ops`
graph, so every candidate costs a new trace and compilation of the training step. Here a tree
becomes fixed-size arrays instead (`encode`), and one evaluator (`evaluate`), written once in
`keras.ops`, computes any tree from those arrays given as tensors: a new candidate is new array
values in the same compiled step (`InterpretedLoss.set_formula`).

The program of a tree of n ≤ max_size nodes, node i at prefix position i:

- ``opcodes`` (int32, max_size): operator k of `OPCODE_OPERATORS`, or `CONSTANT`, or
  ``FIRST_VARIABLE + j`` for the variable j of `VARIABLES`; the nodes after the tree are
  constants 0.
- ``constants`` (float32, max_size): the value of a constant node, 0 elsewhere.
- ``operands`` (int32, max_size × 2): the positions of node i's operands. In prefix order the
  first is i + 1 and the second starts where the first subtree ends; an operand a node does not
  have points at the node itself (not yet computed, zeros; no operator reads it).

The evaluator visits the nodes from last to first, so both operands of a node are computed
before it, writing each value into a buffer of shape (max_size, *shape); node 0 is the result.
Every node computes every operator and keeps the one its opcode selects. Operators that are not
selected get the operand 1 instead of the node's real operands (where 1 is finite for each of
them): their results and derivatives are finite, so the `where` that drops them also drops
their gradient (0 · finite), instead of turning it into NaN (0 · inf) — the "double where".
The selected operator sees its true operands, so value and gradient are those of
`ExpressionLoss`: the same `keras.ops` functions with the same protected ÷, log and sqrt.

The nodes are visited by one loop in the compiled step (`_over_nodes`), not a static unroll of
max_size nodes, which compiles about 50 times slower. The loop does all max_size nodes for every
tree (fixed shapes); the backward pass keeps each node's operands, about 30 tensors of the
predictions' shape per node.

On TensorFlow a training step runs without XLA on a CPU (Keras's "auto"), where each node is
dozens of kernel launches: there the evaluation and its gradient are each one XLA-compiled
function (`_xla_evaluator`; 4.7 against 21.4 ms for NGL's value and gradient on a 128 × 10 batch,
2 CPU cores), whatever the step around them.

`InterpretedLoss` is the loss: the program of its formula lives in the non-trainable weights of a
`FormulaProgram` layer, and `set_formula` assigns them. The model must own that layer
(``model.loss_program = loss.program``, before `compile`): a compiled JAX step reads only its
model's variables and would otherwise keep the first formula as a constant (the loss refuses to
be traced so); TensorFlow's step reads the weights either way.

    loss = InterpretedLoss("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
    model.loss_program = loss.program
    model.compile(optimizer="adam", loss=loss, jit_compile=True)
    model.fit(...); loss.set_formula(next_tree); model.fit(...)   # no new trace
"""

import numpy as np
import keras
from keras import ops

from ngl_keras.formula import (
    EPSILON, OPERATORS, operator_functions, parse, subtree_end, to_text, variables_of,
)
from ngl_keras.losses.base import PACKAGE, LossFunction, check_positive, one_hot_targets

VARIABLES = ("p", "y")  # a loss's formula: prediction and one-hot target
OPCODE_OPERATORS = tuple(OPERATORS)  # opcode k is the operator OPCODE_OPERATORS[k]
CONSTANT = len(OPCODE_OPERATORS)
FIRST_VARIABLE = CONSTANT + 1
UNSELECTED_OPERAND = 1.0  # where every operator and its derivatives are finite (log: |1| + ε)
DEFAULT_MAX_SIZE = 100  # gp.engine.Limits.max_size, the paper's limit


def encode(tree, max_size=DEFAULT_MAX_SIZE, variables=VARIABLES):
    """A prefix tree → its program: (opcodes int32 (max_size,), constants float32 (max_size,),
    operands int32 (max_size, 2)) numpy arrays (module docstring)."""
    if len(tree) > max_size:
        raise ValueError(f"a tree of {len(tree)} nodes does not fit the interpreter's max_size "
                         f"{max_size}: {to_text(tree, digits=4)[:80]!r}.")
    if not tree or subtree_end(tree, 0) != len(tree):
        raise ValueError(f"not a well-formed prefix tree: {tree!r}")
    opcodes = np.full(max_size, CONSTANT, np.int32)
    constants = np.zeros(max_size, np.float32)
    operands = np.repeat(np.arange(max_size, dtype=np.int32)[:, None], 2, axis=1)
    for i, node in enumerate(tree):
        if not isinstance(node, str):
            constants[i] = node
        elif node in OPERATORS:
            opcodes[i] = OPCODE_OPERATORS.index(node)
            if OPERATORS[node].arity >= 1:
                operands[i, 0] = i + 1
            if OPERATORS[node].arity == 2:
                operands[i, 1] = subtree_end(tree, i + 1)
        elif node in variables:
            opcodes[i] = FIRST_VARIABLE + variables.index(node)
        else:
            raise ValueError(f"unknown node {node!r} in {tree!r}: operators are "
                             f"{', '.join(OPCODE_OPERATORS)}, variables {', '.join(variables)}.")
    return opcodes, constants, operands


def evaluate(opcodes, constants, operands, inputs, epsilon=EPSILON):
    """The elementwise value of the encoded formula at `inputs` (one tensor per variable, in the
    order `encode` was given; they broadcast to one shape). The program arrays may be tensors, so
    one traced evaluator serves every program of the same max_size.

    A population: programs stacked on a first axis K (opcodes (K, max_size), constants (K, max_size),
    operands (K, max_size, 2)) and inputs whose first axis is K (or 1, broadcast) give the K
    formulas' values stacked the same way, each program k at inputs[:, k]: one loop over the nodes
    for all of them."""
    single = len(opcodes.shape) == 1
    if single:
        opcodes, constants, operands = (ops.expand_dims(a, 0) for a in (opcodes, constants, operands))
        inputs = [ops.expand_dims(x, 0) for x in inputs]
    zero = sum(ops.zeros_like(x) for x in inputs)
    zero = zero + ops.zeros((opcodes.shape[0],) + (1,) * (len(zero.shape) - 1), zero.dtype)  # K rows
    inputs = [x + zero for x in inputs]
    population, max_size = opcodes.shape
    constants = ops.cast(constants, zero.dtype)
    functions = operator_functions(ops, epsilon)
    rows = ops.arange(population, dtype="int32")
    column = (population,) + (1,) * (len(zero.shape) - 1)  # a per-program value against the inputs

    # The buffer holds node i of program k at row i · K + k.
    def node(i, buffer):
        opcode = ops.reshape(ops.take(opcodes, i, axis=1), column)
        first = ops.take(buffer, ops.take(operands[:, :, 0], i, axis=1) * population + rows, axis=0)
        second = ops.take(buffer, ops.take(operands[:, :, 1], i, axis=1) * population + rows, axis=0)
        value = ops.where(opcode == CONSTANT, ops.reshape(ops.take(constants, i, axis=1), column), zero)
        for j, x in enumerate(inputs):
            value = ops.where(opcode == FIRST_VARIABLE + j, x, value)
        for k, name in enumerate(OPCODE_OPERATORS):
            selected = opcode == k
            arguments = [ops.where(selected, x, UNSELECTED_OPERAND)
                         for x in (first, second)[:OPERATORS[name].arity]]
            value = ops.where(selected, functions[name](*arguments), value)
        return ops.scatter_update(buffer, ops.expand_dims(i * population + rows, 1), value)

    buffer = ops.tile(zero, (max_size,) + (1,) * (len(zero.shape) - 1))
    # A tree's nodes are 0 … used − 1; the rest are constants 0, which the zero buffer already
    # holds (so is a tree's own trailing constant 0): a loop may skip them (after the longest tree).
    padding = (opcodes == CONSTANT) & (constants == 0)
    used = ops.max(ops.where(padding, 0, ops.arange(1, max_size + 1, dtype="int32")))
    buffer = _over_nodes(max_size, used, node, buffer)
    result = buffer[:population]
    return result[0] if single else result


def _over_nodes(count, used, body, buffer):
    """`body(i, buffer)` for node i = used − 1 … 0 (TensorFlow) or count − 1 … 0 (JAX), as one
    loop in the compiled step.

    A backend decision of the interpreter (the other: `_xla_evaluator`): a JAX loop has a reverse-mode gradient only as
    `fori_loop` with static bounds (a scan); under XLA, TensorFlow takes the gradient of a loop
    only when its `maximum_iterations` is known, which `keras.ops.fori_loop` does not pass on
    (keras 3.15.1), so TensorFlow gets `while_loop` with it. A static unroll works everywhere but
    took ≈ 200 s to compile (max_size 100, 2-core CPU, both backends) against ≈ 4 s for the loop.
    TensorFlow stops after the tree's `used` nodes (without XLA each node is dozens of kernel
    launches: a 10-node tree then costs a tenth of max_size); JAX's scan needs static bounds and
    visits all `count`.
    """
    if keras.backend.backend() == "tensorflow":
        return ops.while_loop(lambda step, _: step < used, lambda step, b: (step + 1, body(used - 1 - step, b)),
                              (0, buffer), maximum_iterations=count)[1]
    return ops.fori_loop(0, count, lambda step, b: body(count - 1 - step, b), buffer)


_XLA_EVALUATORS = {}


def _xla_evaluator(epsilon):
    """TensorFlow: `evaluate` at (p, y) as a function of the program and the inputs whose value and
    gradient each run as one XLA-compiled function, also inside a step compiled without XLA. The
    gradient function traces the evaluation again (inside XLA, the loop's intermediate values
    cannot cross from one compiled function to another), so it repeats the forward pass."""
    if epsilon not in _XLA_EVALUATORS:
        import tensorflow as tf

        @tf.function(jit_compile=True, autograph=False)
        def value(opcodes, constants, operands, *inputs):
            return evaluate(opcodes, constants, operands, list(inputs), epsilon)

        @tf.function(jit_compile=True, autograph=False)
        def gradients(opcodes, constants, operands, upstream, *inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                result = evaluate(opcodes, constants, operands, list(inputs), epsilon)
            return tape.gradient(result, inputs, output_gradients=upstream)

        @tf.custom_gradient
        def evaluator(opcodes, constants, operands, *inputs):
            def backward(upstream):
                return (None, None, None) + tuple(gradients(opcodes, constants, operands, upstream, *inputs))
            return value(opcodes, constants, operands, *inputs), backward

        _XLA_EVALUATORS[epsilon] = evaluator
    return _XLA_EVALUATORS[epsilon]


def _left_out_of_the_step(variable):
    """Whether a compiled step is being traced whose state does not include `variable` (it would
    read the variable's value of now, a constant of the step: JAX's trainers trace their step
    inside a StatelessScope that maps the model's variables to the step's arguments)."""
    # keras.src.backend.common.stateless_scope.get_stateless_scope: keras (checked on 3.15.1) has no
    # public way to ask which variables the step being traced takes as state. Listed in
    # tests/test_private_apis.py.
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    scope = get_stateless_scope()
    # An empty mapping: Keras building a loss's state by a shape-only trace, which runs nothing.
    return scope is not None and bool(scope.state_mapping) and scope.get_current_value(variable) is None


def run_program(weights, inputs, epsilon=EPSILON):
    """`evaluate` of the program held in `weights` (opcodes, constants, operands variables) at
    `inputs`: the XLA evaluator on TensorFlow. Refused where the variables would be constants of
    the compiled step being traced."""
    if _left_out_of_the_step(weights[0]):
        raise ValueError(
            f"the formula program {weights[0].path!r} would be a constant of this compiled step, so "
            "set_formula could not change it: make the model own it "
            "(model.loss_program = loss.program) before compiling.")
    program = [weight.value for weight in weights]
    if keras.backend.backend() == "tensorflow":
        return _xla_evaluator(epsilon)(*program, *inputs)
    return evaluate(*program, inputs, epsilon)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FormulaProgram(keras.layers.Layer):
    """One formula's program as non-trainable weights (`opcodes`, `constants`, `operands`), so that
    a model that owns this layer carries the program into its compiled step as state, and
    `assign(tree)` changes the formula without a new trace. With `population` K, K programs
    stacked on a first axis (`assign_all(trees)`)."""

    def __init__(self, max_size=DEFAULT_MAX_SIZE, population=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the program is no part of a mixed-precision policy
        super().__init__(**{**kwargs, "trainable": False})
        self.max_size, self.population = max_size, population
        rows = () if population is None else (population,)
        self.opcodes = self.add_weight(shape=rows + (max_size,), dtype="int32", initializer="zeros",
                                       trainable=False, name="opcodes")
        self.constants = self.add_weight(shape=rows + (max_size,), dtype="float32", initializer="zeros",
                                         trainable=False, name="constants")
        self.operands = self.add_weight(shape=rows + (max_size, 2), dtype="int32", initializer="zeros",
                                        trainable=False, name="operands")

    @property
    def arrays(self):
        """The program's weights: (opcodes, constants, operands)."""
        return self.opcodes, self.constants, self.operands

    def assign(self, tree):
        self._assign(encode(tree, self.max_size))

    def assign_all(self, trees):
        """The K programs of a population, one tree each."""
        if len(trees) != self.population:
            raise ValueError(f"a population program holds {self.population} formulas; got {len(trees)}.")
        self._assign([np.stack(arrays) for arrays in zip(*(encode(t, self.max_size) for t in trees))])

    def _assign(self, arrays):
        for weight, value in zip(self.arrays, arrays):
            weight.assign(value)

    def evaluate(self, inputs, epsilon=EPSILON):
        """The formula's elementwise value at `inputs` (p, y); a population's K values stacked on a
        first axis, program k at inputs[:, k] (`evaluate`)."""
        return run_program(self.arrays, inputs, epsilon)

    def get_config(self):
        return {**super().get_config(), "max_size": self.max_size, "population": self.population}


def check_tree(tree, variables=VARIABLES):
    """`tree` (a prefix list, or formula text) as a prefix list that uses every variable."""
    tree = parse(tree, variables) if isinstance(tree, str) else list(tree)
    if not tree or subtree_end(tree, 0) != len(tree):
        raise ValueError(f"not a well-formed prefix tree: {tree!r}")
    missing = set(variables) - variables_of(tree)
    if missing:
        raise ValueError(f"formula {to_text(tree, digits=6)!r} must use "
                         f"{' and '.join(variables)}; it does not use {' or '.join(sorted(missing))}.")
    return tree


def interpreted_loss(y_true, y_pred, program, epsilon=EPSILON):
    """Per-sample mean over classes of `program`'s formula at (p = y_pred, y = one-hot), as
    `expression_loss` computes it."""
    y = one_hot_targets(y_true, y_pred)
    return ops.mean(program.evaluate([y_pred, y], epsilon), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class InterpretedLoss(LossFunction):
    """`ExpressionLoss` whose formula can change inside a compiled training step.

    The same loss as ``ExpressionLoss(formula, epsilon)``, value and gradient: per sample, the
    mean over classes of the formula at (p, y), with the protected ÷, log and sqrt. The formula
    (text or prefix tree, at most `max_size` nodes, using p and y) is held as data in
    `self.program`, a layer the model must own (module docstring); `set_formula` swaps it.

    Usage:
        loss = InterpretedLoss("p * (1 + y)")
        model.loss_program = loss.program
        model.compile(optimizer="adam", loss=loss); loss.set_formula("exp(-p * y)")
    """

    def __init__(self, formula, max_size=DEFAULT_MAX_SIZE, epsilon=EPSILON,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        self.program = FormulaProgram(max_size)
        super().__init__(interpreted_loss, name=name or "interpreted_loss", reduction=reduction,
                         dtype=dtype, program=self.program, epsilon=check_positive("epsilon", epsilon))
        self.set_formula(formula)

    def set_formula(self, tree):
        """Evaluate `tree` (text or prefix list) from now on; a compiled step is not traced again."""
        tree = check_tree(tree)
        self.program.assign(tree)
        self.tree = tree

    @property
    def formula(self):
        return to_text(self.tree)

    def get_config(self):
        config = super().get_config()
        del config["program"]
        return {**config, "formula": self.formula, "max_size": self.program.max_size}

    def __repr__(self):
        return f"InterpretedLoss({self.formula!r}, max_size={self.program.max_size})"


def candidate_blocks(y_pred, population):
    """`y_pred` (batch, ..., K·C) as its K candidates' class blocks (batch, ..., K, C)."""
    return ops.reshape(y_pred, tuple(ops.shape(y_pred)[:-1]) + (population, y_pred.shape[-1] // population))


def population_losses(y_true, y_pred, program, epsilon=EPSILON):
    """Per candidate and sample (K, batch, ...): the mean over classes of program k's formula at
    (p = the k-th of the K class blocks of `y_pred`'s last axis, y = one-hot). `program`: a
    population `FormulaProgram`, or a `PopulationMetrics`'s copy of one."""
    p = ops.moveaxis(candidate_blocks(y_pred, program.population), -2, 0)
    y = one_hot_targets(y_true, p[0])
    return ops.mean(program.evaluate([p, ops.expand_dims(y, 0)], epsilon), axis=-1)


def population_loss(y_true, y_pred, program, epsilon=EPSILON):
    """Per sample: the sum over candidates of their losses, each candidate's only where its mean
    over the batch is finite (`PopulationLoss`)."""
    losses = population_losses(y_true, y_pred, program, epsilon)
    batch_means = ops.mean(ops.reshape(losses, (program.population, -1)), axis=1)
    finite = ops.reshape(ops.isfinite(batch_means), (program.population,) + (1,) * (len(losses.shape) - 1))
    return ops.sum(ops.where(finite, losses, 0.0), axis=0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PopulationLoss(LossFunction):
    """K formulas trained at once: the model's output holds K candidates' predictions side by side
    on its last axis (K blocks of C classes: K models' outputs concatenated), and the loss is the
    sum of the K candidates' `InterpretedLoss`es. Each block's gradient is then its own candidate's
    (no candidate reads another's block). A candidate whose loss over the batch is not finite adds
    nothing to it (its own block diverges; the others train on: `PopulationMetrics` says which).

    The model must own `self.program` as for `InterpretedLoss`; `set_formulas` swaps all K."""

    def __init__(self, formulas, max_size=DEFAULT_MAX_SIZE, epsilon=EPSILON,
                 reduction="sum_over_batch_size", name=None, dtype=None):
        self.program = FormulaProgram(max_size, population=len(formulas))
        self.followers = []  # PopulationMetrics that hold a copy of the program
        super().__init__(population_loss, name=name or "population_loss", reduction=reduction,
                         dtype=dtype, program=self.program, epsilon=check_positive("epsilon", epsilon))
        self.set_formulas(formulas)

    def set_formulas(self, trees):
        trees = [check_tree(tree) for tree in trees]
        self.program.assign_all(trees)
        self.trees = trees
        for metrics in self.followers:
            metrics.follow()

    @property
    def formulas(self):
        return [to_text(tree) for tree in self.trees]

    def get_config(self):
        config = super().get_config()
        del config["program"]
        return {**config, "formulas": self.formulas, "max_size": self.program.max_size}

    def __repr__(self):
        return f"PopulationLoss({self.formulas!r}, max_size={self.program.max_size})"


class PopulationMetrics(keras.metrics.Metric):
    """Each candidate's mean loss and accuracy over the epoch, as `candidate_k_loss` and
    `candidate_k_accuracy` (the model's output as for `PopulationLoss`): its training diverged
    when its loss is not finite, as a single model's history says it.

    It holds its own copy of the loss's programs, as metric variables: a JAX step updates metrics
    with the metrics' variables as its only state (`PopulationLoss.set_formulas` updates the copy)."""

    def __init__(self, loss, name="population"):
        super().__init__(name=name)
        self.loss = loss
        self.population, self.epsilon = loss.program.population, loss.get_config()["epsilon"]
        self.program = tuple(self.add_variable(shape=w.shape, dtype=w.dtype, initializer="zeros", name=w.name)
                             for w in loss.program.arrays)
        size = (self.population,)
        self.loss_sums = self.add_variable(shape=size, initializer="zeros", name="loss_sums")
        self.correct = self.add_variable(shape=size, initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")
        loss.followers.append(self)
        self.follow()

    def follow(self):
        """Copy the loss's programs."""
        for mine, theirs in zip(self.program, self.loss.program.arrays):
            mine.assign(np.array(theirs.numpy()))  # a copy: JAX donates each variable's own buffer

    def evaluate(self, inputs, epsilon=EPSILON):
        return run_program(self.program, inputs, epsilon)

    def update_state(self, y_true, y_pred, sample_weight=None):
        population = self.population
        losses = population_losses(y_true, y_pred, self, self.epsilon)
        losses = ops.reshape(ops.cast(losses, "float32"), (population, -1))
        p = candidate_blocks(y_pred, population)
        labels = ops.argmax(one_hot_targets(y_true, p[..., 0, :]), axis=-1)
        hits = ops.cast(ops.argmax(p, axis=-1) == ops.expand_dims(labels, -1), "float32")
        self.loss_sums.assign_add(ops.sum(losses, axis=1))
        self.correct.assign_add(ops.sum(ops.reshape(hits, (-1, population)), axis=0))
        self.count.assign_add(ops.cast(ops.shape(losses)[1], "float32"))

    def result(self):
        out = {}
        for k in range(self.population):
            out[f"candidate_{k}_loss"] = self.loss_sums[k] / self.count
            out[f"candidate_{k}_accuracy"] = self.correct[k] / self.count
        return out

    def reset_state(self):
        for variable in (self.loss_sums, self.correct, self.count):
            variable.assign(ops.zeros(variable.shape, variable.dtype))
