"""The paper's Table 2 from runs.jsonl: CE's mean accuracy, every other loss as % change."""

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

SAME_BAND = 0.5  # a change within ±0.5 % counts as "same" (paper, Table 2)

# Paper, Table 2 (from scratch): CE accuracy %, others % change against CE.
PAPER_SCRATCH = {
    "datasets": ["malaria", "patch_camelyon", "colorectal_histology", "cifar10", "fashion_mnist",
                 "cifar100", "caltech101"],
    "ce": [94.0, 69.4, 88.9, 92.8, 94.0, 68.2, 72.5],
    "sce": [-0.06, 0.62, -0.45, -3.66, -2.42, -0.80, 2.71],
    "focal": [0.34, 1.03, 2.89, -0.64, -0.02, -2.14, -0.78],
    "ce_l2": [0.11, -0.64, 0.88, 0.32, 0.09, 0.38, 3.67],
    "ngl": [-0.27, 7.07, 1.77, 0.12, 0.07, 1.01, 5.00],
}
PAPER_MEAN = {"sce": -0.58, "focal": 0.10, "ce_l2": 0.69, "ngl": 2.11}
PAPER_PRETRAINED_CE = [96.7, 72.4, 90.5, 94.9, 94.6, 74.8, 84.5]


def percent_change(accuracy, baseline):
    """Relative change in %: 100 · (accuracy − CE) / CE."""
    return 100.0 * (accuracy - baseline) / baseline


def verdict(change):
    return "same" if abs(change) <= SAME_BAND else ("better" if change > 0 else "worse")


def table(records, baseline="ce"):
    """{"datasets", "rows": [{"loss", "cells": {dataset: value}, "mean", "counts"}], "diverged"}.

    Accuracies are averaged over runs and models (in %); CE's row holds accuracies, the
    others % change against CE on the same dataset.
    """
    accuracies = defaultdict(list)
    diverged = defaultdict(int)
    datasets, losses = [], []
    for record in records:
        for name, seen in ((record["dataset"], datasets), (record["loss"], losses)):
            if name not in seen:
                seen.append(name)
        if record["status"] == "ok":
            accuracies[record["loss"], record["dataset"]].append(100.0 * record["test_accuracy"])
        else:
            diverged[record["loss"], record["dataset"]] += 1
    mean = {key: float(np.mean(values)) for key, values in accuracies.items()}
    has_baseline = baseline in losses
    order = ([baseline] if has_baseline else []) + [name for name in losses if name != baseline]
    rows = []
    for loss in order:
        cells, counts = {}, {"better": 0, "same": 0, "worse": 0}
        for dataset in datasets:
            if (loss, dataset) not in mean:
                cells[dataset] = None
            elif loss == baseline or not has_baseline or (baseline, dataset) not in mean:
                cells[dataset] = mean[loss, dataset]
            else:
                cells[dataset] = percent_change(mean[loss, dataset], mean[baseline, dataset])
                counts[verdict(cells[dataset])] += 1
        values = [v for v in cells.values() if v is not None]
        relative = has_baseline and loss != baseline
        rows.append({"loss": loss, "cells": cells, "counts": counts if relative else None,
                     "mean": float(np.mean(values)) if relative and values else None,
                     "relative": relative})
    return {"datasets": datasets, "rows": rows, "baseline": baseline if has_baseline else None,
            "diverged": {f"{loss}/{dataset}": n for (loss, dataset), n in diverged.items()}}


def _fmt(value, relative):
    if value is None:
        return "–"
    return f"{value:+.2f}" if relative else f"{value:.1f}"


def markdown(result, compare_paper=False):
    datasets = result["datasets"]
    header = ["loss"] + datasets + ["Mean", "better/same/worse"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [_fmt(row["cells"][d], row["relative"]) for d in datasets]
        counts = row["counts"]
        tally = f"{counts['better']}/{counts['same']}/{counts['worse']}" if counts else ""
        lines.append("| " + " | ".join([row["loss"]] + cells + [_fmt(row["mean"], True) if row["relative"]
                                                                 else "", tally]) + " |")
        if compare_paper and row["loss"] in PAPER_SCRATCH:
            paper = [PAPER_SCRATCH[row["loss"]][PAPER_SCRATCH["datasets"].index(d)]
                     if d in PAPER_SCRATCH["datasets"] else None for d in datasets]
            relative = row["loss"] != "ce"
            lines.append("| " + " | ".join([f"{row['loss']} (paper)"] + [_fmt(v, relative) for v in paper]
                                           + [_fmt(PAPER_MEAN.get(row["loss"]), True) if relative else "", ""])
                         + " |")
    note = ("CE row: test accuracy % (mean over runs and models); other rows: % change against CE, "
            f"'same' within ±{SAME_BAND}.") if result["baseline"] else \
        "No CE in the grid: every row is test accuracy %."
    lines += ["", note]
    if result["diverged"]:
        lines.append("Diverged runs (left out of the means): " +
                     ", ".join(f"{k} ×{n}" for k, n in sorted(result["diverged"].items())))
    return "\n".join(lines)


def csv_text(result):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["loss", "kind"] + result["datasets"] + ["mean"])
    for row in result["rows"]:
        writer.writerow([row["loss"], "change_pct" if row["relative"] else "accuracy_pct"]
                        + ["" if row["cells"][d] is None else f"{row['cells'][d]:.4f}" for d in result["datasets"]]
                        + ["" if row["mean"] is None else f"{row['mean']:.4f}"])
    return out.getvalue()


def accuracy_curves(records, path):
    """PNG: validation accuracy per epoch, mean over runs and models, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in records})
    figure, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5 * max(len(datasets), 1), 3.5),
                                squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        curves = defaultdict(list)
        for r in records:
            if r["dataset"] == dataset and r["history"].get("val_accuracy"):
                curves[r["loss"]].append(r["history"]["val_accuracy"])
        for loss, runs in curves.items():
            length = min(len(c) for c in runs)
            mean = np.mean([c[:length] for c in runs], axis=0)
            axis.plot(range(1, length + 1), mean, marker="o", label=loss)
        axis.set_title(dataset)
        axis.set_xlabel("epoch")
        axis.set_ylabel("validation accuracy")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(records, out_dir, compare_paper=False):
    """Write table.md, table.csv and val_accuracy.png to `out_dir`; return the Markdown."""
    out_dir = Path(out_dir)
    result = table(records)
    text = markdown(result, compare_paper)
    (out_dir / "table.md").write_text(text + "\n")
    (out_dir / "table.csv").write_text(csv_text(result))
    if records:
        accuracy_curves(records, out_dir / "val_accuracy.png")
    return text
