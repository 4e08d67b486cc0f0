"""The GP engine on its own: operators, limits, the archive, selection, Koza's quartic."""

import json
import random

import numpy as np
import pytest

from ngl_keras.gp import engine, evolution
from ngl_keras.losses import expression as ex

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax

PSET = engine.PrimitiveSet(("add", "sub", "mul", "div", "sin", "cos", "exp", "log"), ("p", "y"),
                           (-5.0, 5.0), ("p", "y"))
LIMITS = engine.Limits(min_height=2, max_size=100, init_max_height=5)


def test_height_and_subtree_scan():
    tree = ex.parse("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
    assert engine.height(tree) == 5  # sub > exp > sub > mul > add > 1
    assert engine.height(["p"]) == 0 and engine.height(["sin", "p"]) == 1
    assert tree[ex.subtree_end(tree, 0) - 1] == "p" and ex.subtree_end(tree, 1) == 9


def test_ramped_half_and_half_respects_limits_and_contains_p_and_y():
    rng = random.Random(0)
    trees = [engine.ramped_half_and_half(PSET, rng, LIMITS) for _ in range(200)]
    assert all(2 <= engine.height(t) <= 5 and len(t) <= 100 for t in trees)
    assert all({"p", "y"} <= ex.variables_of(t) for t in trees)
    assert {engine.height(t) for t in trees} == {2, 3, 4, 5}
    for t in trees:  # well formed and parseable
        assert ex.parse(ex.to_text(t)) == t


def _subtrees(tree):
    """Every (start, end) of a subtree of a prefix-order tree, found by counting open arguments."""
    spans = []
    for start in range(len(tree)):
        end, open_arguments = start, 1
        while open_arguments:
            open_arguments += ex.arity(tree[end]) - 1
            end += 1
        spans.append((start, end))
    return spans


def test_crossover_swaps_subtrees_and_keeps_nodes():
    rng = random.Random(3)
    a, b = ex.parse("p + y * 2"), ex.parse("sin(p) - exp(y)")
    # Every pair of children one swap of a subtree of a with a subtree of b can make.
    swaps = {(tuple(a[:i] + b[j:j_end] + a[i_end:]), tuple(b[:j] + a[i:i_end] + b[j_end:]))
             for i, i_end in _subtrees(a) for j, j_end in _subtrees(b)}
    seen = set()
    for _ in range(200):
        c, d = engine.crossover(a, b, rng)
        assert (tuple(c), tuple(d)) in swaps, (ex.to_text(c), ex.to_text(d))
        seen.add((tuple(c), tuple(d)))
        ex.compile_tree(c, ex.operator_functions(np))  # well formed
        ex.compile_tree(d, ex.operator_functions(np))
    assert len(seen) > len(swaps) // 2  # the swap points vary (the parents back is only one outcome)
    assert (tuple(b), tuple(a)) in seen  # the roots are swap points too


def test_one_point_mutation_keeps_arity_and_shape():
    rng = random.Random(5)
    tree = ex.parse("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
    for _ in range(100):
        mutant = engine.one_point_mutation(tree, PSET, rng)
        assert len(mutant) == len(tree)
        diffs = [i for i, (a, b) in enumerate(zip(tree, mutant)) if a != b]
        assert len(diffs) <= 1
        for i in diffs:
            assert ex.arity(mutant[i]) == ex.arity(tree[i])


class PositionRecorder(random.Random):
    """A random generator that records the one-argument `randrange` draws (the positions an
    operator picks; `randint` calls randrange with two arguments)."""

    def __init__(self, seed):
        super().__init__(seed)
        self.positions = []

    def randrange(self, start, *rest):
        value = super().randrange(start, *rest)
        if not rest:
            self.positions.append(value)
        return value


def test_subtree_mutation_replaces_exactly_the_subtree_at_the_drawn_position():
    tree = ex.parse("p * y + sin(p) - exp(y / 2)")
    replaced_root = replaced_inner = 0
    for seed in range(200):
        rng = PositionRecorder(seed)
        mutant = engine.subtree_mutation(tree, PSET, rng, LIMITS)
        i = rng.positions[0]
        end = ex.subtree_end(tree, i)
        head, tail = tree[:i], tree[end:]
        # Everything outside the subtree at i is unchanged, and what replaced it is one
        # complete subtree no higher than mutation_max_height.
        assert mutant[:i] == head and mutant[len(mutant) - len(tail):] == tail
        new = mutant[i:len(mutant) - len(tail)]
        assert new and ex.subtree_end(new, 0) == len(new)
        assert engine.height(new) <= LIMITS.mutation_max_height
        ex.compile_tree(mutant, ex.operator_functions(np))
        replaced_root += i == 0
        replaced_inner += i > 0
    assert replaced_root and replaced_inner > 100


def test_truncation_selection_and_archive():
    parents = [{"tree": ["p"], "fitness": [3.0]}, {"tree": ["y"], "fitness": [1.0]}]
    offspring = [{"tree": ["q"], "fitness": [2.0]}, {"tree": ["r"], "fitness": [0.5]}]
    survivors, failed = engine.select(parents, offspring, 2)
    assert [s["fitness"] for s in survivors] == [[0.5], [1.0]]
    assert [f["fitness"] for f in failed] == [[2.0], [3.0]]
    rng = random.Random(0)
    assert engine.update_archive([], failed, 2, 1.0, rng) == [["q"], ["p"]]
    assert engine.update_archive([], failed, 2, 0.0, rng) == []
    full = engine.update_archive([["a"], ["b"]], failed[:1], 2, 1.0, rng)
    assert len(full) == 2 and ["q"] in full


@pytest.mark.parametrize("build,message", [
    (lambda: engine.Rates(crossover=1.5), "rate crossover must lie in [0, 1]; got 1.5"),
    (lambda: engine.Rates(archive_save=-0.1), "rate archive_save must lie in [0, 1]"),
    (lambda: engine.Limits(min_height=5, max_size=4), "min_height 5 needs at least 6 nodes, above max_size 4"),
    (lambda: engine.PrimitiveSet((), ("p", "y")), "the operator set is empty"),
    (lambda: engine.PrimitiveSet(("add", "tan"), ("p", "y")), "unknown operators ['tan']"),
])
def test_bad_engine_settings_are_named(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


X = np.linspace(-1, 1, 20)
TARGET = X**4 + X**3 + X**2 + X
NUMPY = ex.operator_functions(np)


def quartic_error(text):
    with np.errstate(all="ignore"):
        values = np.broadcast_to(ex.compile_tree(ex.parse(text, variables=("x",)), NUMPY)({"x": X}), X.shape)
        error = float(np.sum(np.abs(values - TARGET)))
    return [error if np.isfinite(error) else evolution.WORST]


def quartic_search(seed, history=None):
    pset = engine.PrimitiveSet(("add", "sub", "mul", "div", "sin", "cos", "exp", "log"), ("x",),
                               required=("x",), constant_probability=0.0)
    evo = evolution.Evolution(pset, engine.Limits(init_max_height=4),
                              engine.Rates(crossover=0.9, subtree_mutation=0.1, point_mutation=0.1),
                              200, 30, seed=seed, on_generation=history.append if history is not None else None)
    return evolution.run_local(evo, quartic_error)


def test_the_engine_solves_kozas_quartic():
    evo = quartic_search(seed=1)
    assert evo.population[0]["fitness"][0] < 1e-9
    values = ex.compile_tree(ex.parse(evo.population[0]["text"], variables=("x",)), NUMPY)({"x": X})
    np.testing.assert_allclose(values, TARGET, atol=1e-9)


def test_same_seed_gives_the_same_history_and_state_round_trips():
    first, second = [], []
    a = quartic_search(seed=4, history=first)
    quartic_search(seed=4, history=second)
    strip = lambda h: [{k: v for k, v in g.items() if k not in ("wall_time_s", "peak_rss_mb")} for g in h]  # noqa: E731
    assert strip(first) == strip(second) and len(first) == 31
    # A search stopped mid-way and restored from its JSON state ends where an unbroken one does.
    import json

    pset = engine.PrimitiveSet(("add", "sub", "mul", "div"), ("x",), required=("x",), constant_probability=0.0)
    make = lambda: evolution.Evolution(pset, engine.Limits(init_max_height=3), engine.Rates(), 20, 5, seed=9)  # noqa: E731
    whole = evolution.run_local(make(), quartic_error)
    broken = make()
    for _ in range(37):
        action, cid, text = broken.propose()
        broken.report(cid, quartic_error(text))
    resumed = make()
    resumed.set_state(json.loads(json.dumps(broken.get_state())))
    evolution.run_local(resumed, quartic_error)
    assert [i["text"] for i in resumed.population] == [i["text"] for i in whole.population]
    assert a.generation == 31


def test_failed_candidates_are_counted_by_reason_and_a_generation_of_failures_stops():
    pset = engine.PrimitiveSet(("add", "sub", "mul"), ("x",), required=("x",), constant_probability=0.0)
    raised = {}  # generation -> candidates that failed in it

    def fitness(text):
        calls.append(text)
        if len(calls) % 3 == 0:
            raised[evo.generation] = raised.get(evo.generation, 0) + 1
            raise evolution.CandidateFailed("diverged", "NaN in epoch 1")
        return quartic_error(text)

    calls, history = [], []
    evo = evolution.Evolution(pset, engine.Limits(init_max_height=3), engine.Rates(), 6, 2, seed=3,
                              on_generation=history.append)
    evolution.run_local(evo, fitness)
    assert sum(g["trained"] for g in history) == len(calls) and len(calls) >= 9
    assert [g["failed"] for g in history] == [({"diverged": raised[k]} if k in raised else {}) for k in range(3)]
    failed_texts = {calls[k] for k in range(2, len(calls), 3)}
    assert all(ind["fitness"] == [evolution.WORST] for ind in evo.population if ind["text"] in failed_texts)

    def broken(text):
        raise evolution.CandidateFailed("out_of_memory", "RESOURCE_EXHAUSTED")

    evo = evolution.Evolution(pset, engine.Limits(init_max_height=3), engine.Rates(), 4, 2, seed=3)
    with pytest.raises(evolution.SearchStopped) as stopped:
        evolution.run_local(evo, broken)
    assert str(stopped.value) == ("generation 0: none of its 4 candidates could be evaluated (out_of_memory 4); "
                                  "check the data, the model and the training settings.")
    # Nothing was selected, and the failed candidates wait to be trained again by a re-run.
    assert evo.generation == 0 and evo.population == [] and evo.history == []
    assert [c["status"] for c in evo.batch] == ["queued"] * 4 and evo.cache == {} and evo.failures == {}
    resumed = evolution.Evolution(pset, engine.Limits(init_max_height=3), engine.Rates(), 4, 2, seed=3)
    resumed.set_state(json.loads(json.dumps(evo.get_state())))
    assert resumed.stopped is None
    evolution.run_local(resumed, quartic_error)
    assert resumed.finished and resumed.generation == 3


def test_a_failure_reason_outside_the_known_ones_is_refused():
    with pytest.raises(ValueError, match=r"failure reason must be one of \('diverged', 'out_of_memory'\); got 'typo'"):
        evolution.CandidateFailed("typo")
    evo = evolution.Evolution(PSET, LIMITS, engine.Rates(), 2, 0)
    _, candidate, _ = evo.propose()
    with pytest.raises(ValueError, match="failure must be one of"):
        evo.report(candidate, [1.0], failure="crash")
