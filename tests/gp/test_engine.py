"""The GP engine on its own: operators, limits, the archive, selection, Koza's quartic."""

import random

import numpy as np
import pytest

from ngl_keras.gp import engine, evolution
from ngl_keras.losses import expression as ex

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


def test_crossover_swaps_subtrees_and_keeps_nodes():
    rng = random.Random(3)
    a, b = ex.parse("p + y * 2"), ex.parse("sin(p) - exp(y)")
    for _ in range(50):
        c, d = engine.crossover(a, b, rng)
        assert len(c) + len(d) == len(a) + len(b)
        assert sorted(map(str, c + d)) == sorted(map(str, a + b))
        ex.compile_tree(c, ex.operator_functions(np))  # well formed
        ex.compile_tree(d, ex.operator_functions(np))


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


def test_subtree_mutation_replaces_one_subtree():
    rng = random.Random(7)
    tree = ex.parse("p * y + sin(p)")
    for _ in range(50):
        mutant = engine.subtree_mutation(tree, PSET, rng, LIMITS)
        ex.compile_tree(mutant, ex.operator_functions(np))
        assert engine.height(mutant) <= engine.height(tree) + LIMITS.mutation_max_height + 1


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
