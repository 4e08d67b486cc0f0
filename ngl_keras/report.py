"""The paper's Table 2 (or B.2.2) from runs.jsonl: CE's mean accuracy, every other loss as %
change; the published tables beside it; and how far a difference can be trusted (the paired
difference against CE over shared seeds, its 95 % interval, and the spread between runs)."""

import csv
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ngl_keras.files import atomic_savefig, atomic_write

SAME_BAND = 0.5  # a change within ±0.5 % counts as "same" (paper, Table 2)

# The paper's tables, as published: CE's row in accuracy %, every other row in % change
# against CE, and each row's published Mean over the seven datasets. f1-f4 are the other
# functions the search found (formulas not published); f5 was renamed NGL.
PAPER_DATASETS = ["malaria", "patch_camelyon", "colorectal_histology", "cifar10", "fashion_mnist",
                  "cifar100", "caltech101"]


@dataclass(frozen=True)
class PaperTable:
    title: str
    ce: list
    changes: dict  # loss label -> the seven % changes, in PAPER_DATASETS order
    means: dict    # loss label -> the published Mean (four of B.2.2 differ from their row's mean by 0.01-0.02)

    def row(self, loss):
        return self.ce if loss == "ce" else self.changes.get(loss)


PAPER_TABLES = {
    "scratch": PaperTable(
        "Table 2 (trained from scratch)",
        ce=[94.0, 69.4, 88.9, 92.8, 94.0, 68.2, 72.5],
        changes={
            "sce": [-0.06, 0.62, -0.45, -3.66, -2.42, -0.80, 2.71],
            "focal": [0.34, 1.03, 2.89, -0.64, -0.02, -2.14, -0.78],
            "ce_l2": [0.11, -0.64, 0.88, 0.32, 0.09, 0.38, 3.67],
            "f1": [-0.27, 0.81, 3.27, -0.34, 0.31, -0.84, -3.67],
            "f2": [-0.09, 2.89, -7.56, -0.81, 0.04, 0.60, -3.61],
            "f3": [-27.98, 3.24, -62.45, -1.79, -0.48, -59.36, -41.67],
            "f4": [-0.21, -0.13, -1.98, -0.14, 0.00, -0.32, -6.49],
            "ngl": [-0.27, 7.07, 1.77, 0.12, 0.07, 1.01, 5.00],
        },
        means={"sce": -0.58, "focal": 0.10, "ce_l2": 0.69, "f1": -0.10, "f2": -1.22, "f3": -27.21,
               "f4": -1.32, "ngl": 2.11}),
    "pretrained": PaperTable(
        "Table B.2.2 (fine-tuned from ImageNet weights)",
        ce=[96.7, 72.4, 90.5, 94.9, 94.6, 74.8, 84.5],
        changes={
            "sce": [0.11, -0.83, -2.13, -2.12, -1.82, -1.25, -0.02],
            "focal": [0.15, 3.86, 2.44, 0.35, 0.08, -3.18, 0.52],
            "ce_l2": [0.34, 0.73, -2.77, 0.50, -0.08, -0.23, -1.19],
            "f1": [0.20, 7.90, 5.33, -1.33, -0.17, 2.89, -0.33],
            "f2": [-0.09, 8.62, 4.54, 0.19, 0.09, 4.79, 0.10],
            "f3": [-2.13, 0.51, -50.96, 1.74, -0.04, 4.98, 5.59],
            "f4": [-0.04, 8.10, 3.03, 0.02, -0.13, 6.78, 5.47],
            "ngl": [-0.26, 7.07, 5.01, -0.37, -0.30, 5.29, 3.45],
        },
        means={"sce": -1.13, "focal": 0.58, "ce_l2": -0.39, "f1": 2.06, "f2": 2.61, "f3": -5.76,
               "f4": 3.33, "ngl": 2.84}),
}


# Paper, Table 3 (SPEC §7): ImageNet-1k top-1 (%), absolute, per model and loss; "original": the
# architecture's published number († in the paper's ResNet rows, unexplained in our copy).
TABLE3_LOSSES = ["original", "ce", "sce", "focal", "ngl"]
TABLE3 = {
    "resnet101": [78.25, 76.55, 77.21, 75.68, 78.38],
    "resnet152": [78.57, 76.92, 77.51, 76.06, 78.99],
    "swin_t": [81.3, 81.19, 78.79, 77.68, 81.25],
    "swin_s": [83.0, 83.1, 80.68, 79.16, 83.0],
}


