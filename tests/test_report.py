"""The paper's tables, which one --compare-paper shows, its Mean, the paired intervals and the spread note."""

import json

import numpy as np
import pytest

import train_small
from ngl_keras import report

SCRATCH, PRETRAINED = report.PAPER_TABLES["scratch"], report.PAPER_TABLES["pretrained"]
SETTINGS = {"epochs": 3, "batch_size": 128, "image_size": 28, "cache": True, "limit_train": None,
            "optimizer": {"name": "adam", "learning_rate": 0.001, "momentum": 0.0},
            "reduce_lr": {"monitor": "val_accuracy", "factor": 0.2, "patience": 5, "min_lr": 1e-4},
            "augmentation": {"horizontal_flip": True, "width_shift": 0.1, "height_shift": 0.1, "zoom": 0.2},
            "splits": {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}}


def record(dataset, loss, accuracy, seed=0, weights=None, model="small_cnn", **settings):
    return {"dataset": dataset, "model": model, "loss": loss, "seed": seed, "status": "ok",
            "test_accuracy": accuracy, "weights": weights, "config": {**SETTINGS, **settings}}


def test_both_tables_hold_every_published_row():
    for paper in (SCRATCH, PRETRAINED):
        assert list(paper.changes) == ["sce", "focal", "ce_l2", "f1", "f2", "f3", "f4", "ngl"]
        assert len(paper.ce) == 7 and all(len(row) == 7 for row in paper.changes.values())
        assert set(paper.means) == set(paper.changes)
    # A few cells, read from the paper again: datasets in the order Malaria ... Caltech 101.
    assert SCRATCH.ce == [94.0, 69.4, 88.9, 92.8, 94.0, 68.2, 72.5]
    assert SCRATCH.changes["f3"] == [-27.98, 3.24, -62.45, -1.79, -0.48, -59.36, -41.67]
    assert SCRATCH.changes["ngl"][report.PAPER_DATASETS.index("patch_camelyon")] == 7.07
    assert PRETRAINED.ce == [96.7, 72.4, 90.5, 94.9, 94.6, 74.8, 84.5]
    assert PRETRAINED.changes["f4"] == [-0.04, 8.10, 3.03, 0.02, -0.13, 6.78, 5.47]
    assert PRETRAINED.means == {"sce": -1.13, "focal": 0.58, "ce_l2": -0.39, "f1": 2.06, "f2": 2.61,
                                "f3": -5.76, "f4": 3.33, "ngl": 2.84}


def test_published_means_are_kept_where_they_differ_from_their_row():
    # Table 2's means are its rows' means up to rounding; four of B.2.2 are off by 0.01-0.02.
    for loss, row in SCRATCH.changes.items():
        assert SCRATCH.means[loss] == pytest.approx(np.mean(row), abs=0.005), loss
    off = {loss for loss, row in PRETRAINED.changes.items()
           if abs(PRETRAINED.means[loss] - np.mean(row)) > 0.005}
    assert off == {"sce", "focal", "f1", "f4"}
    assert all(abs(PRETRAINED.means[loss] - np.mean(PRETRAINED.changes[loss])) < 0.025 for loss in off)


def _pair(dataset, ce, ngl, weights=None):
    return [record(dataset, "ce", ce, weights=weights), record(dataset, "ngl", ngl, weights=weights)]


def test_compare_paper_shows_table_2_for_scratch_runs_with_its_mean_over_the_datasets_run():
    records = _pair("malaria", 0.90, 0.91) + _pair("patch_camelyon", 0.80, 0.84)
    text = report.markdown(report.table(records), compare_paper=True)
    assert "| ce (paper) | 94.0 | 69.4 |  |  |" in text
    assert "| ngl (paper) | -0.27 | +7.07 | +3.40 |  |" in text  # (−0.27 + 7.07) / 2, not 2.11
    assert "Paper: Table 2 (trained from scratch), as these runs (weights: null)." in text
    assert ("Mean of the paper's rows: recomputed over the datasets run here (malaria, patch_camelyon), "
            "not the published mean over seven.") in text


def test_compare_paper_shows_table_b22_for_pretrained_runs():
    records = _pair("cifar100", 0.70, 0.71, "imagenet") + _pair("caltech101", 0.80, 0.82, "imagenet")
    text = report.markdown(report.table(records), compare_paper=True)
    assert "| ce (paper) | 74.8 | 84.5 |  |  |" in text
    assert "| ngl (paper) | +5.29 | +3.45 | +4.37 |  |" in text
    assert "Paper: Table B.2.2 (fine-tuned from ImageNet weights), as these runs (weights: imagenet)." in text
    assert "Table 2" not in text


