"""The Keras backend choice with KERAS_BACKEND unset: JAX when TensorFlow is absent (said once on
stderr with -v), one line naming the extra when no backend is installed (exit 2 for the command-line
tools, an ImportError for the Python API), never a traceback."""

import os
import subprocess
import sys

import pytest

from tests.paths import ROOT

# Makes the modules named absent, as in an environment without them: importing them and asking
# whether they exist (`importlib.util.find_spec`) both fail.
HIDE = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
"""


def _run(code, hidden, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "NGL_KERAS_VERBOSE")}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json naming a backend
    return subprocess.run([sys.executable, "-c", HIDE.format(hidden=set(hidden)) + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_without_tensorflow_the_package_and_the_tools_use_jax(tmp_path):
    done = _run("import ngl_keras.losses, keras, os\n"
                "print(keras.backend.backend(), os.environ['KERAS_BACKEND'], type(ngl_keras.NGL()).__name__)\n",
                {"tensorflow"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["jax", "jax", "NGL"]
    said = "ngl_keras: TensorFlow is not installed; using the JAX backend (set KERAS_BACKEND to choose).\n"
    assert said not in done.stderr  # a library import says nothing
    verbose = _run("import os; os.environ['NGL_KERAS_VERBOSE'] = '1'\n"
                   "from ngl_keras import cli\ncli.load_frameworks(); cli.load_frameworks()\n"
                   "import keras; print(keras.backend.backend())\n", {"tensorflow"}, tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert verbose.stdout.split() == ["jax"] and verbose.stderr.count(said) == 1


EXTRA = ('no Keras backend is installed (neither TensorFlow nor JAX): pip install "ngl_keras[tf]" (TensorFlow) '
         'or "ngl_keras[jax]" (JAX).')


@pytest.mark.parametrize("script", ["train_small.py", "search_gp.py"])
def test_with_no_backend_the_tools_say_which_extra_to_install(script, tmp_path):
    out = tmp_path / "out"
    arguments = ["--epochs", "1"] if script == "train_small.py" else ["--experiment", "smoke"]
    code = (f"import runpy; sys.argv = [{script!r}, *{arguments + ['--out', str(out)]!r}]\n"
            f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n")
    done = _run(code, {"tensorflow", "jax"}, tmp_path)
    assert (done.returncode, done.stderr) == (2, f"error: {EXTRA}\n")
    assert not out.exists()


def test_with_no_backend_the_api_raises_one_line_import_error(tmp_path):
    done = _run("import ngl_keras\ntry:\n    ngl_keras.NGL\nexcept ImportError as error:\n    print(error)\n"
                "print(ngl_keras.formula.to_text(ngl_keras.formula.parse('p*y')))\n", {"tensorflow", "jax"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [EXTRA, "p * y"]