def is_imagenet(dataset):
    return dataset.split("/")[0].split(":")[0] in ("imagenet2012", "imagenet2012_subset")


def imagenet_table(records, metric="top1"):
    """Markdown: Table 3's layout (a row per model, a column per loss, absolute top-1 %), ours (mean over
    runs) with the paper's row below each model the paper reports."""
    ok = [r for r in records if r["status"] == "ok" and r.get(metric) is not None and is_imagenet(r["dataset"])]
    models = list(dict.fromkeys(r["model"] for r in ok))
    losses = list(dict.fromkeys(r["loss"] for r in ok))
    columns = ["original"] + [loss for loss in TABLE3_LOSSES[1:] if loss in losses] + \
        [loss for loss in losses if loss not in TABLE3_LOSSES]
    lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for model in models:
        cells = []
        for loss in columns:
            values = [100.0 * r[metric] for r in ok if r["model"] == model and r["loss"] == loss]
            cells.append(f"{np.mean(values):.2f}" if values else "")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
        if model in TABLE3:
            paper = dict(zip(TABLE3_LOSSES, TABLE3[model]))
            lines.append(f"| {model} (paper) | " + " | ".join(f"{paper[c]:.2f}" if c in paper else ""
                                                              for c in columns) + " |")
    lines += ["", f"ImageNet-1k {metric} % on the validation images (absolute, as the paper's Table 3); "
                  "'original': the architecture's published number."]
    return "\n".join(lines)


def paper_table_for(weights):
    """(PaperTable, sentence) to compare records trained with `weights` (the set of values
    in the records) with: Table 2 for null, Table B.2.2 for pre-trained weights."""
    weights = set(weights)
    if len(weights) > 1:
        shown = ", ".join(sorted("null" if w is None else str(w) for w in weights))
        raise ValueError(f"the records mix from-scratch and pre-trained runs (weights: {shown}); the paper "
                         "compares them in separate tables: report each from its own output directory.")
    if weights == {None} or not weights:
        return PAPER_TABLES["scratch"], "Paper: Table 2 (trained from scratch), as these runs (weights: null)."
    (name,) = weights
    return PAPER_TABLES["pretrained"], (f"Paper: Table B.2.2 (fine-tuned from ImageNet weights), as these runs "
                                        f"(weights: {name}).")


def paper_mean(paper, loss, datasets):
    """The paper's Mean of `loss` over `datasets`: the published value when all seven were
    run, else the mean of the paper's cells on those datasets (None without any)."""
    row = paper.row(loss)
    if row is None or loss == "ce":
        return None
    if set(datasets) == set(PAPER_DATASETS):
        return paper.means[loss]
    cells = [row[PAPER_DATASETS.index(d)] for d in datasets if d in PAPER_DATASETS]
    return float(np.mean(cells)) if cells else None


def percent_change(accuracy, baseline):
    """Relative change in %: 100 · (accuracy − CE) / CE; None when CE's is 0 (no relative change;
    a mean IoU can be 0 after a short run)."""
    return None if baseline == 0 else 100.0 * (accuracy - baseline) / baseline


@dataclass(frozen=True)
class Metric:
    """How a record's metric reads: its words, whether a higher value is better (accuracy, mean IoU)
    or a lower one (NLL, ECE), and whether it is a fraction shown in % (NLL is not)."""
    label: str
    higher_is_better: bool = True
    fraction: bool = True


METRICS = {
    "test_accuracy": Metric("test accuracy"),
    "top1": Metric("top1"),
    "test_nll": Metric("test_nll", higher_is_better=False, fraction=False),
    "test_ece": Metric("test_ece", higher_is_better=False),
    "test_mean_confidence": Metric("test_mean_confidence"),   # neither better nor worse: read with ECE
    "test_f1": Metric("test F1 (class 1)"),                      # two-class problems (tasks.binary_scores)
    "test_gmean": Metric("test G-mean"),
    "test_balanced_accuracy": Metric("test balanced accuracy"),
    "miou": Metric("miou"),
    "pixel_accuracy": Metric("pixel_accuracy"),
    "mean_accuracy": Metric("mean_accuracy"),
    "frequency_weighted_iou": Metric("frequency_weighted_iou"),
}


