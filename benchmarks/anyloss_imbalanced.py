"""AnyLoss against binary cross entropy on imbalanced binary problems made from real Fashion-MNIST:
the AnyLoss paper's claim (F1, G-mean and balanced accuracy higher when optimised directly, accuracy
about the same), measured with paired seeds.

    python benchmarks/anyloss_imbalanced.py                 # the claim: 3 problems x 4 losses x 3 seeds
    python benchmarks/anyloss_imbalanced.py --sweep         # why AnyLoss fails where it fails: batch size, L, lr
    python benchmarks/anyloss_imbalanced.py --quick         # a smoke run (1 problem, 1 seed, 1 epoch)

A problem is one class against the other nine, with its positives subsampled so that they are
`--positive-share` (5 %) of the training, validation and test images alike (train[:90%],
train[90%:] and test of the Debian package). The model is a small MLP ending in a two-way softmax,
which is the AnyLoss paper's one-sigmoid model (p₁ = sigmoid(z₁ − z₀)); CE on it is exactly binary
cross entropy and AnyLoss with average="binary" is exactly the paper's binary loss. Every run goes
through `ngl_keras.evaluate` (the grid's one training path; records resume after an interruption) and
its record holds F1, G-mean, balanced accuracy and accuracy of the test predictions. Paired: run r of
every loss starts from the same weights and sees the same batches.

Out: OUT/<problem>/runs.jsonl (one grid per problem; the sweep under OUT/sweep-<setting>/), then a
table per problem: mean ± std over seeds and the paired difference against BCE (absolute points, as
the AnyLoss paper reports) with its 95 % t interval; "collapsed" counts runs that predict one class only.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
PROBLEMS = (0, 5, 6)  # T-shirt/top, sandal, shirt (the hardest: confused with T-shirt, pullover and coat)
BINARY = {"average": "binary"}
LOSSES = [
    {"name": "ce", "label": "bce"},
    {"name": "anyloss_f1", "label": "anyloss_f1", **BINARY},
    {"name": "anyloss_gmean", "label": "anyloss_gmean", **BINARY},
    {"name": "anyloss_balanced_accuracy", "label": "anyloss_ba", **BINARY},
]
METRICS = ("test_f1", "test_gmean", "test_balanced_accuracy", "test_accuracy")
# the metric each AnyLoss optimises, the AnyLoss paper's pairing of loss and reported metric
OPTIMISES = {"anyloss_f1": "test_f1", "anyloss_gmean": "test_gmean", "anyloss_ba": "test_balanced_accuracy"}
PAPER = {"test_f1": (0.615, 0.727), "test_gmean": (0.666, 0.814), "test_balanced_accuracy": (0.771, 0.832),
         "test_accuracy": (0.894, 0.886)}  # BCE -> AnyLoss, mean over 102 tabular datasets (SPEC §2)


def imbalanced(images, labels, positive, share, seed):
    """(x, y): every image of the other classes (y = 0) and as many of class `positive` (y = 1) as
    make them `share` of the whole, chosen at random with `seed`; in the original order."""
    is_positive = labels == positive
    negatives = np.flatnonzero(~is_positive)
    wanted = int(round(share * len(negatives) / (1.0 - share)))
    chosen = np.random.default_rng(seed).choice(np.flatnonzero(is_positive), wanted, replace=False)
    keep = np.sort(np.concatenate([negatives, chosen]))
    return (images[keep].astype("float32") / 255.0).reshape(len(keep), -1), is_positive[keep].astype("int64")


def problem_arrays(positive, share, limit=None):
    from ngl_keras.data.readers import fashion_mnist_idx

    arrays = fashion_mnist_idx()
    if arrays is None:
        raise SystemExit("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist")
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    cut = int(0.9 * len(train_y))
    splits = {"train": (train_x[:cut], train_y[:cut]), "validation": (train_x[cut:], train_y[cut:]),
              "test": (test_x, test_y)}
    out = {}
    for k, (name, (x, y)) in enumerate(splits.items()):
        x, y = imbalanced(x, y, positive, share, seed=1000 + 10 * positive + k)
        if limit is not None and name == "train":
            x, y = x[:limit], y[:limit]
        out[name] = (x, y)
    return out


def mlp(num_classes):
    """The AnyLoss paper's kind of model: a small MLP; here on the 784 pixels, ending in a softmax."""
    import keras

    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(128, activation="relu"),
                             keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(num_classes, activation="softmax")], name="mlp")


