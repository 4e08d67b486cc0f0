"""Candidates per hour when a search trains K candidates as one program (population-parallel).

    python benchmarks/population_parallel.py                    # ≈ 10 min on an idle 2-core CPU
    python benchmarks/population_parallel.py --sizes 1 4 --candidates 8 --limit-train 512   # a smoke run

The fitness of configs/search/exp2_proxy.yaml (small_cnn on Fashion-MNIST, 3,000 validation
images), shortened to `--epochs` × `--limit-train` images and one run, in this process, for the
same `--candidates` formulas (CE and NGL written as formulas, then the engine's random trees),
with `fitness.population_parallel` K for each K of `--sizes`: the candidates are trained K at a
time (`TrainingFitness.many`, as a search's worker trains a trial of K candidates). Each K first
trains one warm-up group (its model is built and its step compiled), then the timed pass over all
candidates. Prints seconds per candidate and candidates per hour of each K, the ratio against
K = 1 measured in the same run, and the largest difference of a candidate's fitness from K = 1's
(float noise: the same batches, the same initial weights); the last line is JSON.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from candidate_cost import candidates  # noqa: E402


def fitness_settings(args, population):
    from ngl_keras.gp import search_settings

    cfg = search_settings.load_config(ROOT / "configs" / "search" / "exp2_proxy.yaml",
                                      {"epochs": args.epochs, "limit_train": args.limit_train})
    return cfg.fitness.replace(recycle_every=0, runs=1, references=[], population_parallel=population)


def measure(args, population, formulas, directory):
    """(seconds per candidate of the timed pass, the fitness of each candidate or "failed")."""
    from ngl_keras.gp import fitness
    from ngl_keras.gp.evolution import CandidateFailed

    evaluate = fitness.TrainingFitness(fitness_settings(args, population), ROOT / "configs", directory)
    evaluate.many(formulas[:population])  # warm-up: the population model built, its step compiled
    start = time.perf_counter()
    outcomes = evaluate.many(formulas)
    seconds = (time.perf_counter() - start) / len(formulas)
    return seconds, [("failed" if isinstance(o, CandidateFailed) else round(o[0], 4)) for o in outcomes]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit-train", type=int, default=2048)
    args = parser.parse_args()
    import keras

    from ngl_keras.records import code_version

    formulas = candidates(args.candidates)
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for size in args.sizes:
            seconds, values = measure(args, size, formulas, Path(root) / str(size))
            results[size] = {"seconds_per_candidate": round(seconds, 3), "per_hour": round(3600 / seconds),
                             "fitness": values}
            print(f"K = {size}: {seconds:.2f} s per candidate, {3600 / seconds:.0f} candidates per hour", flush=True)
    base = results[args.sizes[0]]
    print(f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs; {args.candidates} candidates x 1 run x "
          f"{args.epochs} epoch(s) x {args.limit_train} images (+ 3,000 validation); code {code_version()}")
    print(f"{'K':>4}{'s/candidate':>13}{'per hour':>10}{'vs K=' + str(args.sizes[0]):>9}{'max |fitness diff|':>20}")
    for size, r in results.items():
        diffs = [abs(a - b) for a, b in zip(r["fitness"], base["fitness"]) if "failed" not in (a, b)]
        same_failures = [a == "failed" for a in r["fitness"]] == [b == "failed" for b in base["fitness"]]
        r["speed_up"] = round(base["seconds_per_candidate"] / r["seconds_per_candidate"], 3)
        r["max_fitness_difference"] = round(max(diffs, default=0.0), 4)
        r["same_failures"] = same_failures
        print(f"{size:>4}{r['seconds_per_candidate']:>13.2f}{r['per_hour']:>10}{r['speed_up']:>8.2f}x"
              f"{r['max_fitness_difference']:>20.4f}{'' if same_failures else '  (other candidates failed)'}")
    print(json.dumps({"backend": keras.backend.backend(), "code": code_version(), "candidates": args.candidates,
                      "epochs": args.epochs, "limit_train": args.limit_train,
                      "results": {str(k): v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
