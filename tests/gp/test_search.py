"""Screening, fitness ranking, and whole searches through search_gp.py: outputs, resume after
SIGKILL, a chief with two workers, and bad input."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import search_gp
from ngl_keras.gp import fitness, screening, search
from ngl_keras.losses import expression as ex
from tests.paths import CONFIGS, ROOT, kill_when_lines

SCREEN = screening.LossScreen()


@pytest.mark.parametrize("formula,reason", [
    ("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))", None),
    ("-y*log(p)", None),
    ("y*log(p)", "no_improvement"),
    ("p*y*0 + 3", "constant"),
    ("exp(100*p)*y", "non_finite"),
    ("p/y", "out_of_range"),
])
def test_screening_rejects_by_reason(formula, reason):
    assert SCREEN(ex.parse(formula))[0] == reason


def test_equivalent_formulas_share_a_fingerprint_and_different_ones_do_not():
    a = SCREEN(ex.parse("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"))[1]
    b = SCREEN(ex.parse("exp(2.4092 - (y+1)*p) - cos(cos(sin(p)))"))[1]
    c = SCREEN(ex.parse("exp(2.4 - p*(1+y)) - cos(cos(sin(p)))"))[1]
    assert a == b and a != c


def test_experiment5_ranking_follows_the_paper():
    key = fitness.experiment5_key
    assert key([1.0, -2.0, 3.0]) == [-2.0, -2.0]                     # 2 wins, mean over won = 2
    ranked = sorted([key([-0.5, -0.1, -0.2]), key([0.1, -5.0, -5.0]), key([2.0, 1.0, -1.0]),
                     key([0.5, 0.5, -9.0]), key([-3.0, -3.0, -3.0])])
    assert ranked == [key([2.0, 1.0, -1.0]), key([0.5, 0.5, -9.0]), key([0.1, -5.0, -5.0]),
                      key([-0.5, -0.1, -0.2]), key([-3.0, -3.0, -3.0])]


def _smoke_config(tmp_path, **changes):
    cfg = yaml.safe_load((CONFIGS / "search" / "smoke.yaml").read_text())
    cfg.update(changes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(args, env=None, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "search_gp.py")] + args, cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kwargs)


def test_smoke_search_writes_every_output(tmp_path):
    out = tmp_path / "s"
    search_gp.main(["--config", str(_smoke_config(tmp_path)), "--out", str(out), "--generations", "2"])
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in generations] == [0, 1, 2]
    for g in generations:
        assert g["proposed"] == 8 + sum(g["rejected"].values())
        assert g["trained"] + g["cache_hits"] == 8 and g["peak_rss_mb"] > 0
    best = [g["best_fitness"][0] for g in generations]
    assert best == sorted(best, reverse=True)  # elitist: the best never gets worse
    fame = json.loads((out / "hall_of_fame.json").read_text())
    assert fame[0]["rank"] == 1 and fame[0]["experiment"] == "smoke" and fame[0]["latex"]
    assert fame[0]["fitness"] == [generations[-1]["best_fitness"][0]]
    line = (out / "best_loss.txt").read_text().strip()
    assert line == f'ExpressionLoss("{fame[0]["formula"]}")'
    loss = eval(line, {"ExpressionLoss": __import__("ngl_keras").ExpressionLoss})  # the line is usable
    assert np.isfinite(float(loss([0, 1], [[0.2, 0.8], [0.6, 0.4]])))
    assert (out / "fitness.png").read_bytes()[:4] == b"\x89PNG"
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(evaluations) == sum(g["trained"] for g in generations)
    text = search.report(out)
    assert "generation 2: best" in text and "hall of fame:" in text and line in text


@pytest.mark.slow
def test_sigkill_mid_search_resumes_without_retraining_finished_candidates(tmp_path):
    out = tmp_path / "s"
    args = ["--config", str(_smoke_config(tmp_path, generations=3)), "--out", str(out)]
    evaluations = out / "evaluations.jsonl"
    before = kill_when_lines([sys.executable, str(ROOT / "search_gp.py")] + args, evaluations, 12, 120)
    assert 12 <= len(before) < 32
    done = _run(args, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = [json.loads(x) for x in evaluations.read_text().splitlines()]
    candidates = [e["candidate"] for e in after]
    # No finished candidate was trained again (only one killed mid-evaluation may repeat).
    assert len(candidates) - len(set(candidates)) <= 1
    generations = [json.loads(x)["generation"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert generations == [0, 1, 2, 3]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_chief_and_two_workers_complete_the_search(tmp_path):
    out = tmp_path / "s"
    args = ["--config", str(_smoke_config(tmp_path, generations=2)), "--out", str(out)]
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(_free_port())}
    chief = subprocess.Popen([sys.executable, str(ROOT / "search_gp.py")] + args, cwd=ROOT,
                             env={**os.environ, **env, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(8)
    workers = [subprocess.Popen([sys.executable, str(ROOT / "search_gp.py")] + args, cwd=ROOT,
                                env={**os.environ, **env, "KERASTUNER_TUNER_ID": f"worker{i}"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        for worker in workers:
            assert worker.wait(timeout=300) == 0
        chief_output, _ = chief.communicate(timeout=120)
        assert chief.returncode == 0, chief_output[-2000:]
    finally:
        for p in workers + [chief]:
            if p.poll() is None:
                p.kill()
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert {e["tuner"] for e in evaluations} == {"worker0", "worker1"}
    generations = [json.loads(x)["generation"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert generations == [0, 1, 2]
    assert json.loads((out / "hall_of_fame.json").read_text())[0]["rank"] == 1


@pytest.mark.parametrize("change,message", [
    ({"gp": {"crossover": 1.2}}, "rate crossover must lie in [0, 1]; got 1.2"),
    ({"gp": {"min_height": 9, "max_size": 5}}, "min_height 9 needs at least 10 nodes, above max_size 5"),
    ({"gp": {"operators": []}}, "the operator set is empty"),
    ({"experiment": "exp9"}, "unknown experiment 'exp9'; known: exp1"),
    ({"fitness": {"kind": "train", "datasets": ["mnist"], "model": "small_cnn", "runs": 1}},
     "unknown dataset 'mnist'; known datasets"),
    ({"population": 1}, "population must be an integer >= 2; got 1"),
    ({"gp": {"crosover": 0.5}}, "unknown key 'crosover'; accepted keys: operators"),
])
def test_bad_search_configs_are_named(tmp_path, change, message):
    cfg = yaml.safe_load((CONFIGS / "search" / "smoke.yaml").read_text())
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in ("gp",) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError) as error:
        search_gp.main(["--config", str(path), "--out", str(tmp_path / "out")])
    assert message in str(error.value)


def test_unknown_experiment_name_and_foreign_or_corrupt_directories(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'exp7'; known: exp1, exp1_proxy"):
        search_gp.main(["--experiment", "exp7", "--out", str(tmp_path / "o")])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no search"):
        search_gp.main(["--experiment", "smoke", "--out", str(foreign)])
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "s"
    search_gp.main(["--experiment", "smoke", "--out", str(out), "--generations", "0"])
    with pytest.raises(ValueError, match=r"holds a different search \(settings that differ: population\)"):
        search_gp.main(["--experiment", "smoke", "--out", str(out), "--generations", "0", "--population", "9"])
    (out / "tuner" / "oracle.json").write_text('{"ongoing_trials": ')
    with pytest.raises(ValueError, match="is corrupt: its keras-tuner state cannot be read"):
        search_gp.main(["--experiment", "smoke", "--out", str(out), "--generations", "0"])
    done = _run(["--experiment", "smoke", "--out", str(out), "--generations", "0"], timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: search directory")
    assert "Traceback" not in done.stderr


@pytest.mark.realdata
def test_training_fitness_uses_validation_error_and_gives_diverged_the_worst(tmp_path):
    cfg = search.load_config(CONFIGS / "search" / "exp2_proxy.yaml", {"limit_train": 256})
    cfg["fitness"]["runs"] = 1
    fit = search.build_fitness(cfg, SCREEN, tmp_path, CONFIGS)
    value = fit("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
    assert len(value) == 1 and 0.0 <= value[0] <= 1.0
    assert fit("exp(1000*p) * y + p") == [fitness.WORST]
