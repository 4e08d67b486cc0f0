"""What a search candidate costs beyond its training: today's path against the model compiled once.

    python benchmarks/candidate_cost.py            # ≈ 4 min on a loaded 2-core CPU
    python benchmarks/candidate_cost.py --candidates 3 --limit-train 1024   # a smoke run

The fitness of configs/search/exp2_proxy.yaml (small_cnn on Fashion-MNIST, 3,000 validation
images), shortened to `--epochs` × `--limit-train` images and `--runs` runs, in this process
(recycle_every 0), for the same `--candidates` formulas (CE and NGL written as formulas, then the
engine's random trees):

1. today's path (fitness compiled_once: false): `training.train_run` per run, the model built,
   compiled and traced again for every candidate;
2. the model compiled once per run (compiled_once: true, `gp.compiled_training`): the first
   candidate pays the set-up, the later ones restore weights and optimizer state;
3. pure training: a bare `model.fit` (with the same validation) of the same model, data and steps,
   its step already traced, once per run: what a candidate cannot cost less than.
4. memory: resident set size over `--memory-candidates` candidates of a tiny version (256 images,
   1 run) on the compiled-once path: whether it grows per candidate.

Prints seconds per candidate, the ratio candidate / pure training after the first candidate (goal
≤ 1.3), candidates per hour of each path and peak RSS; the last line is JSON.
"""

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fitness_settings(args, **changes):
    from ngl_keras.gp import search_settings

    cfg = search_settings.load_config(ROOT / "configs" / "search" / "exp2_proxy.yaml",
                                      {"epochs": args.epochs, "limit_train": args.limit_train})
    return cfg.fitness.replace(recycle_every=0, runs=args.runs, references=[], **changes)


def candidates(count, seed=0):
    """CE and NGL as formulas, then random trees of the engine's initial population."""
    from ngl_keras.formula import to_text
    from ngl_keras.gp import engine

    pset = engine.PrimitiveSet(operators=("add", "sub", "mul", "div", "sqrt", "log", "exp", "sin", "cos"),
                               variables=("p", "y"), required=("p", "y"))
    rng = random.Random(seed)
    trees = [to_text(engine.ramped_half_and_half(pset, rng, engine.Limits())) for _ in range(count)]
    return (["0 - y*log(p)", "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"] + trees)[:count]


def seconds_per_candidate(settings, formulas, directory):
    """Seconds of each candidate's fitness (in order) and its value ("failed" when it diverged)."""
    from ngl_keras.gp import fitness
    from ngl_keras.gp.evolution import CandidateFailed

    evaluate = fitness.TrainingFitness(settings, ROOT / "configs", directory)
    seconds, values = [], []
    for formula in formulas:
        start = time.perf_counter()
        try:
            values.append(round(evaluate(formula)[0], 4))
        except CandidateFailed:
            values.append("failed")
        seconds.append(time.perf_counter() - start)
    return seconds, values


def pure_training_seconds(settings, directory):
    """Seconds of the bare fits of one candidate's runs (CE as a formula), each run's step traced
    by an untimed fit first."""
    import keras

    from ngl_keras import grid, recipe, tasks
    from ngl_keras.gp import fitness

    trainer = fitness._Trainer(settings, str(ROOT / "configs"), directory, None, 0)
    runs = grid.plan({**trainer.grid, "losses": ["0 - y*log(p)"]}, ROOT / "configs", trainer.overrides)
    total = 0.0
    for run in runs:
        keras.utils.set_random_seed(run.seed)
        loss = run.loss.build()
        train, validation, _ = trainer.datasets.pipelines(run, 1, test=False)
        model = tasks.get(run.task).build_model(run, train)
        model.compile(optimizer=recipe.optimizer(run.settings), loss=loss, metrics=["accuracy"], jit_compile="auto")
        fit = dict(validation_data=validation, epochs=run.settings.epochs, shuffle=False, verbose=0)
        model.fit(train, **fit)
        start = time.perf_counter()
        model.fit(train, **fit)
        total += time.perf_counter() - start
    return total


def resident_mb():
    """This process's resident set size now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def memory_over_candidates(args, directory):
    """RSS (MB) after candidates 1, 10, 25 and `--memory-candidates` of a tiny compiled-once fitness."""
    from ngl_keras.gp import fitness
    from ngl_keras.gp.evolution import CandidateFailed

    tiny = argparse.Namespace(**{**vars(args), "limit_train": 256, "runs": 1})
    evaluate = fitness.TrainingFitness(fitness_settings(tiny), ROOT / "configs", directory)
    formulas = candidates(args.memory_candidates, seed=1)
    marks = {1, 10, 25, args.memory_candidates}
    rss = {}
    for k, formula in enumerate(formulas, 1):
        try:
            evaluate(formula)
        except CandidateFailed:
            pass
        if k in marks:
            rss[k] = round(resident_mb(), 1)
    return rss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit-train", type=int, default=4096)
    parser.add_argument("--memory-candidates", type=int, default=50)
    args = parser.parse_args()
    import keras

    formulas = candidates(args.candidates)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        old, old_values = seconds_per_candidate(fitness_settings(args, compiled_once=False), formulas, root / "old")
        print(f"today's path, seconds per candidate: {[round(s, 1) for s in old]}", flush=True)
        new, new_values = seconds_per_candidate(fitness_settings(args), formulas, root / "new")
        print(f"compiled once, seconds per candidate: {[round(s, 1) for s in new]}", flush=True)
        pure = pure_training_seconds(fitness_settings(args), str(root / "pure"))
        rss = memory_over_candidates(args, root / "memory")
    later_old, later_new = statistics.median(old[1:]), statistics.median(new[1:])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"backend {keras.backend.backend()}; {args.candidates} candidates x {args.runs} runs x {args.epochs} "
          f"epoch(s) x {args.limit_train} images (+ validation)")
    print(f"{'candidate':>10}{'today s':>10}{'once s':>10}  fitness today / once")
    for k, (a, b, va, vb) in enumerate(zip(old, new, old_values, new_values)):
        print(f"{k:>10}{a:>10.1f}{b:>10.1f}  {va} / {vb}")
    print(f"pure training of one candidate's runs: {pure:.1f} s")
    print(f"after the first candidate (median): today {later_old:.1f} s = {later_old / pure:.2f}x pure training; "
          f"compiled once {later_new:.1f} s = {later_new / pure:.2f}x (goal <= 1.3)")
    print(f"candidates per hour: today {3600 / later_old:.0f}, compiled once {3600 / later_new:.0f} "
          f"({later_old / later_new:.2f}x)")
    print(f"RSS over {args.memory_candidates} tiny candidates (MB, after candidate k): {rss}; peak RSS of this "
          f"process {peak:.0f} MB")
    print(json.dumps({"backend": keras.backend.backend(), "seconds_today": [round(s, 2) for s in old],
                      "seconds_compiled_once": [round(s, 2) for s in new], "pure_training_s": round(pure, 2),
                      "ratio_today": round(later_old / pure, 3), "ratio_compiled_once": round(later_new / pure, 3),
                      "per_hour_today": round(3600 / later_old), "per_hour_compiled_once": round(3600 / later_new),
                      "fitness_today": old_values, "fitness_compiled_once": new_values,
                      "rss_mb_after_candidate": rss, "peak_rss_mb": round(peak)}))


if __name__ == "__main__":
    main()
