"""benchmarks/search_quality.py: the pieces computed by hand, and its --quick path end to end."""

import importlib.util
import json

import numpy as np
import pytest

from tests.paths import ROOT

_spec = importlib.util.spec_from_file_location("search_quality", ROOT / "benchmarks" / "search_quality.py")
sq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sq)


def test_spearman_matches_the_rank_formula_and_averages_ties():
    # no ties: 1 - 6 Σd² / (n (n² - 1)); ranks of a: 1 2 3 4, of b: 2 1 4 3 -> Σd² = 4
    assert sq.spearman([0.1, 0.2, 0.3, 0.4], [5, 1, 9, 7]) == pytest.approx(1 - 6 * 4 / (4 * 15))
    assert sq.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # ties share their mean rank: a -> 1.5 1.5 3, b -> 1 2 3; Pearson of the ranks
    expected = np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1]
    assert sq.spearman([7, 7, 9], [1, 2, 3]) == pytest.approx(expected)


def test_chance_level_of_four_losses_matches_a_hand_enumeration():
    # 4 losses, no ties: ρ = 1 − Σd²/10 over the 24 orderings of the full-data ranks. Σd² takes the
    # values 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 in 1, 3, 1, 4, 2, 2, 2, 4, 1, 3, 1 orderings
    # (symmetric about 10, so the mean ρ is 0).
    proxy = [0.70, 0.72, 0.75, 0.76]            # ranks 1 2 3 4
    chance = sq.spearman_chance(proxy, [86.0, 88.0, 87.0, 89.0])   # ranks 1 3 2 4: Σd² = 2, ρ = 0.8
    assert chance["observed"] == pytest.approx(0.8)
    assert chance["mean"] == pytest.approx(0.0, abs=1e-12)
    assert chance["p"] == pytest.approx(4 / 24)   # Σd² ≤ 2: 1 + 3 orderings
    assert (chance["losses"], chance["orderings"], chance["exact"]) == (4, 24, True)
    # ranks 2 3 1 4: Σd² = 1 + 1 + 4 = 6, ρ = 0.4, reached by the 1 + 3 + 1 + 4 orderings with Σd² ≤ 6
    chance = sq.spearman_chance(proxy, [87.0, 88.0, 86.0, 89.0])
    assert chance["observed"] == pytest.approx(0.4) and chance["p"] == pytest.approx(9 / 24)
    # the perfect order is reached by one ordering only; the reversed one by every ordering
    assert sq.spearman_chance(proxy, [1, 2, 3, 4])["p"] == pytest.approx(1 / 24)
    assert sq.spearman_chance(proxy, [4, 3, 2, 1])["p"] == pytest.approx(1.0)


def test_chance_level_of_many_losses_is_sampled_with_a_fixed_seed():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=7), rng.normal(size=7)
    exact = sq.spearman_chance(a, b)
    assert exact["exact"] and exact["orderings"] == 5040
    sampled = sq.spearman_chance(a, b, exact_up_to=6, samples=20_000)
    assert not sampled["exact"] and sampled["orderings"] == 20_000
    assert sampled == sq.spearman_chance(a, b, exact_up_to=6, samples=20_000)   # the same figures every run
    assert sampled["observed"] == pytest.approx(exact["observed"]) == pytest.approx(sq.spearman(a, b))
    # binomial standard error of p at 20,000 samples is at most 0.0036
    assert sampled["p"] == pytest.approx(exact["p"], abs=0.015)
    assert sampled["mean"] == pytest.approx(0.0, abs=0.02)
    assert "P(rho >= " in sq.chance_text(sampled) and "20,000 random orderings (seed 0)" in sq.chance_text(sampled)
    assert sq.spearman_chance([1, 1, 1], [1, 2, 3]) is None   # a constant side has no correlation


def test_the_rank_check_trains_usable_losses_only():
    # no formula built to fail: those rank last on both sides and make any proxy look good
    assert "p*y" not in sq.CHECK_LOSSES and not hasattr(sq, "BAD_FORMULAS")
    assert len(sq.CHECK_LOSSES) >= 8 and sq.CHECK_LOSSES[:2] == ["ce", "ngl"]
    # with 8 losses, the perfect order happens by chance once in 8! orderings
    assert sq.spearman_chance(range(8), range(8))["p"] == pytest.approx(1 / 40320)


def test_found_losses_skip_failed_candidates_and_keep_the_order():
    fame = [{"rank": 1, "formula": "a*p", "display": "a", "latex": "a", "fitness": [0.2]},
            {"rank": 2, "formula": "b*p", "display": "b", "latex": "b", "fitness": [1e9]},
            {"rank": 3, "formula": "c*p", "display": "c", "latex": "c", "fitness": [0.3]},
            {"rank": 4, "formula": "d*p", "display": "d", "latex": "d", "fitness": [0.4]}]
    found = sq.found_losses(fame, 2)
    assert [(f["label"], f["name"], f["fitness"]) for f in found] == [("found1", "a*p", [0.2]),
                                                                       ("found2", "c*p", [0.3])]


def _record(loss, seed, accuracy, status="ok"):
    return {"loss": loss, "seed": seed, "status": status, "test_accuracy": accuracy}


