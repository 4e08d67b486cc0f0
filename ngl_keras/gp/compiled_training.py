"""A search's training compiled once: one model per run, trained again for every candidate.

Today's path (`training.train_run`) builds the model, the input and a new training step for every
candidate and run; with short proxy trainings that set-up costs about as much as the training.
A candidate's loss is a formula over p and y, so an `interpreter.InterpretedLoss` can hold any of
them as data in one compiled step. `CompiledRun` builds run r's model, input and step once, in
the order `train_run` does (same seed, so the same initial weights), keeps the initial values of
every model and optimizer variable, and for each candidate restores them, sets the formula and
trains the same epochs on the same batches:

- model variables (weights, seed-generator states) and optimizer variables (slots, iterations,
  learning rate, which ReduceLROnPlateau lowers) go back to their initial values;
- the global seeds are set again to the run's seed (TensorFlow's when the training pipelines are
  built, below) and the schedule callbacks are new;
- the input: `ArrayBatches` are kept and rewound to epoch 0 (their order is a function of
  (seed, epoch)); the validation tf.data pipeline is kept (with its cache), the training one is
  a new one for every candidate, because its shuffle would continue from the previous
  candidate's state instead of starting over (tf.data has no public reset). Its order depends on
  TensorFlow's global seed when it is built, and setting that seed clears TensorFlow's kernel
  caches, so that the next step of every compiled model is instantiated again (about 1.6 s per run
  on 2 CPU cores, a third of a 4,096-image epoch): up to `SPARE_INPUTS` pipelines are built after
  one seeding and used one per candidate (each holds its own copy of an in-memory split: at most
  `SPARE_BYTES` of them), Python's and NumPy's seeds are set for every candidate.

`interpretable(run)` says whether a run's loss can go this way: a formula (`ExpressionLoss`) on
probabilities that fits the interpreter. Registry losses (experiment 5's CE baseline, the
references) and losses on logits train on today's path.

Population-parallel (`population` K > 1): K candidates train as one program over the same
batches. The model is K copies of the run's model, each with the initial values of the single
model (the same weights, seed-generator states), side by side on the same input, their outputs
concatenated on the class axis; the loss is an `interpreter.PopulationLoss` (the sum of the K
candidates' losses: no branch reads another's block, so each branch gets its own candidate's
gradient) and `interpreter.PopulationMetrics` gives each candidate's loss and validation accuracy.
A candidate whose loss is not finite adds nothing to the sum: it diverges alone (TerminateOnNaN,
which would read the summed loss and stop all of them, is left out; a candidate's own metrics say
whether it diverged). Every per-variable optimizer (SGD, Adam, AdamW without a global clip norm)
then updates each branch as its own training would. What would couple the candidates is refused
(`coupling`): a global clip norm (one norm over all branches), a ReduceLROnPlateau that can fire
within the run's epochs (it follows one model's metric); a model function that shares layers
between its calls is refused too. Memory grows with K (K models); a population that runs out of
it is trained again one candidate at a time (`fitness.TrainingFitness.many`). A group smaller
than K (a generation's last) is filled up with copies of its first formula: one compiled program
per run whatever the group's size.
"""

import json
import math
import random

import keras
import numpy as np

from ngl_keras import data as data_module
from ngl_keras import recipe, tasks
from ngl_keras.gp.interpreter import DEFAULT_MAX_SIZE, InterpretedLoss, PopulationLoss, PopulationMetrics
from ngl_keras.losses import ExpressionLoss
from ngl_keras.resume import InputEpoch

SPARE_INPUTS = 8  # training tf.data pipelines built per seeding of TensorFlow (module docstring)
SPARE_BYTES = 128 * 2**20  # what the copies of an in-memory training split they hold may take


def interpretable(run, max_size=DEFAULT_MAX_SIZE):
    """The `ExpressionLoss` of `run` when an `InterpretedLoss` can train it, else None."""
    if run.loss.logits or run.loss.config.get("ignore_class") is not None:  # void labels: ExpressionLoss
        return None
    loss = run.loss.build()
    if not isinstance(loss, ExpressionLoss) or len(loss.tree) > max_size:
        return None
    return loss


