"""The command-line tools: their help (fast, no framework loaded, every option described, the report
subcommand and the defaults named), the package's submodules reachable as attributes, and one line for an error or Ctrl-C."""

import subprocess
import sys

import pytest

from tests.paths import ROOT

# Runs a CLI's --help in this interpreter and says which frameworks got imported.
PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("exit", code, "loaded", sorted(m for m in ("keras", "tensorflow", "jax") if m in sys.modules))
"""


@pytest.mark.parametrize("script", ["train_small.py", "search_gp.py"])
def test_help_loads_no_framework_and_describes_every_option(script):
    done = subprocess.run([sys.executable, "-c", PROBE.format(script=str(ROOT / script))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    text = done.stdout
    assert text.strip().splitlines()[-1] == "exit 0 loaded []"
    assert f"Also: `{script} report OUT" in " ".join(text.split())
    options = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert len(options) >= 10
    for line in text.splitlines():  # an option line without its description on it or on the next line
        if line.startswith("  --") and len(line.split()) <= 2:
            following = text.splitlines()[text.splitlines().index(line) + 1]
            assert following.startswith(" " * 10), f"{line.strip()} has no help text"
    if script == "train_small.py":
        assert "quick.yaml)" in text and "--weights {none,imagenet}" in text
    else:
        assert "exp2_proxy" in text and "smoke" in text


def test_submodules_are_attributes_of_the_package():
    code = "import ngl_keras; print(ngl_keras.plots.loss_curves.__name__, ngl_keras.training.__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["loss_curves", "ngl_keras.training"], done.stderr[-1000:]


def test_weights_flag_overrides_the_grid(tmp_path):
    import train_small

    with pytest.raises(ValueError, match="small_cnn"):  # the small CNN has no pretrained weights
        train_small.main(["--weights", "imagenet", "--epochs", "1", "--out", str(tmp_path / "o")])


@pytest.mark.any_backend
@pytest.mark.parametrize("raised, code, line", [
    (KeyboardInterrupt(), 130, "interrupted: what finished is saved; run the same command again to resume."),
    (ValueError("loss 'cee' is unknown"), 2, "error: loss 'cee' is unknown"),
    (PermissionError(13, "Permission denied"), 1, "error: [Errno 13] Permission denied"),
])
def test_run_cli_turns_ctrl_c_bad_input_and_os_errors_into_one_line(raised, code, line, capsys):
    from ngl_keras.files import run_cli

    def main():
        raise raised

    with pytest.raises(SystemExit) as exit:
        run_cli(main)
    assert exit.value.code == code
    assert capsys.readouterr().err.strip() == line
