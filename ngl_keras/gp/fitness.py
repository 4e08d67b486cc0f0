"""Fitness of a loss candidate: the paper's five experiments, and a cheap probe fitness.

Every fitness maps a formula to a list of floats, lower is better (compared
lexicographically). Training reuses `ngl_keras.training` (the same data, model and training
code as train_small.py). A training that diverged or ran out of memory raises
`CandidateFailed` (the candidate gets the worst fitness); any other error is raised as it is,
and stops the search.
"""

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np

from ngl_keras import console
from ngl_keras.files import atomic_write
from ngl_keras.gp.evolution import CandidateFailed

PARENT_POLL_S = 0.5  # a training process checks this often that the search still runs
RECYCLE_EVERY = 10  # candidates a training process trains before it is replaced (fitness recycle_every)


def is_out_of_memory(error):
    """Resource exhaustion, by any backend's name for it (no backend imported here)."""
    return (isinstance(error, MemoryError)
            or type(error).__name__ in ("ResourceExhaustedError", "OutOfMemoryError")
            or "RESOURCE_EXHAUSTED" in str(error))


def _start_training_process(parent_pid):
    """A training process's start: the command-line tool's start-up filter (that tool installed
    it in its own process only; `NGL_KERAS_VERBOSE` set says a tool started this search), then
    the watch on the parent."""
    if console.verbosity():
        console.load_frameworks()
    _end_with_parent(parent_pid)


def _end_with_parent(parent_pid):
    """In a training process: exit as soon as the search process that started it is gone
    (kill -9 included), instead of training on and then blocking forever on its pipe."""
    def watch():
        while os.getppid() == parent_pid:
            threading.Event().wait(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="end-with-parent").start()