def metric_info(metric):
    """The `Metric` of a record's key (an unknown key: a fraction, higher is better)."""
    return METRICS.get(metric, Metric(metric))


def verdict(change, higher_is_better=True):
    """The paper's rule on one % change: "same" within ±SAME_BAND, else "better" or "worse" (for a
    metric where lower is better, a fall is "better")."""
    if abs(change) <= SAME_BAND:
        return "same"
    return "better" if (change > 0) == higher_is_better else "worse"


# How far a difference can be trusted: the paired difference against the baseline.

# Student t's 97.5 % quantile (two-sided 95 %) for 1-30 degrees of freedom, from the standard table.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
Z_975 = 1.959963984540054  # the normal's 97.5 % quantile


def t_quantile_975(df):
    """Student t's 97.5 % quantile with `df` degrees of freedom: the table up to 30, beyond it
    the Cornish-Fisher expansion around the normal quantile (Abramowitz & Stegun 26.7.5),
    within 2e-6 of the exact value there."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom; got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def resolved_verdict(low, high, higher_is_better=True):
    """What the 95 % interval [low, high] of a % change says about the paper's ±SAME_BAND rule:
    "better" or "worse" when it lies wholly beyond +SAME_BAND or −SAME_BAND, "same" when it lies
    wholly within the band, and "unresolved" when it straddles either threshold (the direction
    reversed for a metric where lower is better)."""
    if not higher_is_better:
        return resolved_verdict(-high, -low)
    if low > SAME_BAND:
        return "better"
    if high < -SAME_BAND:
        return "worse"
    if -SAME_BAND <= low and high <= SAME_BAND:
        return "same"
    return "unresolved"


def mean_interval(values):
    """(n, mean, half): the mean of `values` (paired differences) and the half-width of its 95 %
    interval, t(0.975, n − 1) · sd / √n with sd the sample standard deviation; the mean is None
    without values, the half-width None below two."""
    n = len(values)
    if n < 2:
        return n, float(np.mean(values)) if n else None, None
    return n, float(np.mean(values)), float(t_quantile_975(n - 1) * np.std(values, ddof=1) / np.sqrt(n))


def paired_changes(records, baseline="ce", metric="test_accuracy"):
    """{(dataset, model, loss): [% change against the baseline]}: one change per finished run
    that has a finished baseline run of the same dataset, model and seed (paired runs: the same
    seed gives every loss the same initial weights and batches); a record without a seed pairs
    with nothing."""
    ok = [r for r in records if r["status"] == "ok" and r.get(metric) is not None and r.get("seed") is not None]
    base = {(r["dataset"], r.get("model"), r["seed"]): r[metric] for r in ok if r["loss"] == baseline}
    changes = defaultdict(list)
    for record in ok:
        key = record["dataset"], record.get("model"), record["loss"]
        paired = base.get((record["dataset"], record.get("model"), record["seed"]))
        if record["loss"] != baseline and paired:
            changes[key].append(percent_change(record[metric], paired))
    return dict(changes)


def paired_statistics(changes, higher_is_better=True):
    """The paired comparison of one loss with the baseline, from its paired % changes:
    {"pairs", "mean", "low", "high", "detectable", "rule", "resolved"}.

    `mean` is the mean paired change (the paper's unit: % change of the metric against CE);
    [`low`, `high`] its 95 % interval, mean ± t(0.975, n − 1) · sd / √n with sd the sample
    standard deviation of the n changes; `detectable` the smallest difference these runs could
    detect, the interval's half-width t · sd / √n: a true change at least that large, with the
    same spread, gives an interval that excludes 0. `rule` is the paper's ±0.5 % rule on the
    mean (`verdict`), `resolved` what the interval says of it (`resolved_verdict`). With fewer
    than two pairs there is no interval: `low`, `high`, `detectable` and `resolved` are None.
    """
    n, mean, half = mean_interval(changes)
    if half is None:
        return {"pairs": n, "mean": mean, "low": None, "high": None, "detectable": None,
                "rule": verdict(mean, higher_is_better) if n else None, "resolved": None}
    return {"pairs": n, "mean": mean, "low": mean - half, "high": mean + half, "detectable": half,
            "rule": verdict(mean, higher_is_better),
            "resolved": resolved_verdict(mean - half, mean + half, higher_is_better)}


def metric_label(metric):
    """How the text names a metric: today's words for test accuracy, the record's key otherwise."""
    return metric_info(metric).label


def table(records, baseline="ce", metric="test_accuracy"):
    """{"datasets", "rows": [{"loss", "cells": {dataset: value}, "mean", "counts", "paired"}],
    "diverged", "metric"}.

    `metric` (a record's key holding a fraction: test_accuracy, top1, miou) is averaged over
    runs and models (in %); CE's row holds it, the others % change against CE on the same
    dataset. `paired` is a loss's `paired_statistics` over its runs that share dataset, model
    and seed with a CE run, pooled over datasets and models (with several datasets the
    interval is that of the Mean column, and dataset-to-dataset differences count as spread);
    None for CE, and for every loss when no dataset and model has two paired runs.
    """
    lacking = [r for r in records if r["status"] == "ok" and r.get(metric) is None]
    if lacking:
        found = sorted(k for k, v in lacking[0].items() if isinstance(v, float))
        first = lacking[0].get("key", lacking[0]["loss"])
        raise ValueError(f"{len(lacking)} finished run(s) hold no {metric!r} (first: {first}); "
                         f"their numeric keys: {', '.join(found) or 'none'}.")
    direction = metric_info(metric).higher_is_better
    scale = 100.0 if metric_info(metric).fraction else 1.0
    accuracies = defaultdict(list)
    diverged = defaultdict(int)
    datasets, losses = [], []
    for record in records:
        for name, seen in ((record["dataset"], datasets), (record["loss"], losses)):
            if name not in seen:
                seen.append(name)
        if record["status"] == "ok":
            accuracies[record["loss"], record["dataset"]].append(scale * record[metric])
        else:
            diverged[record["loss"], record["dataset"]] += 1
    mean = {key: float(np.mean(values)) for key, values in accuracies.items()}
    has_baseline = baseline in losses
    order = ([baseline] if has_baseline else []) + [name for name in losses if name != baseline]
    changes = paired_changes(records, baseline, metric)
    # Intervals need repeated runs: with one run per dataset, model and loss the spread over datasets
    # is no seed-to-seed noise (the trust note reads such a table against the benchmark records).
    repeated = any(len(c) > 1 for c in changes.values())
    pooled = defaultdict(list)  # loss -> its paired changes over every dataset and model
    for (_, _, loss), loss_changes in changes.items():
        pooled[loss] += loss_changes
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
                if cells[dataset] is not None:
                    counts[verdict(cells[dataset], direction)] += 1
        values = [v for v in cells.values() if v is not None]
        relative = has_baseline and loss != baseline
        rows.append({"loss": loss, "cells": cells, "counts": counts if relative else None,
                     "mean": float(np.mean(values)) if relative and values else None,
                     "relative": relative,
                     "paired": paired_statistics(pooled[loss], direction) if relative and repeated else None})
    return {"datasets": datasets, "rows": rows, "baseline": baseline if has_baseline else None,
            "metric": metric,
            "diverged": {f"{loss}/{dataset}": n for (loss, dataset), n in diverged.items()},
            "weights": sorted({r.get("weights") for r in records}, key=lambda w: (w is not None, w or ""))}


def _fmt(value, relative):
    if value is None:
        return "–"
    return f"{value:+.2f}" if relative else f"{value:.1f}"


PAIRED_HEADER = ["pairs", "paired Δ %", "95 % interval", "detectable", "verdict (±0.5 rule / interval)"]


def _has_intervals(result):
    """Whether the table has paired statistics (else it stays the one-run table: the trust note
    says how far it can be trusted)."""
    return any(row["paired"] for row in result["rows"])


def _paired_cells(paired):
    """The paired columns of one row, as Markdown cells ("" for the baseline's row)."""
    if not paired:
        return [""] * len(PAIRED_HEADER)
    if not paired["pairs"]:
        return ["0", "–", "–", "–", "–"]
    interval = ("–" if paired["low"] is None else f"[{paired['low']:+.2f}, {paired['high']:+.2f}]")
    detectable = "–" if paired["detectable"] is None else f"±{paired['detectable']:.2f}"
    return [str(paired["pairs"]), f"{paired['mean']:+.2f}", interval, detectable,
            f"{paired['rule']} / {paired['resolved'] or '–'}"]


def markdown(result, compare_paper=False):
    """The table in Markdown; with `compare_paper`, each loss the paper reports is followed by
    its row of Table 2 or B.2.2 (chosen from the records' weights), whose Mean covers the same
    datasets as ours. When the runs are repeated (`table`'s `paired`), the `paired_statistics`
    columns follow."""
    datasets = result["datasets"]
    paper, source = paper_table_for(result["weights"]) if compare_paper else (None, None)
    intervals = _has_intervals(result)
    header = ["loss"] + datasets + ["Mean", "better/same/worse"] + (PAIRED_HEADER if intervals else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [_fmt(row["cells"][d], row["relative"]) for d in datasets]
        counts = row["counts"]
        tally = f"{counts['better']}/{counts['same']}/{counts['worse']}" if counts else ""
        paired = _paired_cells(row["paired"]) if intervals else []
        lines.append("| " + " | ".join([row["loss"]] + cells + [_fmt(row["mean"], True) if row["relative"]
                                                                 else "", tally] + paired) + " |")
        published = paper.row(row["loss"]) if paper else None
        if published is not None:
            relative = row["loss"] != "ce"
            values = [published[PAPER_DATASETS.index(d)] if d in PAPER_DATASETS else None for d in datasets]
            ran = [d for d in datasets if row["cells"][d] is not None]
            mean = paper_mean(paper, row["loss"], ran) if relative and row["relative"] else None
            lines.append("| " + " | ".join([f"{row['loss']} (paper)"] + [_fmt(v, relative) for v in values]
                                           + [_fmt(mean, True) if mean is not None else "", ""]
                                           + ([""] * len(PAIRED_HEADER) if intervals else [])) + " |")
    metric = metric_info(result.get("metric", "test_accuracy"))
    unit = " %" if metric.fraction else ""
    note = (f"CE row: {metric.label}{unit} (mean over runs and models); other rows: % change against CE, "
            f"'same' within ±{SAME_BAND}.") if result["baseline"] else \
        f"No CE in the grid: every row is {metric.label}{unit}."
    if not metric.higher_is_better:
        note += f" Lower {metric.label} is better: a fall beyond {SAME_BAND} % is 'better'."
    lines += ["", note]
    if intervals:
        lines.append(
            "Paired: the % changes against CE of the runs that share dataset, model and seed with a CE run, "
            "pooled over datasets and models; their mean; its 95 % interval (Student t over the pairs); "
            "detectable: the interval's half-width t·sd/√n, the smallest change these runs could tell from "
            f"none; verdict: the paper's ±{SAME_BAND} % rule on the paired mean / what the interval says of it "
            f"(unresolved: it straddles ±{SAME_BAND}).")
    if paper:
        shown = [d for d in datasets if d in PAPER_DATASETS]
        scope = ("the published one (all seven datasets run)" if set(shown) == set(PAPER_DATASETS) else
                 f"recomputed over the datasets run here ({', '.join(shown)}), not the published mean "
                 "over seven")
        lines.append(f"{source} Mean of the paper's rows: {scope}.")
    if len(result["weights"]) > 1:
        lines.append("These records mix from-scratch and pre-trained runs (weights: " +
                     ", ".join("null" if w is None else str(w) for w in result["weights"]) +
                     "), averaged together above.")
    if result["diverged"]:
        lines.append("Diverged runs (left out of the means): " +
                     ", ".join(f"{k} ×{n}" for k, n in sorted(result["diverged"].items())))
    return "\n".join(lines)


PAIRED_CSV = ["pairs", "paired_change_pct", "ci95_low", "ci95_high", "detectable_pct", "verdict_rule",
              "verdict_interval"]


def csv_text(result):
    """The table as CSV: every row's cells and mean, then the `paired_statistics` columns (empty
    for the baseline, and the interval's for fewer than two pairs)."""
    def number(value):
        return "" if value is None else f"{value:.4f}"

    out = io.StringIO()
    writer = csv.writer(out)
    metric = result.get("metric", "test_accuracy")
    kind = "accuracy_pct" if metric == "test_accuracy" else f"{metric}_pct" if metric_info(metric).fraction else metric
    writer.writerow(["loss", "kind"] + result["datasets"] + ["mean"] + PAIRED_CSV)
    for row in result["rows"]:
        paired = row["paired"]
        extra = ([""] * len(PAIRED_CSV) if not paired else
                 [paired["pairs"]] + [number(paired[k]) for k in ("mean", "low", "high", "detectable")]
                 + [paired["rule"] or "", paired["resolved"] or ""])
        writer.writerow([row["loss"], "change_pct" if row["relative"] else kind]
                        + [number(row["cells"][d]) for d in result["datasets"]]
                        + [number(row["mean"])] + extra)
    return out.getvalue()


def accuracy_curves(records, path, key="val_accuracy"):
    """PNG: validation accuracy (or `key`: val_miou) per epoch, mean over runs and models, one panel
    per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    datasets = sorted({r["dataset"] for r in records})
    figure, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5 * max(len(datasets), 1), 3.5),
                                squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        curves = defaultdict(list)
        for r in records:
            if r["dataset"] == dataset and r["history"].get(key):
                curves[r["loss"]].append(r["history"][key])
        for loss, runs in curves.items():
            length = min(len(c) for c in runs)
            mean = np.mean([c[:length] for c in runs], axis=0)
            axis.plot(range(1, length + 1), mean, marker="o", label=loss)
        axis.set_title(curves_title(records, dataset), fontsize="medium")
        axis.set_xlabel("epoch")
        # whole epochs, even when there is only one
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        axis.set_ylabel("validation accuracy" if key == "val_accuracy" else f"validation {key[4:]}")
        axis.legend()
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=90)


def curves_title(records, dataset):
    """A panel's title: the dataset, the models whose runs are averaged and how many runs per loss."""
    mine = [r for r in records if r["dataset"] == dataset]
    counts = sorted(Counter(r["loss"] for r in mine).values())
    runs = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
    what = "1 run" if counts[-1] == 1 else f"mean of {runs} runs"
    return f"{dataset}: {', '.join(sorted({r['model'] for r in mine}))}, {what} per loss"


def reliability_diagram(records, path):
    """PNG: one reliability line per loss (accuracy against mean confidence per bin of the top
    probability, the runs' bins pooled by count), one panel per dataset; the diagonal is perfect
    calibration. From the records' `test_reliability`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in records if r.get("test_reliability")})
    figure, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.5 * max(len(datasets), 1), 4), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        pooled = {}
        for r in records:
            bins = r.get("test_reliability")
            if r["dataset"] != dataset or not bins or r["status"] != "ok":
                continue
            count = np.asarray(bins["count"], float)
            hits = count * np.nan_to_num(np.asarray(bins["accuracy"], float))
            confidence = count * np.nan_to_num(np.asarray(bins["confidence"], float))
            total = pooled.setdefault(r["loss"], np.zeros((3, count.size)))
            total += np.stack([count, hits, confidence])
        for loss, (count, hits, confidence) in pooled.items():
            used = count > 0
            axis.plot(confidence[used] / count[used], hits[used] / count[used], marker="o", label=loss)
        axis.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        axis.set_title(dataset)
        axis.set_xlabel("mean confidence (top probability) per bin")
        axis.set_ylabel("accuracy per bin")
        axis.legend()
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=90)


def metric_curves(records, path, key):
    """PNG: history `key` (val_top1: the paper's Figure 2) per epoch for each loss, mean over runs, one
    panel per dataset and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = sorted({(r["dataset"], r["model"]) for r in records if r["history"].get(key)})
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.5), squeeze=False)
    for axis, (dataset, model) in zip(axes[0], panels):
        curves = defaultdict(list)
        for r in records:
            if (r["dataset"], r["model"]) == (dataset, model) and r["history"].get(key):
                curves[r["loss"]].append(r["history"][key])
        for loss, runs in curves.items():
            length = min(len(c) for c in runs)
            axis.plot(range(1, length + 1), 100.0 * np.mean([c[:length] for c in runs], axis=0), label=loss)
        axis.set_title(f"{dataset}, {model}")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        axis.set_ylabel(f"{key} %")
        axis.legend()
    figure.tight_layout()
    atomic_savefig(figure, path, dpi=90)


def figures(records):
    """The figures `write` makes for these records: the validation curve of their task, and the
    reliability diagram when they hold calibration bins."""
    from ngl_keras.tasks import of_records

    curve = of_records(records).curve
    # a curve no record holds (ImageNet runs log val_top1, not val_accuracy) would be an empty plot
    names = [f"{curve}.png"] if any(r["history"].get(curve) for r in records) else []
    if any(r.get("test_reliability") for r in records):
        names.append("reliability.png")
    if any(r["history"].get("val_top1") for r in records):  # ImageNet: the paper's Figure 2
        names.append("val_top1.png")
    return names


def write(records, out_dir, compare_paper=False, reference_dir=None, metric=None, runs_option="--runs 3"):
    """Write table.md, table.csv and the `figures` to `out_dir`; return the Markdown of `metric`
    (None: the task's default), which ends with `trust_note` (against the benchmark records in
    `reference_dir`; `runs_option` is how the caller asks for more runs: a flag, or the API's
    `runs=3`)."""
    from ngl_keras.tasks import of_records

    out_dir = Path(out_dir)
    task = of_records(records)
    metric = metric or task.default_metric
    result = table(records, metric=metric)
    imagenet = bool(records) and all(is_imagenet(r["dataset"]) for r in records)
    text = markdown(result, compare_paper and task.name == "classification" and not imagenet)
    if compare_paper and any(is_imagenet(r["dataset"]) for r in records):
        text = imagenet_table(records, "top1" if metric == "test_accuracy" else metric) + "\n\n" + text
    if compare_paper and task.name == "segmentation":
        text += "\n\n" + segmentation_paper_table(records)
    if records:
        text += "\n" + trust_note(records, reference_dir, metric=metric, runs_option=runs_option)
    atomic_write(out_dir / "table.md", text + "\n")  # a full disk leaves the old table, never an empty one
    atomic_write(out_dir / "table.csv", csv_text(result))
    if records:
        if f"{task.curve}.png" in figures(records):
            accuracy_curves(records, out_dir / f"{task.curve}.png", task.curve)
        if "reliability.png" in figures(records):
            reliability_diagram(records, out_dir / "reliability.png")
        if "val_top1.png" in figures(records):
            metric_curves(records, out_dir / "val_top1.png", "val_top1")
    return text


# The paper's segmentation tables (SPEC §8): Table 4, Pascal VOC 2012 mean IoU (%), per model;
# Table 5 (COCO-Stuff164k: pixel accuracy, mean IoU, mean accuracy) has its values stripped in our copy.
PAPER_TABLE_4 = {"unet_resnet34": {"ce": 50.1, "focal": 49.1, "dice": 46.1, "ngl": 52.8},
                 "deeplabv2_resnet101": {"ce": 76.7, "focal": 75.9, "dice": 74.7, "ngl": 76.7}}
TABLE_5_COLUMNS = ("pixel_accuracy", "miou", "mean_accuracy")


def segmentation_paper_table(records):
    """Markdown: per dataset, model and loss our mean (over runs) of Table 5's columns in %, and
    the paper's Table 4 mean IoU beside it where the paper has one (VOC 2012)."""
    ok = [r for r in records if r["status"] == "ok"]
    groups = defaultdict(list)
    for r in ok:
        groups[r["dataset"], r["model"], r["loss"]].append(r)
    lines = ["| dataset | model | loss | runs | pixel acc. % | mean IoU % | mean acc. % | paper mean IoU % |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, model, loss), group in groups.items():
        means = [100.0 * float(np.mean([r[k] for r in group])) for k in TABLE_5_COLUMNS]
        paper = PAPER_TABLE_4.get(model, {}).get(loss) if dataset == "voc2012" else None
        lines.append(f"| {dataset} | {model} | {loss} | {len(group)} | " + " | ".join(f"{v:.1f}" for v in means)
                     + f" | {'–' if paper is None else f'{paper:.1f}'} |")
    lines.append("Paper: Table 4 (Pascal VOC 2012 val, mean IoU) for voc2012; Table 5 (COCO-Stuff164k) lists "
                 "pixel accuracy, mean IoU and mean accuracy, whose values are not in our copy (SPEC §8): "
                 "the text says NGL is slightly better than CE and clearly better than focal and Dice.")
    return "\n".join(lines)


# How far a difference can be trusted: the spread between runs.

SCHEDULE_KEYS = ("epochs", "batch_size", "image_size", "optimizer", "reduce_lr", "augmentation",
                 "splits", "limit_train")  # what makes two runs the same schedule (not `cache`)


def schedule(record):
    """The training schedule of a record, as a hashable key: dataset, model, weights and the
    settings that change the outcome."""
    config = record.get("config", {})
    return (record["dataset"], record["model"], record.get("weights"),
            json.dumps({k: config.get(k) for k in SCHEDULE_KEYS}, sort_keys=True))


def spread(records, baseline="ce", metric="test_accuracy"):
    """{(dataset, model, loss): {"runs", "accuracy_std", "changes"}} over the finished runs.

    `accuracy_std` is the sample standard deviation of `metric` in points (None for one run);
    `changes` the % changes against the baseline run of the same dataset, model and seed
    (`paired_changes`).
    """
    ok = [r for r in records if r["status"] == "ok" and r.get(metric) is not None]
    values = defaultdict(list)
    for record in ok:
        values[record["dataset"], record["model"], record["loss"]].append(
            (100.0 if metric_info(metric).fraction else 1.0) * record[metric])
    changes = paired_changes(ok, baseline, metric)
    return {key: {"runs": len(v), "accuracy_std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                  "changes": changes.get(key, [])} for key, v in values.items()}


def _spread_text(stats, baseline, metric="test_accuracy"):
    name = "accuracy" if metric == "test_accuracy" else metric
    parts = []
    for (dataset, model, loss), entry in stats.items():
        if entry["runs"] < 2:
            continue
        text = f"{loss} {name} std {entry['accuracy_std']:.2f} points"
        if loss != baseline and len(entry["changes"]) > 1:
            low, high = min(entry["changes"]), max(entry["changes"])
            text += f", change {low:+.2f} to {high:+.2f} % (std {np.std(entry['changes'], ddof=1):.2f})"
        parts.append(f"{text} ({dataset}, {model}, {entry['runs']} runs)")
    return "; ".join(parts)


GRID_RECORD_KEYS = ("dataset", "model", "loss", "seed", "weights", "config")  # and the metric


def trust_note(records, reference_dir=None, baseline="ce", metric="test_accuracy", runs_option="--runs 3"):
    """One line saying how far the table's differences can be trusted.

    With several runs per loss: their spread (std of accuracy, range and std of the paired
    changes against the baseline). With one run: the seed-to-seed spread measured for the same
    schedule (dataset, model, weights, settings) and losses in the benchmark records under
    `reference_dir` (every runs.jsonl there), or that none is recorded.
    """
    from ngl_keras.files import read_json_lines

    losses = {r["loss"] for r in records}
    stats = spread(records, baseline, metric)
    if any(entry["runs"] > 1 for entry in stats.values()):
        return (f"Spread over runs (sample std; change against {baseline} per paired seed): "
                + _spread_text(stats, baseline, metric) + ".")
    mine = {schedule(r) for r in records}
    matches, sources = {}, []
    for path in sorted(Path(reference_dir).rglob("runs.jsonl")) if reference_dir else []:
        # Every runs.jsonl there; records of other tools (without a grid run's keys) are not runs of a schedule.
        found = [r for r in read_json_lines(path) if r.get("status") == "ok" and
                 all(k in r for k in GRID_RECORD_KEYS) and r.get(metric) is not None and r["loss"] in losses
                 and schedule(r) in mine]
        for record in found:  # a copy of the same run counts once
            matches[schedule(record), record["loss"], record["seed"], record[metric]] = record
        if found:
            shown = os.path.relpath(path)
            sources.append(str(path) if shown.startswith("..") else shown)
    text = _spread_text(spread(list(matches.values()), baseline, metric), baseline, metric)
    if not text:
        return ("One run per loss, and no seed-to-seed spread recorded for this schedule: a difference "
                f"of a point or two may be noise ({runs_option} measures it).")
    return (f"One run per loss: a difference within the seed-to-seed spread measured for this schedule is "
            f"noise ({', '.join(sources)}): {text}.")