def test_all_seven_datasets_show_the_published_mean_and_a_diverged_cell_narrows_it():
    records = []
    for dataset in report.PAPER_DATASETS:
        records += [record(dataset, "ce", 0.9, weights="imagenet"), record(dataset, "sce", 0.9, weights="imagenet"),
                    record(dataset, "ngl", 0.9, weights="imagenet")]
    records = [r for r in records if not (r["loss"] == "ngl" and r["dataset"] == "malaria")]
    records.append({**record("malaria", "ngl", None, weights="imagenet"), "status": "diverged"})
    text = report.markdown(report.table(records), compare_paper=True)
    sce = next(line for line in text.splitlines() if line.startswith("| sce (paper)"))
    assert sce.endswith("| -1.13 |  |")  # published, not the row's mean −1.15
    ngl = next(line for line in text.splitlines() if line.startswith("| ngl (paper)"))
    expected = np.mean(PRETRAINED.changes["ngl"][1:])  # malaria diverged: the other six
    assert ngl.endswith(f"| {expected:+.2f} |  |")


def test_mixed_weights_are_refused_for_the_comparison_and_labelled_otherwise(tmp_path):
    records = _pair("malaria", 0.9, 0.91) + _pair("malaria", 0.95, 0.96, "imagenet")
    message = ("the records mix from-scratch and pre-trained runs (weights: imagenet, null); the paper "
               "compares them in separate tables: report each from its own output directory.")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        report.markdown(report.table(records), compare_paper=True)
    text = report.markdown(report.table(records))
    assert "These records mix from-scratch and pre-trained runs (weights: null, imagenet)" in text
    # The CLI reads complete records and refuses one dataset trained two ways before any table.
    complete = [{**r, "key": f"{r['dataset']}/{r['model']}/{r['loss']}/{i}", "run": 0, "history": {}}
                for i, r in enumerate(records)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in complete))
    with pytest.raises(ValueError, match=r"would mix settings for dataset 'malaria'.*weights \(null vs \"imagenet\"\)"):
        train_small.main(["report", str(tmp_path), "--compare-paper"])


def test_spread_over_several_runs_is_printed_with_paired_changes():
    ce, ngl = [0.90, 0.88, 0.86], [0.91, 0.87, 0.87]
    records = [record("fashion_mnist", "ce", a, seed=s) for s, a in enumerate(ce)]
    records += [record("fashion_mnist", "ngl", a, seed=s) for s, a in enumerate(ngl)]
    note = report.trust_note(records)
    changes = [100 * (n - c) / c for c, n in zip(ce, ngl)]
    assert note.startswith("Spread over runs (sample std; change against ce per paired seed): ")
    assert f"ce accuracy std {np.std(np.multiply(ce, 100), ddof=1):.2f} points (fashion_mnist, small_cnn, 3 runs)" in note
    assert (f"ngl accuracy std {np.std(np.multiply(ngl, 100), ddof=1):.2f} points, change {min(changes):+.2f} to "
            f"{max(changes):+.2f} % (std {np.std(changes, ddof=1):.2f})") in note


