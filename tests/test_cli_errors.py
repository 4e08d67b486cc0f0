"""Bad input to the command-line tools: one line naming the value, what is accepted and the flag or
key that fixes it, exit code 2, nothing written, and all of it before Keras or a backend is imported
(benchmarks/time_to_error.py measures how soon)."""

import json
import subprocess
import sys

import pytest

from tests.paths import ROOT

# Each case runs in this one interpreter (in-process, as the console command would): its exit code,
# its stderr, and whether any framework got imported by then.
PROBE = """
import contextlib, io, json, sys
from ngl_keras.cli import search_gp, train_small
tools = {"train_small.py": train_small, "search_gp.py": search_gp}
results = []
for script, argv in json.loads(sys.argv[1]):
    sys.argv = [script]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            tools[script].run(argv)
        except SystemExit as exit:
            code = exit.code
    results.append([code, err.getvalue()])
results.append(sorted(m for m in ("keras", "tensorflow", "jax", "tensorflow_datasets") if m in sys.modules))
print(json.dumps(results))
"""

TYPO_GRID = "datasets: [fashion_mnist]\nmodels: [small_cnn]\nlosses: [ce, ngl]\nepoch: 3\n"
TYPO_SEARCH = "experiment: smoke\nfitness: {kind: probe}\npopulaton: 8\n"


def cases(tmp_path):
    out = str(tmp_path / "out")
    (tmp_path / "grid.yaml").write_text(TYPO_GRID)
    (tmp_path / "search.yaml").write_text(TYPO_SEARCH)
    return [
        (["train_small.py", ["--losses", "cee", "--out", out]],
         "error: unknown loss 'cee' (did you mean 'ce'?); known losses: anyloss, "),
        (["train_small.py", ["--losses", "ce", "ngl(alhpa=3.0)", "--out", out]],
         "error: loss 'ngl(alhpa=3.0)' does not accept ['alhpa'] (did you mean 'alpha'?); it takes alpha, "),
        (["train_small.py", ["--config", str(tmp_path / "grid.yaml"), "--out", out]], "epoch"),
        (["train_small.py", ["--datasets", "fashionmnist", "--data-dir", str(tmp_path), "--out", out]],
         "error: unknown dataset 'fashionmnist' (did you mean 'fashion_mnist'?): not one of the paper's"),
        (["train_small.py", ["--models", "resnet50", "--out", out]],
         "error: image size 28 is below resnet50's minimum of 32 px; set image_size >= 32 in the config "
         "(settings: {fashion_mnist: {image_size: 32}}), or choose another model (--models).\n"),
        (["train_small.py", ["--models", "vgg", "--out", out]], "error: unknown model 'vgg'; known models: "),
        (["search_gp.py", ["--experiment", "exp7", "--out", out]], "error: unknown experiment 'exp7'; known: exp1, "),
        (["search_gp.py", ["--config", str(tmp_path / "search.yaml"), "--out", out]], "populaton"),
    ]


def test_bad_input_is_one_line_and_exit_2_before_any_framework_loads(tmp_path):
    given = cases(tmp_path)
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([argv for argv, _ in given])], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    *results, loaded = json.loads(done.stdout)
    assert loaded == []  # no framework was imported to answer any of them
    for (argv, says), (code, stderr) in zip(given, results):
        assert code == 2, (argv, stderr)
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, (argv, stderr)
        assert says in stderr, (argv, stderr)
    assert not (tmp_path / "out").exists()  # nothing written


def test_capitals_train_the_registered_losses_and_the_table_finds_its_baseline(tmp_path):
    from ngl_keras.cli import train_small
    from ngl_keras.grid import LossSpec

    args = train_small.parse_args(["--losses", "CE", "NGL", "ngl(alpha=3.0)", "--datasets", "Fashion_MNIST",
                                   "--models", "Small_CNN", "--out", str(tmp_path / "o")])
    grid = train_small.checked_grid(args)
    assert (grid.datasets, grid.models) == (["fashion_mnist"], ["small_cnn"])
    assert [LossSpec.parse(item).label for item in grid.losses] == ["ce", "ngl", "ngl(alpha=3.0)"]


@pytest.mark.any_backend
def test_a_loss_with_arguments_trains_under_its_label(tmp_path):
    from ngl_keras.cli import train_small

    args = train_small.parse_args(["--losses", "CE", "ngl(alpha=3.0)", "--epochs", "1", "--limit-train", "256",
                                   "--out", str(tmp_path / "o"), "--quiet"])
    from ngl_keras.grid import plan
    from ngl_keras.resources import configs_dir

    runs = plan(train_small.checked_grid(args), configs_dir())
    assert [(r.loss.label, r.loss.name, r.loss.kwargs) for r in runs] == [
        ("ce", "ce", {}), ("ngl(alpha=3.0)", "ngl", {"alpha": 3.0})]
    assert runs[1].loss.build().get_config()["alpha"] == 3.0
