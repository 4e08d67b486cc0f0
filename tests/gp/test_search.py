"""Screening, fitness ranking, and whole searches through search_gp.py: outputs, resume after
SIGKILL, a chief with two workers, and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import search_gp
from ngl_keras.gp import fitness, screening, search_directory, search_run, search_settings
from ngl_keras.gp.evolution import CandidateFailed
from ngl_keras.losses import expression as ex
from tests.paths import CONFIGS, ROOT, kill_when_lines
from tests.processes import ongoing_trials, oracle_env, start, stop_all, wait_all, wait_for_line

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
    cfg.update(changes)  # a gp or screening block is merged over configs/search/defaults.yaml
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(args, env=None, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "search_gp.py")] + args, cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kwargs)


def test_smoke_search_writes_every_output(tmp_path, capsys):
    out = tmp_path / "s"
    search_gp.main(["--config", str(_smoke_config(tmp_path)), "--out", str(out), "--generations", "2"])
    printed = capsys.readouterr().out.splitlines()
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in generations] == [0, 1, 2]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for g in generations:
        assert g["proposed"] == 8 + sum(g["rejected"].values())
        assert g["trained"] + g["cache_hits"] == 8 and g["peak_rss_mb"] > 0
        assert g["versions"]["code"].split("-")[0] == commit and g["versions"]["keras"]  # the code that ran it
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert evaluations and {e["code"] for e in evaluations} == {generations[0]["versions"]["code"]}
    best = [g["best_fitness"][0] for g in generations]
    assert best == sorted(best, reverse=True)  # elitist: the best never gets worse
    fame = json.loads((out / "hall_of_fame.json").read_text())
    assert fame[0]["rank"] == 1 and fame[0]["experiment"] == "smoke" and fame[0]["latex"]
    assert fame[0]["fitness"] == [generations[-1]["best_fitness"][0]]
    # A probe search writes its best formula as a test of the machinery, never as a loss to paste;
    # folded as the hall of fame shows it (constants exact), the same function.
    assert not (out / "best_loss.txt").exists()
    header, formula = (out / "probe_best_formula.txt").read_text().strip().rsplit("\n", 1)
    assert "not a loss to use" in header and header.startswith("#")
    assert ex.to_text(ex.parse(formula), digits=4) == fame[0]["display"] and formula != fame[0]["formula"]
    loss = __import__("ngl_keras").ExpressionLoss(formula)
    unfolded = __import__("ngl_keras").ExpressionLoss(fame[0]["formula"])
    y_true, y_pred = [0, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]]
    assert np.isfinite(float(loss(y_true, y_pred)))
    np.testing.assert_allclose(float(loss(y_true, y_pred)), float(unfolded(y_true, y_pred)), rtol=1e-5)
    assert (out / "fitness.png").read_bytes()[:4] == b"\x89PNG"
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(evaluations) == sum(g["trained"] for g in generations)
    text = search_run.report(out)
    assert "generation 2: best" in text and "hall of fame (probe fitness: 1 - the true-class" in text
    # A probe's best formula is never printed as a loss to paste (it may train to chance).
    assert f"the probe's best formula: {fame[0]['display']}\n  a test of the search machinery, not a loss to use" \
        in text and "ExpressionLoss" not in text
    assert "  1. probe fitness (" in text
    # What the command printed: one line per candidate trained, one per generation (once), the summary.
    candidates = [x for x in printed if x.startswith("candidate ")]
    assert len(candidates) == len(evaluations) and all(re.fullmatch(r"candidate g\d-\d+ fitness \(.+\) in "
                                                                      r"\d+\.\d s: .+", x) for x in candidates)
    assert [x.split(":")[0] for x in printed if x.startswith("generation ")] == [f"generation {g}" for g in range(3)]
    assert all(", scored by the probe " in x and ", trained " not in x for x in printed if x.startswith("generation "))
    summary = printed[printed.index("") + 1:]
    assert summary == search_run.report(out, generations=False).splitlines() and summary[0].startswith("hall of fame")
    assert len(printed) == len(candidates) + 3 + 1 + len(summary)  # nothing else: no keras-tuner tables


@pytest.mark.slow
def test_sigkill_mid_search_resumes_without_retraining_finished_candidates(tmp_path):
    out = tmp_path / "s"
    args = ["--config", str(_smoke_config(tmp_path, generations=3)), "--out", str(out)]
    evaluations = out / "evaluations.jsonl"
    before = kill_when_lines([sys.executable, str(ROOT / "search_gp.py")] + args, evaluations, 12, 120)
    assert 12 <= len(before) < 32
    logged = len(evaluations.read_text().splitlines())
    done = _run(args, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first = done.stdout.splitlines()[0]
    assert re.fullmatch(rf"resuming the search in {re.escape(str(out))}: generation [0-3] of 3, {logged} candidates "
                        r"evaluated so far", first), first
    after = [json.loads(x) for x in evaluations.read_text().splitlines()]
    candidates = [e["candidate"] for e in after]
    # No finished candidate was trained again (only one killed mid-evaluation may repeat).
    assert len(candidates) - len(set(candidates)) <= 1
    generations = [json.loads(x)["generation"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert generations == [0, 1, 2, 3]


def _start(args, env, tuner_id):
    return start("search_gp.py", args, env, tuner_id)


@pytest.mark.slow
def test_a_chief_started_after_its_two_waiting_workers_completes_the_search(tmp_path):
    out = tmp_path / "s"
    # As a cluster scheduler may: the workers first, waiting for a chief that does not exist yet, then the
    # chief. It starts once both wait: a worker that first asked after the chief had finished and exited
    # would find no chief and wait its whole worker_timeout. The search lasts some seconds (~0.3 s a
    # candidate), so that both workers, retrying about every second, are answered.
    config = _smoke_config(tmp_path, generations=2, fitness={"kind": "probe", "probe_steps": 3000})
    args = ["--config", str(config), "--out", str(out)]
    env = {**oracle_env(), "PYTHONUNBUFFERED": "1"}
    processes = [_start(args, env, f"worker{i}") for i in range(2)]
    try:
        for worker in processes:
            wait_for_line(worker, "waiting up to", timeout=300)
        assert not out.exists()  # a waiting worker writes nothing
        processes.append(_start(args, env, "chief"))
        outputs = wait_all(processes, timeout=400)
    finally:
        stop_all(processes)
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-2000:]
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert {e["tuner"] for e in evaluations} <= {"worker0", "worker1"}
    for i in range(2):  # one line per candidate a worker trained
        mine = [e for e in evaluations if e["tuner"] == f"worker{i}"]
        lines = [x for x in outputs[i].splitlines() if x.startswith(f"worker{i}: candidate ")]
        assert [x.split()[2] for x in lines] == [e["candidate"] for e in mine]
    generations = [json.loads(x)["generation"] for x in (out / "generations.jsonl").read_text().splitlines()]
    assert generations == [0, 1, 2]
    assert json.loads((out / "hall_of_fame.json").read_text())[0]["rank"] == 1
    # keras-tuner writes a worker's state after its first trial: a worker that started after the other had
    # taken every candidate (a loaded machine) has none; nothing else is written
    trained = sorted({f"{e['tuner']}.json" for e in evaluations})
    assert trained and sorted(p.name for p in (out / "tuner").iterdir() if not p.name.startswith("trial_")) == [
        "chief.json", "oracle.json"] + trained


@pytest.mark.slow
def test_a_worker_killed_mid_candidate_loses_nothing_and_the_chief_still_exits(tmp_path):
    out = tmp_path / "s"
    config = _smoke_config(tmp_path, generations=1, population=4,
                           fitness={"kind": "probe", "probe_steps": 40000})  # seconds per candidate (numpy: ~0.1 ms a step)
    args = ["--config", str(config), "--out", str(out), "--worker-timeout", "10"]
    env = oracle_env()
    processes = [_start(args, env, "chief"), _start(args, env, "worker0"), _start(args, env, "worker1")]
    chief, worker0, worker1 = processes
    try:
        deadline = time.time() + 200
        ongoing = {}
        while "worker1" not in ongoing and time.time() < deadline:
            time.sleep(0.02)
            ongoing = ongoing_trials(out)
        lost_trial = ongoing["worker1"]
        os.killpg(worker1.pid, signal.SIGKILL)  # mid-candidate (one takes seconds)
        worker1.wait()
        lost = json.loads((out / "tuner" / f"trial_{lost_trial}" / "trial.json").read_text())
        lost_candidate = lost["hyperparameters"]["values"]["candidate"]
        assert worker0.wait(timeout=300) == 0
        chief_output = chief.communicate(timeout=120)[0]
        assert chief.returncode == 0, chief_output[-2000:]
    finally:
        stop_all(processes)
    assert re.search(rf"worker1: silent for 1\d s while training candidate {lost_candidate}; it goes back to "
                     "the queue.", chief_output), chief_output[-2000:]
    evaluations = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert [e["tuner"] for e in evaluations if e["candidate"] == lost_candidate] == ["worker0"]
    generations = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["generation"] for g in generations] == [0, 1]
    assert sum(g["trained"] for g in generations) == len({e["candidate"] for e in evaluations})


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("role", ["alone", "worker"])
def test_kill_9_of_a_training_search_leaves_no_training_process(tmp_path, role):
    import psutil

    out = tmp_path / "s"
    args = ["--experiment", "exp1_proxy", "--out", str(out), "--population", "2", "--generations", "0",
            "--limit-train", "512"]
    env = oracle_env()
    processes = [_start(args, env, "chief"), _start(args, env, "worker0")] if role == "worker" else \
        [_start(args, {}, "tuner0")]
    search_process = psutil.Process(processes[-1].pid)

    def training_child():
        for child in search_process.children():
            try:
                if "spawn_main" in " ".join(child.cmdline()) and child.cpu_times().user > 5:
                    return child  # TensorFlow imported, the training under way
            except psutil.Error:  # a short-lived helper that has just ended
                continue

    try:
        deadline = time.time() + 300
        while training_child() is None and time.time() < deadline:
            time.sleep(0.2)
        children = [c for c in search_process.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
        assert training_child() in children  # with the resource tracker
        os.kill(search_process.pid, signal.SIGKILL)
        processes[-1].wait()
        assert psutil.wait_procs(children, timeout=10)[1] == []  # ended by themselves within seconds
    finally:
        stop_all(processes)


@pytest.mark.parametrize("change,message", [
    ({"gp": {"crossover": 1.2}}, "rate crossover must lie in [0, 1]; got 1.2"),
    ({"gp": {"min_height": 9, "max_size": 5}}, "min_height 9 needs at least 10 nodes, above max_size 5"),
    ({"gp": {"operators": []}}, "the operator set is empty"),
    ({"gp": {"max_size": 0}}, "max_size must be an integer >= 1; got 0"),
    ({"gp": {"mutation_max_height": -1}}, "mutation_max_height must be an integer >= 0; got -1"),
    ({"gp": {"constant_range": [1.0]}}, "constant_range must be [low, high], two finite numbers with low < high; got [1.0]"),
    ({"gp": {"constant_probability": 1.5}}, "constant_probability must lie in [0, 1]; got 1.5"),
    ({"gp": {"protected_epsilon": 0.0}}, "protected_epsilon must be > 0; got 0.0"),
    ({"gp": {"tournament_size": 2.5}}, "'tournament_size' must be an integer; got 2.5"),
    ({"gp": {"crosover": 0.5}}, "unknown key 'crosover'; accepted keys: operators"),
    ({"screening": {"allowed_range": [1.0]}}, "allowed_range must be [low, high], two finite numbers with low < high; got [1.0]"),
    ({"screening": {"allowed_range": [5.0, -5.0]}}, "allowed_range must be [low, high], two finite numbers with low < high; got [5.0, -5.0]"),
    ({"screening": {"allowed_range": [float("nan"), 1.0]}}, "allowed_range must be [low, high], two finite numbers with low < high; got [nan, 1.0]"),
    ({"screening": {"max_attempts": 0}}, "max_attempts must be an integer >= 1; got 0"),
    ({"screening": {"probe_batch": 0}}, "probe_batch must be a positive integer; got 0"),
    ({"screening": {"improvement_rate": -1.0}}, "improvement_rate must be > 0; got -1.0"),
    ({"screening": {"fingerprint_digits": -2}}, "fingerprint_digits must be an integer >= 0; got -2"),
    ({"experiment": "exp9"}, "unknown experiment 'exp9'; known: exp1"),
    ({"fitness": {"kind": "train", "datasets": ["mnistt"], "model": "small_cnn", "runs": 1}},
     "unknown dataset 'mnistt': not one of the paper's"),
    ({"fitness": {"kind": "train", "datasets": [], "model": "small_cnn", "runs": 1}},
     "fitness: datasets is empty; give at least one dataset"),
    ({"fitness": {"kind": "train", "datasets": ["fashion_mnist"], "model": "small_cnn", "runs": 1,
                  "limit_train": -5}}, "limit_train must be an integer >= 1; got -5"),
    ({"fitness": {"kind": "train", "datasets": ["fashion_mnist"], "model": "small_cnn", "runs": 0}},
     "runs must be an integer >= 1; got 0"),
    ({"fitness": {"kind": "probe", "probe_steps": 0}}, "probe_steps must be an integer >= 1; got 0"),
    ({"fitness": {"kind": "probe", "recycle_every": -1}}, "recycle_every must be an integer >= 0; got -1"),
    ({"population": 1}, "population must be an integer >= 2; got 1"),
    ({"generations": -1}, "generations must be an integer >= 0; got -1"),
    ({"hall_of_fame": 0}, "hall_of_fame must be an integer >= 1; got 0"),
    ({"worker_timeout": 1}, "worker_timeout must be >= 10 seconds; got 1"),
])
def test_bad_search_configs_are_named(tmp_path, change, message):
    cfg = yaml.safe_load((CONFIGS / "search" / "smoke.yaml").read_text())
    cfg.update(change)  # a gp or screening block is merged over configs/search/defaults.yaml
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError) as error:
        search_gp.main(["--config", str(path), "--out", str(tmp_path / "out")])
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_every_search_config_is_the_defaults_plus_its_own_settings():
    defaults = yaml.safe_load((CONFIGS / "search" / "defaults.yaml").read_text())
    assert set(defaults["gp"]) == set(search_settings.GP.__dataclass_fields__)
    assert set(defaults["screening"]) <= set(search_settings.Screening.__dataclass_fields__)
    for name in search_settings.EXPERIMENTS:
        own = yaml.safe_load((CONFIGS / "search" / f"{name}.yaml").read_text())
        assert "gp" not in own and "screening" not in own  # one place for the shared block
        cfg = search_settings.load_config(CONFIGS / "search" / f"{name}.yaml")
        assert cfg.gp.to_json() == defaults["gp"] and cfg.screening.to_json() == defaults["screening"]
        assert cfg.fitness.to_json() == own["fitness"] and cfg.experiment == name


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-1"], "argument --epochs: must be an integer >= 1; got -1"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1; got 0"),
    (["--limit-train", "0"], "argument --limit-train: must be an integer >= 1; got 0"),
    (["--limit-train", "-5"], "argument --limit-train: must be an integer >= 1; got -5"),
    (["--population", "1"], "argument --population: must be an integer >= 2; got 1"),
    (["--generations", "-2"], "argument --generations: must be an integer >= 0; got -2"),
    (["--worker-timeout", "nan"], "argument --worker-timeout: must be a number >= 10; got nan"),
    (["--worker-timeout", "3"], "argument --worker-timeout: must be a number >= 10; got 3"),
])
def test_bad_numbers_on_the_command_line_exit_2_with_one_line(tmp_path, args, message):
    done = _run(["--experiment", "smoke", "--out", str(tmp_path / "o")] + args, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(message)
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_empty_or_malformed_config_files_are_named(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.yaml' is empty: it must hold a mapping of settings"):
        search_gp.main(["--config", str(empty), "--out", str(tmp_path / "o")])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping of settings, got list"):
        search_gp.main(["--config", str(listed), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="unknown experiment 'defaults'"):
        search_gp.main(["--experiment", "defaults", "--out", str(tmp_path / "o")])


def test_out_that_is_a_file_or_unwritable_is_refused_in_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    done = _run(["--experiment", "smoke", "--out", str(a_file)], timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: --out {a_file} is a file, not a directory; give a directory for the search."
    assert a_file.read_text() == "mine"
    # A directory nobody can create, even root (CI runs as root, who writes anywhere): one under a file.
    with pytest.raises(ValueError) as error:
        search_gp.main(["--experiment", "smoke", "--out", str(a_file / "s")])
    assert str(error.value) == f"cannot write the search directory {a_file / 's'}: Not a directory."
    assert a_file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_report_names_a_generation_line_without_keys_and_skips_a_cut_last_line(tmp_path):
    out = tmp_path / "s"
    search_gp.main(["--experiment", "smoke", "--out", str(out), "--generations", "1", "--population", "4"])
    log = out / "generations.jsonl"
    good = log.read_text()
    log.write_text(good + '{"generation": 2, "best_fit')  # a crash while appending
    with pytest.warns(UserWarning, match=r"generations.jsonl: skipping a truncated last line \(a crash"):
        lines = search_run.report(out).splitlines()
    assert [x.split(":")[0] for x in lines if x.startswith("generation ")] == ["generation 0", "generation 1"]
    assert log.read_text().endswith('"best_fit')  # and reading did not rewrite the file
    log.write_text(good + '{"generation": 2}\n')
    with pytest.raises(ValueError, match=r"generations.jsonl: record 3 is not a generation summary \(missing best_fitness"):
        search_run.report(out)
    log.write_text('{"generation": 0, \n' + good)
    with pytest.raises(ValueError, match="generations.jsonl: line 1 is not valid JSON; the file is corrupt"):
        search_run.report(out)
    done = _run(["report", str(out)], timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "line 1 is not valid JSON" in done.stderr


def test_a_cut_last_line_is_dropped_by_the_search_before_it_appends(tmp_path):
    out = tmp_path / "s"
    args = ["--experiment", "smoke", "--out", str(out), "--population", "4"]
    search_gp.main(args + ["--generations", "0"])
    log = out / "generations.jsonl"
    log.write_text(log.read_text() + '{"generation": 1, "be')
    # The search resumed: it repairs the log (an atomic rewrite) before it appends, and says so.
    with pytest.warns(UserWarning, match=r"generations.jsonl: removing a truncated last line \(a crash"):
        search_gp.main(args + ["--generations", "0"])
    assert [json.loads(x)["generation"] for x in log.read_text().splitlines()] == [0]


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


def test_a_search_saved_before_screening_rules_existed_resumes_and_other_rules_are_refused(tmp_path):
    out = tmp_path / "s"
    args = ["--experiment", "smoke", "--out", str(out), "--generations", "0", "--population", "4"]
    search_gp.main(args)
    saved = out / "search.yaml"
    cfg = json.loads(saved.read_text())
    assert cfg["screening"].pop("rules") == ["non_finite", "out_of_range", "constant", "no_improvement"]
    saved.write_text(json.dumps(cfg))  # as written before the setting existed: every rule applied
    search_gp.main(args)  # resumes: nothing to refuse
    cfg["screening"]["rules"] = ["out_of_range"]
    saved.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"settings that differ: screening\)"):
        search_gp.main(args)


@pytest.mark.realdata
def test_training_fitness_uses_validation_error_and_fails_a_diverged_candidate(tmp_path):
    cfg = search_settings.load_config(CONFIGS / "search" / "exp2_proxy.yaml", {"limit_train": 256})
    cfg = cfg.replace(fitness=cfg.fitness.replace(runs=1))
    fit = search_run.build_fitness(cfg, SCREEN, tmp_path, CONFIGS)
    value = fit("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))")
    assert len(value) == 1 and 0.0 <= value[0] <= 1.0
    with pytest.raises(CandidateFailed) as failure:
        fit("exp(1000*p) * y + p")
    assert failure.value.reason == "diverged"


def test_a_dataset_that_is_not_available_stops_the_search_before_anything_is_written(tmp_path):
    config = _smoke_config(tmp_path, experiment="exp5", fitness={
        "kind": "train", "datasets": ["cifar100"], "model": "small_cnn", "runs": 1, "compare_with_ce": True})
    out = tmp_path / "s"
    done = _run(["--config", str(config), "--out", str(out), "--data-dir", str(tmp_path / "tfds")], timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"error: dataset 'cifar100' (tfds 'cifar100') is not available offline in {tmp_path / 'tfds'}")
    # ... and it is all the command printed: no framework banner, no tfds warning, no search.
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == "", done.stderr
    assert not out.exists()


def test_the_fitness_plot_has_whole_generation_ticks(tmp_path, monkeypatch):
    from tests.test_report import saved_figures, visible_ticks

    figures = saved_figures(monkeypatch)
    directory = search_directory.SearchDirectory(tmp_path)
    for count in (1, 3):
        directory.plot([{"generation": g, "best_fitness": [0.5 - 0.1 * g], "median_fitness": [0.6]}
                        for g in range(count)])
        ticks = visible_ticks(figures[-1].axes[0])
        assert ticks and all(t == int(t) for t in ticks) and set(range(count)) <= set(ticks)


def test_the_fitness_plots_label_fits_and_its_legend_hides_no_reference_line(tmp_path, monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tests.test_report import saved_figures

    figures = saved_figures(monkeypatch)
    generations = [{"generation": g, "best_fitness": [0.3 - 0.01 * g], "median_fitness": [0.5],
                    "references": {"ce": [0.2437], "ngl": [0.2693]}} for g in range(3)]
    search_directory.SearchDirectory(tmp_path).plot(generations)
    figure = figures[-1]
    axis, renderer = figure.axes[0], FigureCanvasAgg(figure).get_renderer()  # the figure is closed once saved
    label, plot_area = axis.yaxis.label.get_window_extent(renderer), axis.get_window_extent(renderer)
    assert axis.get_ylabel() == "fitness (lower is better)" and label.height <= plot_area.height
    assert not axis.get_legend().get_window_extent(renderer).overlaps(plot_area)  # beside the axes


@pytest.mark.any_backend
def test_a_generation_line_shows_the_best_formula_with_constants_folded_as_the_hall_of_fame_does():
    summary = {"generation": 1, "best_fitness": [0.2], "median_fitness": [0.3], "proposed": 3, "rejected": {},
               "cache_hits": 0, "trained": 3, "wall_time_s": 1.0, "peak_rss_mb": 10,
               "best_formula": "p * log(log(-2.7993)) - y"}
    # log(log(|-2.7993|)) = 0.028946...: the protected logs add an epsilon of 1e-6 only.
    assert search_run.format_generation(summary).endswith("; best p * 0.02895 - y")


def test_ctrl_c_swallowed_inside_a_candidate_still_stops_the_search_at_the_next_check():
    import os
    import signal

    from ngl_keras.gp import oracle

    # What a search process starts with (Interrupts leaves a SIGINT handler it did not find alone): set
    # again here, so that a handler left by an earlier test of this process cannot change the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with oracle.INTERRUPTS:
            assert signal.getsignal(signal.SIGINT) == oracle.INTERRUPTS._handle, previous
            try:  # where Python swallows it: a garbage collector's callback prints "Exception ignored" only
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100):  # delivered at the next bytecode of the main thread, within 10 s at most
                    time.sleep(0.1)
            except KeyboardInterrupt:
                pass
            with pytest.raises(KeyboardInterrupt):
                oracle.INTERRUPTS.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        oracle.INTERRUPTS.check()  # and forgotten after the search
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_resumed_search_says_where_it_resumes_and_keras_tuner_stays_quiet(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["--experiment", "smoke", "--out", str(out), "--population", "4"]
    search_gp.main(args + ["--generations", "0"])
    capsys.readouterr()
    search_gp.main(args + ["--generations", "0"])
    printed = capsys.readouterr().out
    assert "the search in this directory is complete." in printed and "Reloading Tuner" not in printed