def test_summary_pairs_seeds_with_ce_and_applies_the_half_percent_rule():
    records = [_record("ce", 0, 0.80), _record("ce", 1, 0.90), _record("ce", 2, 0.70),
               _record("ngl", 0, 0.81), _record("ngl", 1, 0.91),       # seed 2 not trained yet
               _record("f1", 0, 0.79), _record("f1", 1, None, "diverged"), _record("f1", 2, 0.60)]
    a = sq.summarise(records, ["ce", "ngl", "f1"])
    assert a["ce"]["mean"] == pytest.approx(0.8) and a["ce"]["std"] == pytest.approx(0.1)
    assert "change_vs_ce" not in a["ce"]
    # NGL on seeds 0, 1 against CE on the same seeds (0.85), not CE's mean over 3 seeds (0.80)
    assert a["ngl"]["paired_seeds"] == [0, 1]
    assert a["ngl"]["change_vs_ce"] == pytest.approx(round(100 * (0.86 - 0.85) / 0.85, 2))
    assert a["ngl"]["verdict"] == "better"   # +1.18 % > 0.5 %
    assert a["f1"]["diverged"] == 1 and a["f1"]["seeds"] == [0, 2]
    assert a["f1"]["change_vs_ce"] == pytest.approx(round(100 * (0.695 - 0.75) / 0.75, 2))
    assert a["f1"]["verdict"] == "worse"


def test_full_data_runs_are_paired_seed_by_seed():
    runs = sq.full_data_runs(["ce", "ngl", {"name": "p*y", "label": "found1"}], 2, 15)
    assert [(r.loss.label, r.seed) for r in runs] == [("ce", 0), ("ngl", 0), ("found1", 0),
                                                      ("ce", 1), ("ngl", 1), ("found1", 1)]
    assert all(r.settings.epochs == 15 and r.settings.limit_train is None for r in runs)
    assert {r.model for r in runs} == {"small_cnn"}


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_path_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sq.QUICK, "population", 2)
    monkeypatch.setitem(sq.QUICK, "generations", 0)
    monkeypatch.setitem(sq.QUICK, "fitness", {"epochs": 1, "limit_train": 128, "runs": 1, "recycle_every": 0})
    monkeypatch.setitem(sq.QUICK, "limit_train", 128)
    monkeypatch.setitem(sq.QUICK, "top", 1)
    out = tmp_path / "q"
    assert sq.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == ["ce", "ngl", "found1"]
    by_loss = {r["loss"]: r for r in records}
    assert result["ce_accuracy"] == round(by_loss["ce"]["test_accuracy"], 4)
    assert result["best_found_accuracy"] == round(by_loss["found1"]["test_accuracy"], 4)
    assert by_loss["found1"]["loss_name"] == result["best_formula"]
    generations = [json.loads(x) for x in (out / "search" / "generations.jsonl").read_text().splitlines()]
    assert result["proxy_fitness"]["ce"] == generations[-1]["references"]["ce"]
    assert result["proxy_fitness"]["found1"] == [generations[-1]["best_fitness"][0]]
    assert sq.main(["--quick", "--out", str(out)]) == 0  # a re-run resumes: nothing trained again
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.realdata
def test_rank_check_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sq, "CHECK_LOSSES", ["ce", "ngl", "focal"])
    monkeypatch.setitem(sq.QUICK, "fitness", {"epochs": 1, "limit_train": 128, "runs": 2, "recycle_every": 0})
    monkeypatch.setitem(sq.QUICK, "limit_train", 128)
    out = tmp_path / "check"
    assert sq.main(["--quick", "--check-proxy", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    proxy = [json.loads(x) for x in (out / "proxy-check" / "proxy.jsonl").read_text().splitlines()]
    assert [(e["loss"], e["run"]) for e in proxy] == [(loss, r) for loss in ("ce", "ngl", "focal") for r in (0, 1)]
    for loss in ("ce", "ngl", "focal"):
        runs = [e for e in proxy if e["loss"] == loss]
        if all(e["status"] == "ok" for e in runs):
            assert result["proxy"][loss]["val_accuracy"] == pytest.approx(sum(e["val_accuracy"] for e in runs) / 2)
    full = [json.loads(x) for x in (out / "proxy-check" / "full" / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["loss"] for r in full) == ["ce", "focal", "ngl"]
    proxy_values = [result["proxy"][x]["val_accuracy"] or 0.0 for x in ("ce", "ngl", "focal")]
    full_values = [result["full_data"][x]["mean"] or 0.0 for x in ("ce", "ngl", "focal")]
    if len(set(proxy_values)) > 1 and len(set(full_values)) > 1:  # a constant side has no correlation
        assert result["chance"]["losses"] == 3 and result["chance"]["orderings"] == 6
        assert result["spearman"] == pytest.approx(sq.spearman(proxy_values, full_values))
    assert result["remaining"] == []
    assert sq.main(["--quick", "--check-proxy", "--out", str(out)]) == 0  # resumes: nothing trained again
    assert len((out / "proxy-check" / "proxy.jsonl").read_text().splitlines()) == 6
    assert len((out / "proxy-check" / "full" / "runs.jsonl").read_text().splitlines()) == 3
