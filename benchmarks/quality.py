"""Test accuracy of the losses on real Fashion-MNIST with small_cnn: mean ± std over seeds and
the Table 2 style change against CE, beside the paper's Fashion-MNIST column.

    python benchmarks/quality.py --quick    # 1 seed, 1 epoch on 2,048 images: about 2 minutes
    python benchmarks/quality.py            # 3 seeds, configs/quick.yaml's epochs, then 15 epochs
    python benchmarks/quality.py --seeds 5 --long-epochs 30
    python benchmarks/quality.py --long-only --seeds 10 --losses ce ngl --out benchmarks/results
        # the paired comparison of issue 21: 10 seeds of CE and NGL at 15 epochs (seed by seed)

Runs go through train_small's grid (resumable: results in benchmarks/out/quality-*/runs.jsonl),
seed by seed (every loss of seed 0, then of seed 1, ...), so that a stopped benchmark has
paired comparisons for the seeds it finished; run it again to go on.
No target on the outcome: it reports what it is. The last line is JSON:
{"accuracy": {"<loss>": {"mean": ..., "std": ...}}, ...}.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ngl_keras import config, report, training  # noqa: E402
from ngl_keras.grid import plan  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOSSES = ["ce", "ngl", "focal", "sce", "anyloss_f1"]


def schedule(label, epochs, runs, limit, out_root, losses=LOSSES):
    grid = config.grid(ROOT / "configs" / "quick.yaml")
    grid.update(losses=losses, runs=runs)
    overrides = {"epochs": epochs, "limit_train": limit}
    runs_ = sorted(plan(grid, ROOT / "configs", overrides), key=lambda r: r.run)  # stable: losses stay in order
    records = training.run_grid(runs_, out_root / f"quality-{label}", strategy="none", verbose=0)
    accuracy = {}
    for loss in losses:
        values = [r["test_accuracy"] for r in records if r["loss"] == loss and r["status"] == "ok"]
        accuracy[loss] = {"mean": round(float(np.mean(values)), 4) if values else None,
                          # sample standard deviation over seeds (0 for a single seed)
                          "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0,
                          "runs": len(values),
                          "diverged": sum(r["loss"] == loss and r["status"] != "ok" for r in records)}
    print(f"\n{label}: {epochs} epochs, {runs} seeds, {'all' if limit is None else limit} training images")
    print(f"{'loss':<12}{'test accuracy % (mean ± std)':>30}{'runs':>6}{'diverged':>10}")
    for loss, a in accuracy.items():
        cell = "–" if a["mean"] is None else f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}"
        print(f"{loss:<12}{cell:>30}{a['runs']:>6}{a['diverged']:>10}")
    print(report.markdown(report.table(records), compare_paper=True))
    return accuracy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per loss and schedule (default 3)")
    parser.add_argument("--long-epochs", type=int, default=15, help="epochs of the longer schedule (default 15)")
    parser.add_argument("--losses", nargs="+", default=LOSSES, help=f"registered losses (default {' '.join(LOSSES)})")
    parser.add_argument("--long-only", action="store_true", help="the longer schedule only")
    args = parser.parse_args()
    if args.seeds < 1 or args.long_epochs < 1:
        parser.error(f"--seeds and --long-epochs must be >= 1; got {args.seeds} and {args.long_epochs}")
    out = Path(args.out)
    if args.quick:
        results = {"quick": schedule("smoke", 1, 1, 2048, out, args.losses)}
    elif args.long_only:
        results = {"long": schedule(f"long{args.long_epochs}", args.long_epochs, args.seeds, None, out, args.losses)}
    else:
        quick_epochs = config.grid(ROOT / "configs" / "quick.yaml")["settings"]["fashion_mnist"]["epochs"]
        results = {"quick": schedule("quick", quick_epochs, args.seeds, None, out, args.losses),
                   "long": schedule(f"long{args.long_epochs}", args.long_epochs, args.seeds, None, out, args.losses)}
    last = results.get("long", results.get("quick"))
    print(json.dumps({"accuracy": last, "schedules": results}))


if __name__ == "__main__":
    main()