def same_model(run):
    """What a `CompiledRun` serves: runs that differ only in their (interpretable) loss."""
    return (run.dataset, run.model, run.run, run.seed, run.weights, run.loss.kernel_l2(),
            run.loss.config.get("epsilon"), json.dumps(run.settings.to_json(), sort_keys=True))


def owning(model, program):
    """`model`, made the owner of the formula `program` (so that it is state of the compiled step).
    A Sequential model does not track a layer set as an attribute (keras 3.15.1): it is then
    called by a functional model that does; the same layers and weights, the same outputs."""
    model.loss_program = program
    if any(v is program.opcodes for v in model.variables):
        return model
    inputs = keras.Input(model.input_shape[1:])
    wrapper = keras.Model(inputs, model(inputs), name=model.name)
    wrapper.loss_program = program
    return wrapper


def check_population(run, size):
    """Refuse `size` > 1 candidates of `run` as one population where its settings couple them."""
    reason = coupling(run) if size > 1 else None
    if reason:
        raise ValueError(f"fitness population_parallel {size}: {run.dataset}/{run.model} cannot train candidates "
                         f"as one population: {reason}; set population_parallel to 1.")


def coupling(run):
    """Why candidates of `run` cannot train as one population (None when they can)."""
    settings = run.settings
    if getattr(settings.optimizer, "global_clipnorm", None):
        return "its optimizer clips the gradient to one global norm over all candidates"
    reduce = settings.reduce_lr
    if reduce is not None and settings.epochs > reduce.patience:
        return (f"its ReduceLROnPlateau (patience {reduce.patience}) can lower the learning rate within its "
                f"{settings.epochs} epochs, from one model's {reduce.monitor}")
    return None


def population_model(build, size, program):
    """`size` models from `build()` side by side on one input, their outputs concatenated on the
    last axis, each with the first one's initial values; the model owns `program`."""
    branches = [build() for _ in range(size)]
    owners = {}
    for k, branch in enumerate(branches):
        for variable in branch.variables:
            if owners.setdefault(id(variable), k) != k:
                raise ValueError(f"the model function gave two calls the same variable {variable.path!r} (a layer "
                                 "made once and reused?): population_parallel trains one model per candidate, so "
                                 "each call must build new layers; or set population_parallel to 1.")
    for k, branch in enumerate(branches):
        branch.name = f"candidate_{k}"
        for variable, value in zip(branch.variables, branches[0].variables):
            if variable.shape != value.shape:
                raise RuntimeError(f"the run's model is not built the same way twice: {variable.path} "
                                   f"{variable.shape} against {value.path} {value.shape}")
            variable.assign(value)
    inputs = keras.Input(branches[0].input_shape[1:])
    model = keras.Model(inputs, keras.layers.Concatenate(axis=-1)([b(inputs) for b in branches]),
                        name="population")
    model.loss_program = program
    return model


