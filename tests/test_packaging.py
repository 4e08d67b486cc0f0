"""The package as a user installs it: every subpackage and config file in the wheel, and a wheel
installed into a fresh virtual environment working from a directory outside the checkout (the
loss example, `ngl_keras.evaluate` on arrays, both console commands)."""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_and_config_directory_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ngl_keras").rglob("__init__.py")}
    configs = {".".join(("ngl_keras", *p.relative_to(ROOT).parts)) for p in (ROOT / "configs").rglob("*")
               if p.is_dir()} | {"ngl_keras.configs"}
    assert packages | configs == listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"ngl_keras.configs": "configs"}
    assert PYPROJECT["project"]["scripts"] == {"ngl-train-small": "ngl_keras.cli.train_small:run",
                                               "ngl-search-gp": "ngl_keras.cli.search_gp:run"}


# Run in the fresh environment, from a directory outside the checkout.
LOSS_EXAMPLE = """
import ngl_keras.losses
import keras
import numpy as np

print("from", ngl_keras.__file__)
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss=ngl_keras.NGL(), metrics=["accuracy"])
x = np.random.default_rng(0).random((64, 28, 28, 1), dtype="float32")
model.fit(x, np.arange(64) % 10, batch_size=32, epochs=1, verbose=0)
model.save("m.keras")
print("reloaded", type(keras.models.load_model("m.keras").loss).__name__)
"""
OWN_DATA = """
import keras
import numpy as np
import ngl_keras

def tiny(classes):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(classes, activation="softmax")])

rng = np.random.default_rng(0)
split = lambda n: (rng.random((n, 4), dtype="float32"), np.arange(n) % 3)
result = ngl_keras.evaluate(["ce", "ngl"], tiny, split(48), split(24), split(24), epochs=1, batch_size=16,
                            out="own")
print("configs", ngl_keras.resources.configs_dir())
print("records", sorted(r["loss"] for r in result.records), [r["epochs_run"] for r in result.records])
"""


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_environment_works_outside_the_checkout(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    for name in ("ngl_keras", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    run = lambda *command, **kw: subprocess.run(command, capture_output=True, text=True, timeout=600, **kw)  # noqa: E731
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                str(source))
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = wheels.glob("ngl_keras-*.whl")
    inside = zipfile.ZipFile(wheel).namelist()
    assert "ngl_keras/configs/quick.yaml" in inside and "ngl_keras/configs/datasets/arrays.yaml" in inside
    assert sum(name.endswith(".yaml") for name in inside) == len(list((ROOT / "configs").rglob("*.yaml")))
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--system-site-packages", str(venv))  # TF/Keras from the system
    assert made.returncode == 0, made.stderr[-3000:]
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    installed = run(str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel))
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # No path of the checkout: the venv's python must import the installed package.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NGL_KERAS_VERBOSE")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    site = str(venv / "lib")

    loss = run(str(python), "-c", LOSS_EXAMPLE, cwd=elsewhere, env=env)
    assert loss.returncode == 0, loss.stderr[-3000:]
    assert loss.stdout.split()[1].startswith(site) and "reloaded NGL" in loss.stdout

    own = run(str(python), "-c", OWN_DATA, cwd=elsewhere, env=env)
    assert own.returncode == 0, own.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in own.stdout.splitlines() if line.split(" ", 1)[0] in
                 ("configs", "records"))
    assert lines["configs"].startswith(site) and lines["records"] == "['ce', 'ngl'] [1, 1]"
    assert (elsewhere / "own" / "runs.jsonl").is_file()

    for command, shows in (("ngl-train-small", "quick.yaml)"), ("ngl-search-gp", "exp2_proxy")):
        shown = run(str(bin_dir / command), "--help", cwd=elsewhere, env=env)
        assert shown.returncode == 0, shown.stderr[-3000:]
        text = " ".join(shown.stdout.split())
        assert f"Also: `{command} report OUT" in text and shows in text  # the configs found in the wheel