def test_a_single_run_is_read_against_the_benchmark_spread_of_the_same_schedule(tmp_path):
    reference = tmp_path / "results" / "quality-quick"
    reference.mkdir(parents=True)
    ce, ngl = [0.8788, 0.8724, 0.8557], [0.8617, 0.8606, 0.8585]
    lines = [record("fashion_mnist", "ce", a, seed=s) for s, a in enumerate(ce)]
    lines += [record("fashion_mnist", "ngl", a, seed=s) for s, a in enumerate(ngl)]
    lines += [record("fashion_mnist", "ngl", 0.2, seed=9, epochs=15),  # another schedule: ignored
              record("fashion_mnist", "focal", 0.2, seed=0)]           # a loss not in the table: ignored
    (reference / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    mine = [record("fashion_mnist", "ce", 0.87), record("fashion_mnist", "ngl", 0.86)]
    note = report.trust_note(mine, tmp_path / "results")
    changes = [100 * (n - c) / c for c, n in zip(ce, ngl)]
    assert note.startswith("One run per loss: a difference within the seed-to-seed spread measured for this "
                           "schedule is noise (")
    assert str(reference / "runs.jsonl") in note or "quality-quick/runs.jsonl" in note
    assert f"ce accuracy std {np.std(np.multiply(ce, 100), ddof=1):.2f} points (fashion_mnist, small_cnn, 3 runs)" in note
    assert f"change {min(changes):+.2f} to {max(changes):+.2f} % (std {np.std(changes, ddof=1):.2f})" in note
    assert "focal" not in note and "\n" not in note
    other = [record("fashion_mnist", "ce", 0.87, epochs=4), record("fashion_mnist", "ngl", 0.86, epochs=4)]
    assert report.trust_note(other, tmp_path / "results") == (
        "One run per loss, and no seed-to-seed spread recorded for this schedule: a difference of a point "
        "or two may be noise (--runs 3 measures it).")


def with_changes(loss, changes, ce=0.5, metric="test_accuracy"):
    """CE and `loss` runs on seeds 0, 1, ... whose paired % changes are `changes`."""
    records = []
    for seed, change in enumerate(changes):
        for name, value in (("ce", ce), (loss, ce * (1 + change / 100))):
            run = record("fashion_mnist", name, None, seed=seed)
            del run["test_accuracy"]
            records.append({**run, metric: value, "history": {"val_accuracy": [value]}})
    return records


@pytest.mark.any_backend
def test_t_quantile_is_students_table_and_its_expansion_beyond_it():
    assert report.t_quantile_975(1) == 12.706 and report.t_quantile_975(4) == 2.776
    assert report.t_quantile_975(30) == 2.042
    # Beyond the table: t(0.975) for 40, 120 and 1000 degrees of freedom, to the table's three decimals.
    assert [round(report.t_quantile_975(df), 3) for df in (40, 120, 1000)] == [2.021, 1.980, 1.962]
    with pytest.raises(ValueError, match="at least 1 degree of freedom; got 0"):
        report.t_quantile_975(0)


@pytest.mark.any_backend
def test_paired_interval_of_known_differences():
    # Differences 1..5 %: mean 3, sd √2.5 = 1.581, t(4) = 2.776, half-width 2.776 · 1.581 / √5 = 1.963.
    stats = report.table(with_changes("ngl", [1, 2, 3, 4, 5]))["rows"][1]["paired"]
    assert stats["pairs"] == 5
    assert stats["mean"] == pytest.approx(3.0)
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    assert half == pytest.approx(1.9629, abs=1e-4)
    assert stats["detectable"] == pytest.approx(half)
    assert (stats["low"], stats["high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert (stats["rule"], stats["resolved"]) == ("better", "better")


@pytest.mark.any_backend
@pytest.mark.parametrize("changes, rule, resolved", [
    ([1, 2, 3, 4, 5], "better", "better"),             # [+1.04, +4.96]: wholly above +0.5
    ([0.1, -0.1, 0.0, 0.05, -0.05], "same", "same"),    # [−0.10, +0.10]: wholly inside ±0.5
    ([-1, -2, -3, -4, -5], "worse", "worse"),           # [−4.96, −1.04]: wholly below −0.5
    ([-0.2, 0.8, 0.3, 1.3, -0.7], "same", "unresolved"),  # [−0.68, +1.28]: straddles +0.5
])
def test_each_verdict_of_the_interval(changes, rule, resolved):
    stats = report.paired_statistics(changes)
    half = report.t_quantile_975(len(changes) - 1) * np.std(changes, ddof=1) / np.sqrt(len(changes))
    assert (stats["low"], stats["high"]) == (pytest.approx(np.mean(changes) - half),
                                             pytest.approx(np.mean(changes) + half))
    assert (stats["rule"], stats["resolved"]) == (rule, resolved)


@pytest.mark.any_backend
def test_mean_interval_by_hand():
    # mean 3, sd √2.5 = 1.5811, t(0.975, 4) = 2.776: half-width 2.776 · 1.5811 / √5 = 1.9629
    assert report.mean_interval([1, 2, 3, 4, 5]) == (5, 3.0, pytest.approx(1.9629, abs=1e-4))
    assert report.mean_interval([-0.4]) == (1, -0.4, None) and report.mean_interval([]) == (0, None, None)


@pytest.mark.any_backend
def test_resolved_verdict_at_the_thresholds():
    assert report.resolved_verdict(-0.5, 0.5) == "same"
    assert report.resolved_verdict(0.51, 2) == "better" and report.resolved_verdict(0.5, 2) == "unresolved"
    assert report.resolved_verdict(-2, -0.51) == "worse" and report.resolved_verdict(-0.6, 0.6) == "unresolved"


@pytest.mark.any_backend
def test_markdown_and_csv_gain_the_paired_columns():
    # The table's layout changes only with repeated runs: the paired columns follow the existing ones.
    result = report.table(with_changes("ngl", [1, 2, 3, 4, 5]))
    text = report.markdown(result)
    assert text.splitlines()[0] == ("| loss | fashion_mnist | Mean | better/same/worse | pairs | paired Δ % | "
                                    "95 % interval | detectable | verdict (±0.5 rule / interval) |")
    assert "| ce | 50.0 |  |  |  |  |  |  |  |" in text
    assert "| ngl | +3.00 | +3.00 | 1/0/0 | 5 | +3.00 | [+1.04, +4.96] | ±1.96 | better / better |" in text
    lines = report.csv_text(result).splitlines()
    assert lines[0] == ("loss,kind,fashion_mnist,mean,pairs,paired_change_pct,ci95_low,ci95_high,detectable_pct,"
                        "verdict_rule,verdict_interval")
    assert lines[1] == "ce,accuracy_pct,50.0000,,,,,,,,"
    assert lines[2] == "ngl,change_pct,3.0000,3.0000,5,3.0000,1.0371,4.9629,1.9629,better,better"


@pytest.mark.any_backend
def test_one_run_per_loss_keeps_the_table_without_intervals():
    records = _pair("malaria", 0.90, 0.91) + _pair("patch_camelyon", 0.80, 0.84)
    result = report.table(records)
    assert all(row["paired"] is None for row in result["rows"])  # two datasets are not two seeds
    assert report.markdown(result).splitlines()[0] == "| loss | malaria | patch_camelyon | Mean | better/same/worse |"
    assert report.csv_text(result).splitlines()[2].endswith(",,,,,,,")


@pytest.mark.any_backend
def test_the_metric_is_a_parameter(tmp_path):
    records = with_changes("ngl", [-1, -2, -3, -4, -5], ce=0.6, metric="miou")
    result = report.table(records, metric="miou")
    assert result["rows"][0]["cells"] == {"fashion_mnist": pytest.approx(60.0)}
    assert result["rows"][1]["paired"]["resolved"] == "worse"
    text = report.markdown(result)
    assert "CE row: miou % (mean over runs and models)" in text
    assert report.csv_text(result).splitlines()[1].startswith("ce,miou_pct,60.0000,")
    note = report.trust_note(records, metric="miou")
    assert "ce miou std 0.00 points (fashion_mnist, small_cnn, 5 runs)" in note
    message = "10 finished run(s) hold no 'top1' (first: ce); their numeric keys: miou."
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        report.table(records, metric="top1")
    written = report.write(records, tmp_path, metric="miou")
    assert "| ngl | -3.00 | -3.00 | 0/0/1 | 5 | -3.00 | [-4.96, -1.04] | ±1.96 | worse / worse |" in written


def visible_ticks(axis):
    """The x tick values a reader sees on a matplotlib axis (inside its view)."""
    low, high = axis.get_xlim()
    return [float(t) for t in axis.get_xticks() if low <= t <= high]


def saved_figures(monkeypatch):
    """The figures saved from now on (Figure.savefig still writes them)."""
    import matplotlib.figure

    figures, save = [], matplotlib.figure.Figure.savefig

    def keep(figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


@pytest.mark.parametrize("epochs", [1, 3])
def test_accuracy_curves_have_whole_epoch_ticks(tmp_path, monkeypatch, epochs):
    figures = saved_figures(monkeypatch)
    records = [{**record("fashion_mnist", loss, 0.8), "history": {"val_accuracy": list(np.linspace(0.5, 0.8, epochs))}}
               for loss in ("ce", "ngl")]
    report.accuracy_curves(records, tmp_path / "val_accuracy.png")
    ticks = visible_ticks(figures[0].axes[0])
    assert ticks and all(t == int(t) for t in ticks) and set(range(1, epochs + 1)) <= set(ticks)


def test_accuracy_curves_name_the_models_and_the_runs_per_loss(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    records = [{**record("fashion_mnist", loss, 0.8, model=model), "history": {"val_accuracy": [0.5, 0.8]}}
               for loss in ("ce", "ngl") for model in ("resnet50", "inceptionv3") for _ in range(3)]
    report.accuracy_curves(records + [{**record("cifar10", "ce", 0.8), "history": {"val_accuracy": [0.5]}}],
                           tmp_path / "val_accuracy.png")
    assert [axis.get_title() for axis in figures[0].axes] == [
        "cifar10: small_cnn, 1 run per loss", "fashion_mnist: inceptionv3, resnet50, mean of 6 runs per loss"]
