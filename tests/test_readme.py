"""README.md's Python examples run as written, and show what their text says they show."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

# Each python block of the README is found by a piece of code only it contains; a new block needs
# an entry here and a test below.
EXAMPLES = {"quickstart": "keras.Input((784,))", "losses": "keras.models.load_model(path)",
            "figure_1": "plots.loss_curves(", "own_data": "ngl_keras.gp.search("}


def blocks():
    return BLOCK.findall(README.read_text())


def run_example(name, tmp_path, monkeypatch):
    """Run the README block of example `name` in a fresh namespace, working directory tmp_path."""
    (code,) = [block for block in blocks() if EXAMPLES[name] in block]
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"README.md ({name} example)", "exec"), namespace)
    return namespace


def test_every_python_block_of_the_readme_is_an_example_tested_here():
    owners = [[name for name, marker in EXAMPLES.items() if marker in block] for block in blocks()]
    assert all(len(names) == 1 for names in owners), owners
    assert sorted(name for names in owners for name in names) == sorted(EXAMPLES)


@pytest.mark.any_backend
def test_quickstart_is_three_lines_that_compile_a_model_with_ngl(tmp_path, monkeypatch):
    import ngl_keras

    (code,) = [block for block in blocks() if EXAMPLES["quickstart"] in block]
    assert len(code.strip().splitlines()) == 3
    ns = run_example("quickstart", tmp_path, monkeypatch)
    assert type(ns["model"].loss) is ngl_keras.NGL and ns["model"].compiled


@pytest.mark.any_backend
def test_losses_example_trains_saves_and_reloads_ngl(tmp_path, monkeypatch, capsys):
    import ngl_keras

    ns = run_example("losses", tmp_path, monkeypatch)
    assert list(tmp_path.iterdir()) == []  # the saved model went to a temporary directory, now removed
    reloaded, x = ns["reloaded"], ns["x"]
    assert type(reloaded.loss) is ngl_keras.NGL and reloaded.loss.get_config()["alpha"] == pytest.approx(2.4092)
    assert "alpha=2.4092" in capsys.readouterr().out  # what the comment says it prints
    assert int(reloaded.optimizer.iterations) == 256 // 64  # it trained: one epoch of 4 batches
    np.testing.assert_allclose(reloaded.predict(x[:8], verbose=0), ns["model"].predict(x[:8], verbose=0),
                               rtol=1e-6)


@pytest.mark.any_backend
def test_figure_1_example_draws_the_curves_and_ngls_minimum_is_where_the_text_says(tmp_path, monkeypatch, capsys):
    ns = run_example("figure_1", tmp_path, monkeypatch)
    assert capsys.readouterr().out == "0.566\n"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(ns["curves"]) == {"ce", "ngl", "focal"}
    assert ns["curves"]["ngl"][2] == pytest.approx(0.566, abs=0.002)
    assert ns["curves"]["ce"][2] == pytest.approx(1.0)  # CE falls all the way to p = 1


@pytest.mark.slow
@pytest.mark.realdata
def test_own_data_example_searches_then_tables_the_found_loss_against_ce(tmp_path, monkeypatch, capsys):
    import json

    ns = run_example("own_data", tmp_path, monkeypatch)
    fame, records = ns["fame"], ns["result"].records
    saved = json.loads((tmp_path / "search" / "own" / "hall_of_fame.json").read_text())
    assert [entry["formula"] for entry in fame] == [entry["formula"] for entry in saved]
    assert [entry["fitness"] for entry in fame] == sorted(entry["fitness"] for entry in fame)  # best first
    assert 0.0 <= fame[0]["fitness"][0] < 0.9  # validation error of a model that learned something
    assert sorted((r["loss"], r["seed"]) for r in records) == [("ce", 0), ("ce", 1), ("found", 0), ("found", 1)]
    assert records == [json.loads(line) for line in (tmp_path / "runs" / "own" / "runs.jsonl").read_text().splitlines()]
    ce = np.mean([r["test_accuracy"] for r in records if r["loss"] == "ce"])
    found = np.mean([r["test_accuracy"] for r in records if r["loss"] == "found"])
    table = ns["result"].table
    assert f"| ce | {100 * ce:.1f} |" in table
    assert f"| found | {100 * (found - ce) / ce:+.2f} |" in table
    printed = capsys.readouterr().out
    assert f"found: {fame[0]['display']} (validation error {fame[0]['fitness'][0]:.3f})" in printed
    assert table in printed
