"""Set-up per candidate: a new model and compiled step per formula (ExpressionLoss) against one
model compiled once whose formula is swapped (InterpretedLoss.set_formula).

    python benchmarks/interpreter_compile.py                 # 10 trees, small_cnn 28x28x1, batch 128
    KERAS_BACKEND=jax python benchmarks/interpreter_compile.py

For each of `--trees` random trees of the search's operators (gp.engine's ramped half-and-half):
(a) build the small CNN, compile it (jit_compile=True) with ExpressionLoss, train one step; (b) on
one model built and compiled once with InterpretedLoss (its first step is reported apart), swap
the formula and train one step. Then the step time of each path (median over `--steps` steps of
the last candidate): the interpreter's per-step overhead. Prints the figures and the ratios.
"""

import argparse
import datetime
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package of this checkout

import ngl_keras  # noqa: E402,F401  (first: it loads Keras with the frameworks' start-up banners filtered)
from ngl_keras import models  # noqa: E402
from ngl_keras.formula import to_text  # noqa: E402
from ngl_keras.gp import engine  # noqa: E402
from ngl_keras.gp.interpreter import InterpretedLoss  # noqa: E402
from ngl_keras.losses.expression import ExpressionLoss  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

OPERATORS = ("add", "sub", "mul", "div", "sqrt", "log", "exp", "sin", "cos")  # configs/search/defaults.yaml


def candidates(count, seed):
    pset = engine.PrimitiveSet(operators=OPERATORS, variables=("p", "y"), required=("p", "y"))
    rng = random.Random(seed)
    return [engine.ramped_half_and_half(pset, rng, engine.Limits()) for _ in range(count)]


def build(loss):
    keras.utils.set_random_seed(0)
    model = models.build_model("small_cnn", 10, 28, channels=1)
    if isinstance(loss, InterpretedLoss):
        model.loss_program = loss.program
    model.compile(optimizer="adam", loss=loss, jit_compile=True)
    return model


def timed_step(model, x, y):
    start = time.perf_counter()
    float(np.asarray(model.train_on_batch(x, y)))  # the step has finished
    return time.perf_counter() - start


def step_time(model, x, y, steps):
    return statistics.median(timed_step(model, x, y) for _ in range(steps))


def per_candidate_compile(trees, x, y, steps):
    """(a): seconds to build, compile and train one step, per candidate; the last one's step time."""
    seconds = []
    for tree in trees:
        keras.backend.clear_session()
        start = time.perf_counter()
        model = build(ExpressionLoss(to_text(tree)))
        timed_step(model, x, y)
        seconds.append(time.perf_counter() - start)
    return seconds, step_time(model, x, y, steps)


def one_compiled_program(trees, x, y, steps):
    """(b): the first candidate's build+compile+step, then set_formula + one step per candidate."""
    keras.backend.clear_session()
    start = time.perf_counter()
    loss = InterpretedLoss(to_text(trees[0]))
    model = build(loss)
    timed_step(model, x, y)
    first = time.perf_counter() - start
    seconds = []
    for tree in trees[1:]:
        start = time.perf_counter()
        loss.set_formula(tree)
        timed_step(model, x, y)
        seconds.append(time.perf_counter() - start)
    return first, seconds, step_time(model, x, y, steps)


def revision():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps timed for the step time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"commit {revision()}, {datetime.datetime.now().isoformat(timespec='seconds')}, "
          f"backend {keras.backend.backend()}, small_cnn 28x28x1, batch {args.batch_size}, "
          f"{args.trees} trees, jit_compile=True")
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(size=(args.batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, args.batch_size)
    trees = candidates(args.trees, args.seed)
    print("trees: " + "; ".join(to_text(t, digits=3) for t in trees[:3]) + " ...")
    print(f"tree sizes: {[len(t) for t in trees]}")

    compiled, expression_step = per_candidate_compile(trees, x, y, args.steps)
    first, swapped, interpreter_step = one_compiled_program(trees, x, y, args.steps)

    median_compiled, median_swapped = statistics.median(compiled), statistics.median(swapped)
    print(f"(a) ExpressionLoss, build+compile+step per candidate: median {median_compiled:.3f} s, "
          f"total {sum(compiled):.1f} s for {len(compiled)}")
    print(f"(b) InterpretedLoss, first candidate build+compile+step: {first:.3f} s; then set_formula+step "
          f"per candidate: median {median_swapped:.4f} s, total {first + sum(swapped):.1f} s for {len(compiled)}")
    print(f"set-up per candidate, (a)/(b) after the first: {median_compiled / median_swapped:.0f}x; "
          f"all {len(compiled)} candidates: {sum(compiled) / (first + sum(swapped)):.1f}x")
    print(f"step time: ExpressionLoss {expression_step * 1000:.1f} ms, InterpretedLoss "
          f"{interpreter_step * 1000:.1f} ms: interpreter/expression {interpreter_step / expression_step:.2f}x")


if __name__ == "__main__":
    main()
