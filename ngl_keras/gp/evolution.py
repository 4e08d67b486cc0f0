"""The search loop as a state machine, so that one engine serves an in-process loop, a
keras-tuner oracle and many workers alike.

`propose()` hands out the next candidate to evaluate (or says to wait, or that the search is
over); `report()` takes its fitness. Candidates are screened and looked up in the
equivalence cache before they are handed out: only new, plausible candidates cost a
training. The whole state, random generator included, round-trips through JSON.
"""

import random
import resource
import statistics
import time
from dataclasses import dataclass, field

from ngl_keras.gp import engine
from ngl_keras import formula
from ngl_keras.settings import Settings, integer_at_least, shown

WORST = 1e9  # fitness of a candidate that diverged or failed
# Why a candidate may fail without stopping the search: its training diverged (NaN/Inf), or it
# ran out of memory. Any other error is a fault of the setup or the code, and stops the search.
FAILURES = ("diverged", "out_of_memory")


def fitness_text(values):
    """A fitness as printed: 4 significant digits in parentheses (the files keep every digit)."""
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
# A candidate's status: waiting to be handed out, handed out, evaluated, fitness taken from the
# cache, or equivalent to a queued candidate of the same batch (it takes that one's fitness).
STATUSES = ("queued", "running", "done", "cached", "duplicate")


class CandidateFailed(Exception):
    """A candidate that could not be evaluated for one of FAILURES: it gets the worst fitness,
    is counted by reason in the generation log, and the search goes on."""

    def __init__(self, reason, detail=""):
        if reason not in FAILURES:
            raise ValueError(f"failure reason must be one of {FAILURES}; got {shown(reason)}.")
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail

    def __str__(self):
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class SearchStopped(Exception):
    """The search cannot go on (the reason is the message). Its state is kept: once the cause
    is fixed, re-running the same command resumes it."""


# The Evolution's own settings (a search config's population, generations and screening.max_attempts).
_BARE = "{key} must be an integer >= {least}; got {value!r}."  # no file: a caller may give them


@dataclass(frozen=True)
class Schedule(Settings):
    population: int = field(metadata=integer_at_least(2, _BARE))
    generations: int = field(metadata=integer_at_least(0, _BARE))
    max_attempts: int = field(default=1000, metadata=integer_at_least(1, _BARE))


def _rng_state(rng):
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng, state):
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