def train(problem, losses, out, args, batch_size=None, learning_rate=None):
    import ngl_keras

    arrays = problem_arrays(problem, args.positive_share, args.limit)
    # no augmentation and no learning-rate schedule: a tabular-style MLP as in the AnyLoss paper
    settings = {"augmentation": {"horizontal_flip": False, "width_shift": 0.0, "height_shift": 0.0, "zoom": 0.0},
                "reduce_lr": None}
    return ngl_keras.evaluate(losses, mlp, arrays["train"], arrays["validation"], arrays["test"],
                              epochs=args.epochs, batch_size=batch_size or args.batch_size, runs=args.seeds,
                              seed=0, learning_rate=learning_rate or args.learning_rate, settings=settings,
                              out=out, name=f"fmnist_{problem}_vs_rest", strategy="none", log=lambda *_: None).records


def summary(records):
    """{loss: {metric: {"mean", "std", "values"}, "collapsed": n}} and paired differences against bce."""
    from ngl_keras.report import mean_interval

    by_loss = {}
    for record in records:
        if record["status"] == "ok":
            by_loss.setdefault(record["loss"], {})[record["run"]] = record
    rows = {}
    base = by_loss.get("bce", {})
    for loss, runs in by_loss.items():
        row = {"runs": len(runs), "collapsed": sum(r["test_positive_rate"] in (0.0, 1.0) for r in runs.values())}
        for metric in METRICS:
            values = [runs[k][metric] for k in sorted(runs)]
            row[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
            shared = sorted(set(runs) & set(base))
            if loss != "bce" and shared:
                pairs, mean, half = mean_interval([runs[k][metric] - base[k][metric] for k in shared])
                row[metric]["paired"] = {"mean": mean, "half": half, "pairs": pairs}
        rows[loss] = row
    return rows


def print_table(title, rows):
    print(f"\n{title}")
    print(f"{'loss':<14}" + "".join(f"{m.removeprefix('test_'):>34}" for m in METRICS) + f"{'collapsed':>11}")
    for loss, row in rows.items():
        cells = []
        for metric in METRICS:
            cell = f"{row[metric]['mean']:.3f} ± {row[metric]['std']:.3f}"
            paired = row[metric].get("paired")
            if paired:
                cell += (f" ({paired['mean']:+.3f} ± {paired['half']:.3f})" if paired["half"] is not None
                         else f" ({paired['mean']:+.3f})")
            cells.append(f"{cell:>34}")
        print(f"{loss:<14}" + "".join(cells) + f"{row['collapsed']:>7}/{row['runs']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anyloss-imbalanced"))
    parser.add_argument("--problems", type=int, nargs="+", default=list(PROBLEMS), help="positive classes")
    parser.add_argument("--positive-share", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=None, help="training images per problem (default: all)")
    parser.add_argument("--sweep", action="store_true", help="AnyLoss F1 under other batch sizes, L and rates")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.problems, args.seeds, args.epochs, args.limit = args.problems[:1], 1, 1, 4096
    out = Path(args.out)
    result = {}
    if args.sweep:
        problem = args.problems[0]
        f1_l10 = {**LOSSES[1], "name": "anyloss", "metric": "fbeta", "beta": 1.0, "L": 10.0}
        settings = {  # name: (losses, batch size, learning rate); batch 128, lr 1e-3, L 73 is the main table's
            "lr1e-4": ([LOSSES[0], LOSSES[1]], 128, 1e-4),
            "batch1024": ([LOSSES[0], LOSSES[1]], 1024, None),
            "L10": ([LOSSES[0], f1_l10], 128, None),
            "L10-lr1e-4": ([LOSSES[0], f1_l10], 128, 1e-4),
        }
        for name, (losses, batch_size, rate) in settings.items():
            records = train(problem, losses, out / f"sweep-{name}", args, batch_size, rate)
            rows = summary(records)
            print_table(f"sweep {name}: class {problem} ({CLASSES[problem]}) vs rest", rows)
            result[name] = rows
    else:
        for problem in args.problems:
            records = train(problem, LOSSES, out / f"class{problem}", args)
            rows = summary(records)
            print_table(f"class {problem} ({CLASSES[problem]}) vs rest, {100 * args.positive_share:g} % positives, "
                        f"{args.epochs} epochs, batch {args.batch_size}: mean ± std over seeds "
                        "(paired difference against BCE ± 95 % half-width)", rows)
            result[problem] = rows
        print("\nAnyLoss paper (102 tabular datasets, BCE -> AnyLoss): "
              + ", ".join(f"{m.removeprefix('test_')} {a:.3f} -> {b:.3f}" for m, (a, b) in PAPER.items()))
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