class CompiledRun:
    """Run `run`'s model, input and compiled training step, trained once per candidate formula
    (module docstring); with `population` K > 1, K candidates at a time. `datasets` is a
    `data.Datasets`."""

    def __init__(self, run, datasets, population=1):
        self.run, self.datasets, self.population = run, datasets, population
        check_population(run, population)
        keras.utils.set_random_seed(run.seed)  # as train_run, which also clears the session first
        keras.mixed_precision.set_global_policy(recipe.dtype_policy(False))
        expression = interpretable(run)
        epsilon = expression.get_config()["epsilon"]
        self.train, self.validation, _ = datasets.pipelines(run, 1, test=False)
        self._spares = []  # tf.data: training pipelines built under the run's seed, one per candidate
        build = lambda: tasks.get(run.task).build_model(run, self.train)  # noqa: E731
        if population == 1:
            self.loss = InterpretedLoss(expression.tree, epsilon=epsilon)
            self.model, metrics = owning(build(), self.loss.program), ["accuracy"]
        else:
            self.loss = PopulationLoss([expression.tree] * population, epsilon=epsilon)
            self.model = population_model(build, population, self.loss.program)
            metrics = [PopulationMetrics(self.loss)]
        self.model.compile(optimizer=recipe.optimizer(run.settings), loss=self.loss, metrics=metrics,
                           jit_compile="auto")
        self.model.optimizer.build(self.model.trainable_variables)
        self._variables = self.model.variables + self.model.optimizer.variables
        self._initial = [np.array(v.numpy()) for v in self._variables]

    def history(self, tree):
        """Train the formula `tree` (a prefix list) from the run's initial state; fit's history.
        A population's: the list of `population` trees."""
        for variable, value in zip(self._variables, self._initial):
            variable.assign(value)
        # after the restore: the program is one of the model's variables
        if self.population == 1:
            self.loss.set_formula(tree)
        else:
            self.loss.set_formulas(tree)
        if data_module.placement().tf_data:  # the validation input is not shuffled: kept, cache and all
            if not self._spares:
                keras.utils.set_random_seed(self.run.seed)
                count = self._spare_count()
                self._spares = [self.datasets.pipelines(self.run, 1, test=False)[0] for _ in range(count)]
            self.train = self._spares.pop()
            random.seed(self.run.seed)
            np.random.seed(self.run.seed)
        else:
            keras.utils.set_random_seed(self.run.seed)
            self.train.set_epoch(0)
        # InputEpoch as in `train_run`: Keras reads a first batch before training and then ends an "epoch" of
        # the input, so without it the first epoch would be read in epoch 1's order
        callbacks = recipe.schedule_callbacks(self.run.settings)
        if self.population > 1:
            # ReduceLROnPlateau cannot fire within the run (`coupling`); TerminateOnNaN would read the summed loss
            # and stop every candidate for one: each candidate's divergence is in its own metrics instead
            callbacks = [c for c in callbacks if not isinstance(c, (keras.callbacks.ReduceLROnPlateau,
                                                                     keras.callbacks.TerminateOnNaN))]
        fitted = self.model.fit(self.train, validation_data=self.validation, epochs=self.run.settings.epochs,
                                callbacks=callbacks + [InputEpoch(self.train)],
                                shuffle=False,
                                verbose=0).history
        return fitted

    def _spare_count(self):
        """How many training pipelines to build at once: `SPARE_INPUTS`, fewer when the in-memory
        training split they would each copy is large (a split read from files is copied by none)."""
        settings = self.run.settings
        source = self.datasets.split(self.run.dataset_info, settings.splits.train, settings.limit_train)
        if not isinstance(source, tuple):
            return SPARE_INPUTS
        size = sum(np.asarray(array).nbytes for array in source)
        return int(max(1, min(SPARE_INPUTS, SPARE_BYTES // max(size, 1))))

    def validation_accuracy(self, tree):
        """The last epoch's validation accuracy of `tree`, None when the training diverged (a loss
        that is not finite, as `train_run` records "diverged")."""
        if self.population > 1:
            return self.validation_accuracies([tree])[0]
        history = self.history(tree)
        return _accuracy_if_finite(history.get("loss", []), history.get("val_accuracy"))

    def validation_accuracies(self, trees):
        """`validation_accuracy` of each of `trees`, `population` at a time (the last group filled
        up with copies of its first tree, whose results are dropped)."""
        if self.population == 1:
            return [self.validation_accuracy(tree) for tree in trees]
        out = []
        for start in range(0, len(trees), self.population):
            group = list(trees[start:start + self.population])
            history = self.history(group + [group[0]] * (self.population - len(group)))
            if len(history.get("loss", [])) != self.run.settings.epochs:
                raise RuntimeError(f"a population's training stopped after {len(history.get('loss', []))} of "
                                   f"{self.run.settings.epochs} epochs: its candidates' results would be cut short")
            out.extend(_accuracy_if_finite(history.get(f"candidate_{k}_loss", []),
                                           history.get(f"val_candidate_{k}_accuracy"))
                       for k in range(len(group)))
        return out


def _accuracy_if_finite(losses, accuracies):
    """The last validation accuracy, None when a training loss was not finite (diverged)."""
    accuracy = (accuracies or [float("nan")])[-1]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    return float(accuracy) if finite and math.isfinite(accuracy) else None
