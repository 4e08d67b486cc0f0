"""Koza's quartic symbolic regression: ngl_keras's GP engine against DEAP's standard tree GP.

    python benchmarks/gp_vs_deap.py --quick     # 8 seeds, < 2 minutes on 2 CPU cores
    python benchmarks/gp_vs_deap.py             # 30 seeds

Target x^4 + x^3 + x^2 + x on 20 points in [-1, 1]; success = every point within 0.01 (Koza's
hits). Both get the same budget (population 200 x 30 generations), the same primitives
(+, -, *, protected /, sin, cos, exp, protected log; the protected operators are the package's
own numpy definitions, given to both), no constants, ramped half-and-half initialisation of
height 2-4, tournaments of 3, crossover 0.9, mutation 0.1. DEAP runs `eaSimple` (generational,
one-point crossover, uniform mutation, height limit 17); ours runs (mu+lambda) truncation with
the archive, max size 100. Needs `pip install deap` (benchmark only).
The last line is JSON: {"success_rate": {"ngl_keras": ..., "deap": ...}, ...}.
"""

import argparse
import json
import operator
import random
import statistics
import time

import numpy as np

from ngl_keras.gp import engine, evolution
from ngl_keras import formula as ex

POPULATION, GENERATIONS = 200, 30
X = np.linspace(-1, 1, 20)
TARGET = X**4 + X**3 + X**2 + X
NUMPY = ex.operator_functions(np)
OPERATORS = ("add", "sub", "mul", "div", "sin", "cos", "exp", "log")


def errors(values):
    values = np.broadcast_to(values, X.shape)
    e = np.abs(values - TARGET)
    return e if np.all(np.isfinite(e)) else None


def ours(seed):
    history = []

    def fitness(text):
        with np.errstate(all="ignore"):
            e = errors(ex.compile_tree(ex.parse(text, variables=("x",)), NUMPY)({"x": X}))
        return [evolution.WORST] if e is None else [float(e.sum()) + (0.0 if np.all(e < 0.01) else 1.0)]

    pset = engine.PrimitiveSet(OPERATORS, ("x",), required=("x",), constant_probability=0.0)
    evo = evolution.Evolution(pset, engine.Limits(min_height=2, init_max_height=4),
                              engine.Rates(crossover=0.9, subtree_mutation=0.1, point_mutation=0.0,
                                           tournament_size=3),
                              POPULATION, GENERATIONS, seed=seed, on_generation=history.append)
    evolution.run_local(evo, fitness)
    for g in history:  # best < 1 means every point within 0.01 (the +1 penalty is gone)
        if g["best_fitness"][0] < 1.0:
            return g["generation"]
    return None


def deap_run(seed):
    from deap import algorithms, base, creator, gp, tools

    pset = gp.PrimitiveSet("MAIN", 1)
    for name in OPERATORS:
        pset.addPrimitive(NUMPY[name], ex.OPERATORS[name].arity, name=name)
    pset.renameArguments(ARG0="x")
    if not hasattr(creator, "FitnessMin"):
        creator.create("FitnessMin", base.Fitness, weights=(-1.0,))
        creator.create("Individual", gp.PrimitiveTree, fitness=creator.FitnessMin)
    toolbox = base.Toolbox()
    toolbox.register("expr", gp.genHalfAndHalf, pset=pset, min_=2, max_=4)
    toolbox.register("individual", tools.initIterate, creator.Individual, toolbox.expr)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)

    def evaluate(individual):
        with np.errstate(all="ignore"):
            e = errors(gp.compile(individual, pset)(X))
        return (evolution.WORST,) if e is None else (float(e.sum()) + (0.0 if np.all(e < 0.01) else 1.0),)

    toolbox.register("evaluate", evaluate)
    toolbox.register("select", tools.selTournament, tournsize=3)
    toolbox.register("mate", gp.cxOnePoint)
    toolbox.register("expr_mut", gp.genFull, min_=0, max_=2)
    toolbox.register("mutate", gp.mutUniform, expr=toolbox.expr_mut, pset=pset)
    for name in ("mate", "mutate"):
        toolbox.decorate(name, gp.staticLimit(key=operator.attrgetter("height"), max_value=17))
    random.seed(seed)
    population = toolbox.population(n=POPULATION)
    stats = tools.Statistics(lambda ind: ind.fitness.values[0])
    stats.register("min", min)
    _, logbook = algorithms.eaSimple(population, toolbox, 0.9, 0.1, GENERATIONS, stats=stats, verbose=False)
    for record in logbook:
        if record["min"] < 1.0:
            return record["gen"]
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = range(8 if args.quick else 30)
    results = {"ngl_keras": [], "deap": []}
    seconds = {"ngl_keras": 0.0, "deap": 0.0}
    for seed in seeds:
        for name, fn in (("ngl_keras", ours), ("deap", deap_run)):
            start = time.perf_counter()
            results[name].append(fn(seed))
            seconds[name] += time.perf_counter() - start
    out = {"success_rate": {}, "median_evaluations_to_success": {}, "seconds": {}}
    print(f"Koza quartic, {len(seeds)} seeds, population {POPULATION}, {GENERATIONS} generations")
    print(f"{'engine':<12}{'success rate':>14}{'median evals to success':>26}{'seconds':>10}")
    for name, generations in results.items():
        solved = [g for g in generations if g is not None]
        rate = len(solved) / len(generations)
        evals = statistics.median((g + 1) * POPULATION for g in solved) if solved else None
        out["success_rate"][name] = round(rate, 4)
        out["median_evaluations_to_success"][name] = evals
        out["seconds"][name] = round(seconds[name], 1)
        print(f"{name:<12}{rate:>14.2f}{str(evals):>26}{seconds[name]:>10.1f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
