"""The bi-tempered loss's claim on real Fashion-MNIST: robust to label noise where softmax cross entropy
is not. Symmetric noise on the training (and validation) labels, clean test labels, paired seeds, the
seed paper's table shape (noise 0.0-0.5 by rows, losses by columns).

    python benchmarks/label_noise.py            # 6 noise levels x 3 losses x 3 seeds, small_cnn
    python benchmarks/label_noise.py --quick    # a smoke run: 2 levels, 1 seed, 1 epoch, 1,024 images

Losses: CE (softmax cross entropy, the seed's "logistic"), bi-tempered (t1 0.5, t2 4.0: the seed's
setting for MNIST) and bi-tempered (t1 0.8, t2 1.2: the seed's other setting). Each noise level is one
grid through train_small's training path (OUT/noise-<level>/runs.jsonl, resumable; dataset setting
`label_noise`: exactly that share of the labels moved to another class chosen uniformly, the same
labels for every loss and seed). Settings are ours, sized for 2 CPU cores: small_cnn, the first
`--train` training images, `--epochs` epochs, configs/quick.yaml's optimizer and no augmentation
(so that the noise is the only difference between rows).

Prints the table (test accuracy %, mean ± std over seeds, and each bi-tempered column's paired
difference against CE with its 95 % interval) beside the seed's MNIST figures; the last line is JSON.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
LOSSES = ["ce", {"name": "bi_tempered", "label": "bt_0.5_4.0", "t1": 0.5, "t2": 4.0},
          {"name": "bi_tempered", "label": "bt_0.8_1.2", "t1": 0.8, "t2": 1.2}]
PAPER = "MNIST, 0.4 symmetric noise (the seed paper): logistic 97.64 %, bi-tempered (0.5, 4.0) 98.56 %"


def level_grid(level, args):
    return {"datasets": ["fashion_mnist"], "models": ["small_cnn"], "losses": LOSSES, "runs": args.seeds, "seed": 0,
            "weights": None,
            "settings": {"fashion_mnist": {
                "epochs": args.epochs, "image_size": 28, "batch_size": 128, "label_noise": level or None,
                "augmentation": {"horizontal_flip": False, "width_shift": 0.0, "height_shift": 0.0, "zoom": 0.0}}}}


def run_level(level, args):
    from ngl_keras import training
    from ngl_keras.grid import plan

    runs = sorted(plan(level_grid(level, args), ROOT / "configs", {"limit_train": args.train}), key=lambda r: r.run)
    return training.run_grid(runs, Path(args.out) / f"noise-{level:g}", strategy="none", verbose=0,
                             log=lambda *_: None)


def table(results):
    """{level: {loss: {"mean", "std", "values", "paired": {"mean", "half"}}}} in accuracy points."""
    from ngl_keras.report import mean_interval

    out = {}
    for level, records in results.items():
        by_loss = {}
        for record in records:
            if record["status"] == "ok":
                by_loss.setdefault(record["loss"], {})[record["run"]] = 100 * record["test_accuracy"]
        row = {}
        for loss, runs in by_loss.items():
            values = [runs[k] for k in sorted(runs)]
            cell = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "values": values}
            shared = sorted(set(runs) & set(by_loss.get("ce", {})))
            if loss != "ce" and len(shared) > 1:
                _, mean, half = mean_interval([runs[k] - by_loss["ce"][k] for k in shared])
                cell["paired"] = {"mean": mean, "half": half}
            row[loss] = cell
        out[level] = row
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label-noise"))
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=10000, help="training images (the first of train[:90%%])")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.seeds, args.epochs, args.train = [0.0, 0.4], 1, 1, 1024
    rows = table({level: run_level(level, args) for level in args.levels})
    labels = [loss if isinstance(loss, str) else loss["label"] for loss in LOSSES]
    print(f"\nsmall_cnn, Fashion-MNIST, {args.train} noisy training images, {args.epochs} epochs, {args.seeds} seeds: "
          "test accuracy % on clean labels (mean ± std; bi-tempered: paired difference against CE ± 95 % half-width)")
    print(f"{'noise':<7}" + "".join(f"{label:>30}" for label in labels))
    for level, row in rows.items():
        cells = []
        for label in labels:
            cell = row.get(label)
            text = "–" if cell is None else f"{cell['mean']:.2f} ± {cell['std']:.2f}"
            if cell and "paired" in cell:
                text += f" ({cell['paired']['mean']:+.2f} ± {cell['paired']['half']:.2f})"
            cells.append(f"{text:>30}")
        print(f"{level:<7g}" + "".join(cells))
    print(PAPER)
    print(json.dumps({f"{level:g}": row for level, row in rows.items()}))


if __name__ == "__main__":
    main()
