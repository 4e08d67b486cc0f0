"""Screening a loss candidate: numpy forward-mode derivatives against the TensorFlow
GradientTape screen they replaced, on the same random trees.

    python benchmarks/screening_speed.py            # 200 trees
    python benchmarks/screening_speed.py --trees 50

The baseline is the previous `ngl_keras/gp/screening.py` itself, read from git (`--baseline`,
a commit whose screen used tf.GradientTape; needs TensorFlow). Trees: ramped half-and-half
over every operator, the smoke search's limits, seed 0. Both screens get each tree once in
turn, after one warm-up tree. Also reported: how often the two screens give the same verdict,
and whether their fingerprints group the passing trees the same way.
The last line is JSON: {"old_ms": ..., "new_ms": ..., "speedup": ..., "same_verdict": ...}.
"""

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ngl_keras.gp import engine, screening  # noqa: E402
from ngl_keras import formula  # noqa: E402

BASELINE = "21365ff9ee0a1cf95ce8db0c11653aa2855a2c99"  # the last commit with the GradientTape screen


def old_screening_module(commit):
    source = subprocess.run(["git", "show", f"{commit}:ngl_keras/gp/screening.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "screening_tape.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("screening_tape", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_trees(count, seed=0):
    pset = engine.PrimitiveSet(tuple(formula.OPERATORS), ("p", "y"), (-5.0, 5.0), ("p", "y"), 0.3)
    limits = engine.Limits(min_height=2, max_size=100, init_max_height=5)
    rng = random.Random(seed)
    return [engine.ramped_half_and_half(pset, rng, limits) for _ in range(count)]


def timed(screen, trees):
    seconds, results = [], []
    for tree in trees:
        started = time.perf_counter()
        results.append(screen(tree))
        seconds.append(time.perf_counter() - started)
    return results, seconds


def same_grouping(old, new):
    """Trees that pass both screens: equal old fingerprints ⇔ equal new fingerprints."""
    both = [(a[1], b[1]) for a, b in zip(old, new) if a[0] is None and b[0] is None]
    return all((a1 == a2) == (b1 == b2) for a1, b1 in both for a2, b2 in both)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--baseline", default=BASELINE, help="git commit of the GradientTape screen")
    args = parser.parse_args()
    trees = random_trees(args.trees + 1)
    old_screen = old_screening_module(args.baseline).LossScreen()
    new_screen = screening.LossScreen()
    for screen in (old_screen, new_screen):  # warm-up: TensorFlow's first ops, numpy's first call
        screen(trees[0])
    trees = trees[1:]
    old, old_s = timed(old_screen, trees)
    new, new_s = timed(new_screen, trees)
    same = sum(a[0] == b[0] for a, b in zip(old, new))
    for tree, a, b in zip(trees, old, new):
        if a[0] != b[0]:
            print(f"verdicts differ: tape {a[0]}, numpy {b[0]}: {formula.to_text(tree)}")
    old_ms, new_ms = 1000 * sum(old_s) / len(trees), 1000 * sum(new_s) / len(trees)
    print(f"{len(trees)} trees; GradientTape screen {old_ms:.1f} ms per tree, numpy screen "
          f"{new_ms:.2f} ms per tree: {old_ms / new_ms:.0f}x faster")
    print(f"same verdict for {same} of {len(trees)}; passing trees grouped alike by fingerprint: "
          f"{same_grouping(old, new)}")
    verdicts = {}
    for reason, _ in new:
        verdicts[str(reason)] = verdicts.get(str(reason), 0) + 1
    print(json.dumps({"trees": len(trees), "old_ms": round(old_ms, 2), "new_ms": round(new_ms, 3),
                      "speedup": round(old_ms / new_ms, 1), "same_verdict": same,
                      "same_grouping": same_grouping(old, new), "new_verdicts": verdicts}))


if __name__ == "__main__":
    main()