class TrainingProcess:
    """One child process that runs trainings, replaced after `recycle_every` of them, started
    again after a crash, and ending by itself when this process dies."""

    def __init__(self, recycle_every):
        self.recycle_every = recycle_every
        self._pool = None

    def run(self, function, *args):
        """`function(*args)` in the child. A child killed by SIGKILL (on a training machine,
        the kernel's out-of-memory killer) raises CandidateFailed("out_of_memory"); a child
        that died otherwise raises RuntimeError. Either way the next call starts a new child."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             max_tasks_per_child=self.recycle_every,
                                             initializer=_start_training_process, initargs=(os.getpid(),))
        try:
            return self._pool.submit(function, *args).result()
        except BrokenProcessPool:
            # ProcessPoolExecutor._processes: BrokenProcessPool does not carry the child's exit
            # code, and no public attribute does (Python 3.11).
            children = list(self._pool._processes.values())
            for child in children:
                child.join(5.0)  # the pool's own thread may not have reaped it yet
            codes = [child.exitcode for child in children]
            self.close()
            if -signal.SIGKILL in codes:
                raise CandidateFailed("out_of_memory", "the training process was killed (SIGKILL), "
                                      "most likely by the kernel's out-of-memory killer") from None
            raise RuntimeError(f"the training process died (exit codes {codes})") from None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def experiment5_key(improvements):
    """Paper, experiment 5: (wins against CE, % improvement) as a key to minimise.

    More wins is better; with equal wins ≥ 1, the higher mean improvement over the won
    datasets is better; a candidate that beats CE somewhere beats one that loses everywhere;
    between two that lose everywhere, the smaller mean loss of accuracy is better.
    """
    wins = [v for v in improvements if v > 0]
    score = float(np.mean(wins)) if wins else float(np.mean(improvements))
    return [-float(len(wins)), -score]


class TrainingFitness:
    """Train a candidate as experiment `settings` (a `search_settings.Fitness`) says; see
    configs/search/exp*.yaml.

    Experiments 1-4: mean validation error over `runs` trainings on one dataset.
    Experiment 5 (`compare_with_ce`): one training per dataset against CE's validation
    accuracy, CE trained once per dataset and cached in `search_dir/ce_baseline.json`.

    Trainings run in a child process that is replaced after about `recycle_every` candidates
    (settings key, default 10): TensorFlow keeps some memory of every model trained in a
    process (about 17 MB per small_cnn training here, even after `clear_session`), and a new
    process returns it, so a long search stays flat in memory. 0 trains in this process.

    `sources` (a `grid.Sources`) names in-memory arrays and model functions the settings'
    `datasets` and `model` may name (the Python API's search); they travel to the child process
    with every candidate (pickled: a model function must then be a module-level function).
    """

    def __init__(self, settings, configs_dir, search_dir, data_dir=None, seed=0, sources=None):
        from ngl_keras import grid

        self.settings, self.search_dir = settings, Path(search_dir)
        self.recycle_every = RECYCLE_EVERY if settings.recycle_every is None else settings.recycle_every
        self._args = (settings, str(configs_dir), str(search_dir), data_dir, seed, sources)
        # a call trains one candidate, or a population's `population_parallel`: about recycle_every candidates
        self._process = TrainingProcess(max(1, self.recycle_every // settings.population_parallel))
        self._trainer = _Trainer(*self._args)
        self.runs = grid.plan({**self._trainer.grid, "losses": ["ce"]}, configs_dir,
                              self._trainer.overrides, data_dir, sources)  # names and settings now

    def check_inputs(self):
        """Load one example of every split a training reads, and the model's pretrained
        weights: a missing dataset or weights file stops the search before its first
        generation, not as a failure of every candidate; so does a population_parallel that
        the training settings would couple (`compiled_training.coupling`)."""
        from ngl_keras import training

        training.check_inputs(self.runs, self._trainer.datasets, splits=("train", "validation"))
        from ngl_keras.gp.compiled_training import check_population

        for run in self.runs:
            check_population(run, self.settings.population_parallel)

    def _accuracies(self, losses):
        """`_Trainer.accuracies` of each of `losses`, in the training process."""
        if self.recycle_every == 0:
            return _accuracies_in_process(*self._args, losses)
        return self._process.run(_accuracies_in_process, *self._args, losses)

    def close(self):
        """Stop the training process (it also ends by itself when this process dies)."""
        self._process.close()

    def ce_baseline(self):
        path = self.search_dir / "ce_baseline.json"
        if path.exists():
            return json.loads(path.read_text())
        baseline = {}
        for dataset, accuracy in self._accuracies(["ce"])[0]:
            if accuracy is None:
                raise RuntimeError(f"cross-entropy diverged on {dataset}: experiment 5 has no baseline "
                                   "to compare with; check the training settings.")
            baseline.setdefault(dataset, []).append(accuracy)
        baseline = {d: float(np.mean(v)) for d, v in baseline.items()}
        atomic_write(path, json.dumps(baseline))
        return baseline

    def __call__(self, formula):
        return self._fitness(self._accuracies([formula])[0])

    def many(self, formulas):
        """The fitness of each of `formulas`, or the `CandidateFailed` that says why it has none:
        trained `population_parallel` at a time (`compiled_training`, population-parallel). A
        population that runs out of memory is trained again one candidate at a time."""
        try:
            results = self._accuracies(list(formulas))
        except CandidateFailed:  # out of memory: K models at once may not fit where one does
            if len(formulas) == 1:
                raise
            return [self._one(formula) for formula in formulas]
        out = []
        for result in results:
            try:
                out.append(self._fitness(result))
            except CandidateFailed as failure:
                out.append(failure)
        return out

    def _one(self, formula):
        try:
            return self(formula)
        except CandidateFailed as failure:
            return failure

    def _fitness(self, results):
        diverged = sorted({d for d, acc in results if acc is None})
        if diverged:
            raise CandidateFailed("diverged", f"no finite validation accuracy on {', '.join(diverged)}")
        if self.settings.compare_with_ce:
            baseline = self.ce_baseline()
            improvements = [100.0 * (acc - baseline[d]) / baseline[d] for d, acc in results]
            return experiment5_key(improvements)
        return [float(np.mean([1.0 - acc for _, acc in results]))]


class _Trainer:
    """Trains losses for a fitness: the experiment's grid, its data loaded once per process.

    With `compiled_once` (the fitness setting, default true), a formula's run trains on a model
    built and compiled once per process and run (`compiled_training.CompiledRun`; with
    `population_parallel` K, K formulas at a time); other losses, and every loss when it is false,
    train on `training.train_run` as a grid's run does."""

    def __init__(self, settings, configs_dir, search_dir, data_dir, seed, sources=None):
        from ngl_keras import data

        self.search_dir, self.configs_dir, self.sources = Path(search_dir), configs_dir, sources
        self.datasets = data.Datasets(data_dir)
        self.grid = {"datasets": list(settings.datasets), "models": [settings.model],
                     "runs": settings.runs, "seed": seed, "weights": settings.weights,
                     "settings": settings.settings or {}}
        overrides = {"epochs": settings.epochs, "limit_train": settings.limit_train}
        self.overrides = {k: v for k, v in overrides.items() if v is not None}
        self.compiled_once, self.population = settings.compiled_once, settings.population_parallel
        self._compiled = {}  # (compiled_training.same_model(run), population) -> CompiledRun

    def accuracies(self, losses):
        """For each of `losses`: (dataset, validation accuracy) of each of its runs, None for a
        diverged run. Formulas that share a run's model train on its `CompiledRun`,
        `population_parallel` at a time."""
        from ngl_keras import grid
        from ngl_keras.gp import compiled_training

        out, groups = [], {}  # groups: CompiledRun key -> (run, [(loss index, run index, tree)])
        for i, loss in enumerate(losses):
            try:
                runs = grid.plan({**self.grid, "losses": [loss]}, self.configs_dir, self.overrides,
                                 self.datasets.data_dir, self.sources)
            except grid.LossOverflows:  # it would diverge at the first step: diverged on every dataset
                out.append([(dataset, None) for dataset in self.grid["datasets"]])
                continue
            out.append([(run.dataset, None) for run in runs])
            for j, run in enumerate(runs):
                if self.compiled_once and compiled_training.interpretable(run) is not None:
                    key = compiled_training.same_model(run)
                    groups.setdefault(key, (run, []))[1].append((i, j, run.loss.build().tree))
                else:
                    out[i][j] = (run.dataset, self._today(run))
        for key, (run, members) in groups.items():
            # a lone candidate of a population search trains on the single model
            compiled = self._compiled_run(key, run, self.population if len(members) > 1 else 1)
            for (i, j, _), accuracy in zip(members, compiled.validation_accuracies([t for *_, t in members])):
                out[i][j] = (run.dataset, accuracy)
        return out

    def _today(self, run):
        """The validation accuracy of `run` trained as a grid's run (`training.train_run`)."""
        from ngl_keras import distribution, training

        record = training.train_run(run, self.datasets, self.search_dir / "scratch",
                                    distribution.make_strategy("none"), verbose=0,
                                    evaluate_test=False, logs=False)
        history = record["history"].get("val_accuracy") or [float("nan")]
        return history[-1] if record["status"] == "ok" and np.isfinite(history[-1]) else None

    def _compiled_run(self, key, run, population):
        """The `CompiledRun` of `run` for `population` candidates at a time, built on first use."""
        from ngl_keras.gp import compiled_training

        if (key, population) not in self._compiled:
            self._compiled[key, population] = compiled_training.CompiledRun(run, self.datasets, population)
        return self._compiled[key, population]


_TRAINERS = {}


def _trainer(settings, configs_dir, search_dir, data_dir, seed, sources):
    """One _Trainer (datasets loaded once) per process and setting, the sources' names and
    content hashes included."""
    named = None if sources is None else (
        sorted((name, d.fingerprint) for name, d in sources.datasets.items()),
        sorted((name, m.qualified_name, m.fingerprint) for name, m in sources.models.items()))
    key = json.dumps([settings.to_json(), configs_dir, search_dir, data_dir, seed, named], sort_keys=True)
    if key not in _TRAINERS:
        _TRAINERS[key] = _Trainer(settings, configs_dir, search_dir, data_dir, seed, sources)
    return _TRAINERS[key]


def _accuracies_in_process(settings, configs_dir, search_dir, data_dir, seed, sources, losses):
    trainer = _trainer(settings, configs_dir, search_dir, data_dir, seed, sources)
    try:
        return trainer.accuracies(losses)
    except Exception as error:
        if is_out_of_memory(error):
            first_line = (str(error).splitlines() or [""])[0][:300]
            raise CandidateFailed("out_of_memory", f"{type(error).__name__}: {first_line}") from None
        raise


class ProbeFitness:
    """Cheap and deterministic: 1 − the mean true-class probability reached by gradient
    descent on the logits of the screening probe batch. For tests, benchmarks of the
    orchestration, and smoke runs; it says little about real training."""

    def __init__(self, screen, steps=40):
        self.screen, self.steps = screen, steps

    def __call__(self, formula):
        from ngl_keras.formula import parse

        probability = self.screen.descend(parse(formula), self.steps)
        if probability is None or not np.isfinite(probability):
            raise CandidateFailed("diverged", "a gradient on the probe batch is not finite")
        return [1.0 - probability]
