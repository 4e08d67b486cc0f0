"""The screening switch: only the paper's range check, or our rules as well."""

import json

import pytest
import yaml

import search_gp
from ngl_keras.gp import screening
from ngl_keras.losses import expression as ex
from tests.paths import CONFIGS

ALL = screening.LossScreen()
PAPER = screening.LossScreen(screening.ScreeningSettings(rules=screening.PAPER_RULES))


@pytest.mark.parametrize("formula,ours,paper", [
    ("y*log(p)", "no_improvement", None),          # minimising it lowers the true-class probability
    ("p*y*0 + 3", "constant", None),
    ("exp(1000*p)*y + p", "non_finite", "out_of_range"),  # an infinite value also leaves the range
    ("exp(1000*p)*0*y + p", "non_finite", "out_of_range"),  # and so does NaN (inf·0)
    ("p/y", "out_of_range", "out_of_range"),
    ("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))", None, None),
])
def test_paper_rules_reject_only_values_outside_the_allowed_range(formula, ours, paper):
    tree = ex.parse(formula)
    assert ALL(tree)[0] == ours
    reason, fingerprint = PAPER(tree)
    assert reason == paper
    assert (fingerprint is None) == (paper is not None)


def test_a_candidate_passed_by_either_screen_gets_the_same_fingerprint():
    tree = ex.parse("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
    assert ALL(tree)[1] == PAPER(tree)[1]


@pytest.mark.parametrize("rules", ["out_of_range", ("range",), ("out_of_range", "nan")])
def test_unknown_rules_are_named(rules):
    with pytest.raises(ValueError, match=r"screening rules must be a list drawn from \['non_finite', "
                                         r"'out_of_range', 'constant', 'no_improvement'\]"):
        screening.ScreeningSettings(rules=rules)


@pytest.mark.slow
def test_screening_rules_from_a_search_config_turn_our_rejections_off(tmp_path):
    rejected = {}
    for label, rules in (("all", None), ("paper", ["out_of_range"])):
        cfg = yaml.safe_load((CONFIGS / "search" / "smoke.yaml").read_text())
        if rules is not None:
            cfg["screening"] = {**cfg.get("screening", {}), "rules": rules}  # over configs/search/defaults.yaml
        path = tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = tmp_path / label
        search_gp.main(["--config", str(path), "--out", str(out), "--generations", "0"])
        generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
        rejected[label] = {}
        for g in generations:
            for reason, count in g["rejected"].items():
                rejected[label][reason] = rejected[label].get(reason, 0) + count
    assert set(rejected["paper"]) <= {"out_of_range"}
    assert rejected["all"].get("no_improvement", 0) > 0  # the same seed meets our rules
