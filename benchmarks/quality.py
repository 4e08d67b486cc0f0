"""Test accuracy of the losses on real Fashion-MNIST with small_cnn: mean ± std over seeds and
the Table 2 style change against CE, beside the paper's Fashion-MNIST column.

    python benchmarks/quality.py --quick    # 1 seed, 1 epoch on 2,048 images: about 2 minutes
    python benchmarks/quality.py            # 3 seeds, configs/quick.yaml's epochs, then 15 epochs

Runs go through train_small's grid (resumable: results in benchmarks/out/quality-*/runs.jsonl).
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

ROOT = Path(__file__).resolve().parent.parent
LOSSES = ["ce", "ngl", "focal", "sce", "anyloss_f1"]


def schedule(label, epochs, runs, limit, out_root):
    grid = config.grid(ROOT / "configs" / "quick.yaml")
    grid.update(losses=LOSSES, runs=runs)
    overrides = {"epochs": epochs, "limit_train": limit}
    runs_ = training.plan(grid, ROOT / "configs", overrides)
    records = training.run_grid(runs_, out_root / f"quality-{label}", strategy="none", verbose=0)
    accuracy = {}
    for loss in LOSSES:
        values = [r["test_accuracy"] for r in records if r["loss"] == loss and r["status"] == "ok"]
        accuracy[loss] = {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                          "runs": len(values)}
    print(f"\n{label}: {epochs} epochs, {runs} seeds, {'all' if limit is None else limit} training images")
    print(report.markdown(report.table(records), compare_paper=True))
    return accuracy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    if args.quick:
        results = {"quick": schedule("smoke", 1, 1, 2048, out)}
    else:
        quick_epochs = config.grid(ROOT / "configs" / "quick.yaml")["settings"]["fashion_mnist"]["epochs"]
        results = {"quick": schedule("quick", quick_epochs, 3, None, out),
                   "long": schedule("long", 15, 3, None, out)}
    last = results.get("long", results["quick"])
    print(json.dumps({"accuracy": last, "schedules": results}))


if __name__ == "__main__":
    main()