class Evolution:
    """(μ+λ) GP over batches of `population_size` candidates, one batch per generation.

    Each candidate of a batch has one of STATUSES; a generation completes when no candidate is
    queued or running. A generation in which no candidate could be evaluated (all failed)
    does not complete: its candidates go back to the queue and `stopped` says why.
    """

    def __init__(self, pset, limits, rates, population_size, generations, seed=0, screen=None,
                 max_attempts=1000, on_generation=None):
        Schedule(population_size, generations, max_attempts)
        self.pset, self.limits, self.rates = pset, limits, rates
        self.size, self.generations = population_size, generations
        self.screen = screen
        self.max_attempts = max_attempts
        self.on_generation = on_generation
        self.rng = random.Random(seed)
        self.population, self.archive, self.batch = [], [], []
        self.generation = 0
        self.cache = {}
        self.failures = {}  # fingerprint -> reason, for the cached fitnesses that are failures
        self.counters = self._new_counters()
        self.history = []
        self.finished = False
        self.stopped = None  # why the search cannot go on; not saved, so that a re-run retries
        self.started = time.time()

    @staticmethod
    def _new_counters():
        return {"proposed": 0, "rejected": {}, "cache_hits": 0, "trained": 0, "failed": {}}

    # Candidates.

    def _new_tree(self):
        if self.generation == 0:
            return engine.ramped_half_and_half(self.pset, self.rng, self.limits)
        parents = [ind["tree"] for ind in self.population]
        return engine.vary(parents, self.archive, self.pset, self.limits, self.rates, self.rng)

    def _screened_candidate(self, index):
        for _ in range(self.max_attempts):
            tree = self._new_tree()
            self.counters["proposed"] += 1
            reason, fingerprint = self.screen(tree) if self.screen else (None, formula.to_text(tree))
            if reason is None:
                return {"id": f"g{self.generation}-{index}", "tree": tree,
                        "text": formula.to_text(tree), "fingerprint": fingerprint,
                        "fitness": None, "status": "queued"}
            rejected = self.counters["rejected"]
            rejected[reason] = rejected.get(reason, 0) + 1
        raise RuntimeError(f"screening rejected {self.max_attempts} candidates in a row; widen the "
                           "allowed range or check the operator set.")

    def _fill_batch(self):
        self.batch = []
        waiting = {}
        for index in range(self.size):
            candidate = self._screened_candidate(index)
            key = candidate["fingerprint"]
            if key in self.cache:
                candidate.update(fitness=self.cache[key], status="cached")
                self.counters["cache_hits"] += 1
            elif key in waiting:  # equivalent to one queued in this batch: reuse its fitness
                candidate["status"] = "duplicate"
                self.counters["cache_hits"] += 1
            else:
                waiting[key] = candidate["id"]
            self.batch.append(candidate)

    def propose(self):
        """("run", candidate id, formula text) | ("wait", None, None) | ("done", None, None)."""
        while not self.finished and self.stopped is None:
            if not self.batch:
                self._fill_batch()
            for candidate in self.batch:
                if candidate["status"] == "queued":
                    candidate["status"] = "running"
                    return "run", candidate["id"], candidate["text"]
            if any(c["status"] == "running" for c in self.batch):
                return "wait", None, None
            self._complete_generation()
        return "done", None, None

    def report(self, candidate_id, fitness, failure=None):
        """Record the fitness (a list of floats, lower is better) of a handed-out candidate;
        `failure` (one of FAILURES) when it could not be evaluated."""
        fitness = [float(v) for v in fitness]
        if failure is not None and failure not in FAILURES:
            raise ValueError(f"failure must be one of {FAILURES} or None; got {shown(failure)}.")
        for candidate in self.batch:
            if candidate["id"] == candidate_id and candidate["status"] in ("running", "queued"):
                candidate.update(fitness=fitness, status="done")
                self.cache[candidate["fingerprint"]] = fitness
                self.counters["trained"] += 1
                if failure is not None:
                    self.failures[candidate["fingerprint"]] = failure
                    failed = self.counters.setdefault("failed", {})
                    failed[failure] = failed.get(failure, 0) + 1
                for other in self.batch:
                    if other["status"] == "duplicate" and other["fingerprint"] == candidate["fingerprint"]:
                        other.update(fitness=fitness, status="cached")
                return True
        return False  # a late or repeated report: already counted

    def release(self, candidate_id):
        """Hand a running candidate out again (its evaluation was lost)."""
        for candidate in self.batch:
            if candidate["id"] == candidate_id and candidate["status"] == "running":
                candidate["status"] = "queued"

    # Generations.

    def _nothing_evaluated(self):
        """Stop when every candidate of the batch failed: nothing can be selected, and the same
        cause (missing data, a broken setting) would fail the next generation too. The failed
        candidates go back to the queue, so that a re-run after the fix trains them again."""
        if any(c["fingerprint"] not in self.failures for c in self.batch):
            return False
        reasons = {}
        for candidate in self.batch:
            reason = self.failures[candidate["fingerprint"]]
            reasons[reason] = reasons.get(reason, 0) + 1
        for candidate in self.batch:
            self.cache.pop(candidate["fingerprint"], None)
            self.failures.pop(candidate["fingerprint"], None)
            candidate.update(fitness=None, status="queued")
        self.counters["trained"], self.counters["failed"] = 0, {}
        counts = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        self.stopped = (f"generation {self.generation}: none of its {len(self.batch)} candidates could be "
                        f"evaluated ({counts}); check the data, the model and the training settings.")
        return True

    def _complete_generation(self):
        if self._nothing_evaluated():
            return
        evaluated = [{"tree": c["tree"], "text": c["text"], "fitness": c["fitness"]} for c in self.batch]
        if self.generation == 0:
            self.population, _ = engine.select([], evaluated, self.size)
        else:
            self.population, failed = engine.select(self.population, evaluated, self.size)
            self.archive = engine.update_archive(self.archive, failed, self.size,
                                                 self.rates.archive_save, self.rng)
        fitnesses = [ind["fitness"] for ind in self.population]
        summary = {
            "generation": self.generation,
            "best_fitness": fitnesses[0],
            "median_fitness": [statistics.median(f[k] for f in fitnesses) for k in range(len(fitnesses[0]))],
            "best_formula": self.population[0]["text"],
            "proposed": self.counters["proposed"],
            "rejected": dict(self.counters["rejected"]),
            "cache_hits": self.counters["cache_hits"],
            "trained": self.counters["trained"],
            "failed": dict(self.counters.get("failed", {})),
            "wall_time_s": round(time.time() - self.started, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        }
        self.history.append(summary)
        self.counters = self._new_counters()
        self.started = time.time()
        self.batch = []
        self.generation += 1
        if self.generation > self.generations:
            self.finished = True
        if self.on_generation:
            self.on_generation(summary)

    def hall_of_fame(self, k):
        """The k best distinct individuals of the current population (sorted best first)."""
        seen, out = set(), []
        for ind in self.population:
            if ind["text"] not in seen:
                seen.add(ind["text"])
                out.append(ind)
        return out[:k]

    # State.

    def get_state(self):
        return {"population": self.population, "archive": self.archive, "batch": self.batch,
                "generation": self.generation, "cache": self.cache, "failures": self.failures,
                "counters": self.counters,
                "history": self.history, "finished": self.finished, "rng": _rng_state(self.rng),
                "elapsed_s": time.time() - self.started}

    def set_state(self, state):
        self.population, self.archive = state["population"], state["archive"]
        self.batch, self.generation = state["batch"], state["generation"]
        self.cache, self.counters = state["cache"], state["counters"]
        self.failures = state.get("failures", {})  # absent in searches saved before failures were kept
        self.history, self.finished = state["history"], state["finished"]
        _set_rng_state(self.rng, state["rng"])
        self.started = time.time() - state["elapsed_s"]


def run_local(evolution, fitness):
    """Evaluate every candidate in this process: `fitness(formula text) -> list of floats`
    (or CandidateFailed)."""
    while True:
        action, candidate_id, text = evolution.propose()
        if action == "done":
            if evolution.stopped:
                raise SearchStopped(evolution.stopped)
            return evolution
        if action == "wait":  # cannot happen in one process: every candidate is reported at once
            raise RuntimeError("a candidate was handed out and never reported")
        try:
            evolution.report(candidate_id, fitness(text))
        except CandidateFailed as failure:
            evolution.report(candidate_id, [WORST], failure=failure.reason)
