"""Reference losses scored with the search's own fitness: logged in every generation line,
scored once per search directory, checked when the config is read."""

import json

import pytest
import yaml

import search_gp
from ngl_keras.gp import evolution, fitness, screening, search_directory, search_run, search_settings
from tests.paths import CONFIGS

NGL = "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"
CE = "-y*log(p)"


def _config(tmp_path, references, **fitness_changes):
    cfg = yaml.safe_load((CONFIGS / "search" / "smoke.yaml").read_text())
    cfg["fitness"] = {**cfg["fitness"], "references": references, **fitness_changes}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_every_generation_line_carries_the_references_scored_by_an_independent_probe(tmp_path):
    out = tmp_path / "s"
    search_gp.main(["--config", str(_config(tmp_path, [CE, NGL])), "--out", str(out), "--generations", "2"])
    probe = fitness.ProbeFitness(screening.LossScreen(), 40)  # the smoke config's probe fitness
    expected = {CE: probe(CE), NGL: probe(NGL)}
    assert expected[CE] != expected[NGL]
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in lines] == [0, 1, 2]
    for line in lines:
        assert line["references"] == pytest.approx(expected, rel=1e-6)
    assert json.loads((out / search_directory.REFERENCES_FILE).read_text()) == pytest.approx(expected, rel=1e-6)
    assert f"; {CE} ({expected[CE][0]:.4g})" in search_run.report(out)


def test_references_are_scored_once_per_directory_and_a_failure_is_not_kept(tmp_path):
    calls = []

    def counting(name):
        calls.append(name)
        return [evolution.WORST] if name == "bad" else [0.25 if name == "ce" else 0.5]

    directory = search_directory.SearchDirectory(tmp_path)
    log = []
    assert directory.references(["ce", "ngl", "bad"], counting, log.append) == {"ce": [0.25], "ngl": [0.5]}
    assert directory.references(["ce", "ngl", "bad"], counting, log.append) == {"ce": [0.25], "ngl": [0.5]}
    assert calls == ["ce", "ngl", "bad", "bad"]  # the resume scores only the failed one again
    assert "reference bad failed; it is not kept and is scored again on resume" in log
    assert json.loads((tmp_path / search_directory.REFERENCES_FILE).read_text()) == {"ce": [0.25], "ngl": [0.5]}


@pytest.mark.parametrize("references,message", [
    (["ce"], "fitness reference 'ce': the probe fitness scores formulas only"),
    (["nope"], "unknown loss 'nope'"),
    ([CE, CE], "fitness references must be unique"),
    (["exp(p"], "exp(p"),
])
def test_bad_references_are_named(tmp_path, references, message):
    with pytest.raises(ValueError) as error:
        search_settings.load_config(_config(tmp_path, references), defaults=CONFIGS / "search" / "defaults.yaml")
    assert message in str(error.value)


def test_proxy_configs_score_ce_and_ngl_as_references():
    for i in range(1, 6):
        cfg = search_settings.load_config(CONFIGS / "search" / f"exp{i}_proxy.yaml")
        assert cfg.fitness.references == ["ce", "ngl"]


def test_the_plot_draws_each_reference_as_a_horizontal_line(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y, **kw: drawn.append((y, kw["label"])))
    generations = [{"generation": g, "best_fitness": [0.3 - 0.01 * g], "median_fitness": [0.5],
                    "references": {"ce": [0.24], "ngl": [0.27]}} for g in range(3)]
    search_directory.SearchDirectory(tmp_path).plot(generations)
    assert drawn == [(0.24, "ce (reference)"), (0.27, "ngl (reference)")]
    assert (tmp_path / "fitness.png").stat().st_size > 0
