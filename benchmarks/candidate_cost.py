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
   its step already traced, once per run: what a candidate cannot cost less than. It is measured
   right after every candidate of both paths, and each candidate is divided by the pure training
   next to it (the load of a shared machine drifts between the two paths' loops).
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


def seconds_per_candidate(settings, formulas, directory, pure=None):
    """Seconds of each candidate's fitness (in order) and its value ("failed" when it diverged); with
    `pure` (a `PureTraining`), also the pure training's seconds measured right after each candidate,
    so that a candidate and its yardstick share the machine's load of the moment."""
    from ngl_keras.gp import fitness
    from ngl_keras.gp.evolution import CandidateFailed

    evaluate = fitness.TrainingFitness(settings, ROOT / "configs", directory)
    seconds, values, yardstick = [], [], []
    for formula in formulas:
        start = time.perf_counter()
        try:
            values.append(round(evaluate(formula)[0], 4))
        except CandidateFailed:
            values.append("failed")
        seconds.append(time.perf_counter() - start)
        if pure is not None:
            yardstick.append(pure.seconds())
    return seconds, values, yardstick


class PureTraining:
    """The bare fits of one candidate's runs (CE as a formula, with the same validation), each run's
    model built, compiled and traced once: what a candidate cannot cost less than."""

    def __init__(self, settings, directory):
        import keras

        from ngl_keras import grid, recipe, tasks
        from ngl_keras.gp import fitness

        trainer = fitness._Trainer(settings, str(ROOT / "configs"), directory, None, 0)
        runs = grid.plan({**trainer.grid, "losses": ["0 - y*log(p)"]}, ROOT / "configs", trainer.overrides)
        self.fits = []
        for run in runs:
            keras.utils.set_random_seed(run.seed)
            loss = run.loss.build()
            train, validation, _ = trainer.datasets.pipelines(run, 1, test=False)
            model = tasks.get(run.task).build_model(run, train)
            model.compile(optimizer=recipe.optimizer(run.settings), loss=loss, metrics=["accuracy"],
                          jit_compile="auto")
            fit = dict(validation_data=validation, epochs=run.settings.epochs, shuffle=False, verbose=0)
            model.fit(train, **fit)  # traced here, untimed
            self.fits.append((model, train, fit))

    def seconds(self):
        start = time.perf_counter()
        for model, train, fit in self.fits:
            model.fit(train, **fit)
        return time.perf_counter() - start


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
        pure = PureTraining(fitness_settings(args), str(root / "pure"))
        old, old_values, old_pure = seconds_per_candidate(fitness_settings(args, compiled_once=False), formulas,
                                                          root / "old", pure)
        print(f"today's path, seconds per candidate: {[round(s, 1) for s in old]}", flush=True)
        new, new_values, new_pure = seconds_per_candidate(fitness_settings(args), formulas, root / "new", pure)
        print(f"compiled once, seconds per candidate: {[round(s, 1) for s in new]}", flush=True)
        print(f"pure training after each: {[round(s, 1) for s in old_pure]} / {[round(s, 1) for s in new_pure]}",
              flush=True)
        rss = memory_over_candidates(args, root / "memory")
    later_old, later_new = statistics.median(old[1:]), statistics.median(new[1:])
    # each candidate against the pure training measured right after it, then the median of those ratios
    ratio_old = statistics.median(a / b for a, b in zip(old[1:], old_pure[1:]))
    ratio_new = statistics.median(a / b for a, b in zip(new[1:], new_pure[1:]))
    pure_s = statistics.median(old_pure[1:] + new_pure[1:])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"backend {keras.backend.backend()}; {args.candidates} candidates x {args.runs} runs x {args.epochs} "
          f"epoch(s) x {args.limit_train} images (+ validation)")
    print(f"{'candidate':>10}{'today s':>10}{'pure s':>8}{'once s':>10}{'pure s':>8}  fitness today / once")
    for k, (a, pa, b, pb, va, vb) in enumerate(zip(old, old_pure, new, new_pure, old_values, new_values)):
        print(f"{k:>10}{a:>10.1f}{pa:>8.1f}{b:>10.1f}{pb:>8.1f}  {va} / {vb}")
    print(f"pure training of one candidate's runs (median): {pure_s:.1f} s")
    print(f"after the first candidate (median of candidate / the pure training right after it): today "
          f"{later_old:.1f} s, {ratio_old:.2f}x; compiled once {later_new:.1f} s, {ratio_new:.2f}x (goal <= 1.3)")
    print(f"candidates per hour: today {3600 / later_old:.0f}, compiled once {3600 / later_new:.0f} "
          f"({later_old / later_new:.2f}x)")
    print(f"RSS over {args.memory_candidates} tiny candidates (MB, after candidate k): {rss}; peak RSS of this "
          f"process {peak:.0f} MB")
    print(json.dumps({"backend": keras.backend.backend(), "seconds_today": [round(s, 2) for s in old],
                      "seconds_compiled_once": [round(s, 2) for s in new], "pure_training_s": round(pure_s, 2),
                      "pure_after_today": [round(s, 2) for s in old_pure],
                      "pure_after_compiled_once": [round(s, 2) for s in new_pure],
                      "ratio_today": round(ratio_old, 3), "ratio_compiled_once": round(ratio_new, 3),
                      "per_hour_today": round(3600 / later_old), "per_hour_compiled_once": round(3600 / later_new),
                      "fitness_today": old_values, "fitness_compiled_once": new_values,
                      "rss_mb_after_candidate": rss, "peak_rss_mb": round(peak)}))


if __name__ == "__main__":
    main()
