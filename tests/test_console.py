"""What a run prints: the frameworks' harmless start-up lines filtered at the file descriptor,
every other line passed on, -v showing everything, and TensorFlow never imported under JAX."""

import logging
import os
import subprocess
import sys

import pytest

from ngl_keras import console
from tests.paths import ROOT

# As TensorFlow 2.21 writes them on a CPU machine (the second group again on the first device query).
BANNERS = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795799776.009814    2829 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors from different computation "
    "orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1795799878.479773    4150 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to "
    "use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1795799881.061667    4150 util.cc:131] oneDNN supports DT_HALF only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
]
NO_GPU = [
    "I0000 00:00:1795799776.010194    2829 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1795799779.585340    2829 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "E0000 00:00:1795799779.585340    2829 cuda_executor.cc:1228] failed to allocate 1.0G of device memory",
    "F0000 00:00:1795799779.585340    2829 port.cc:153] Check failed: oneDNN custom operations are on.",
    "Traceback (most recent call last):",
    "WARNING: something else before absl::InitializeLog()",
]


def test_only_the_banners_and_without_a_gpu_the_no_gpu_lines_are_harmless():
    assert all(console.is_harmless(line + "\n", nvidia_gpu=False) for line in BANNERS + NO_GPU)
    assert all(console.is_harmless(line, nvidia_gpu=True) for line in BANNERS)
    assert not any(console.is_harmless(line, nvidia_gpu=True) for line in NO_GPU)  # a real fault there
    assert not any(console.is_harmless(line, nvidia_gpu=gpu) for line in REAL for gpu in (False, True))


def test_filtered_stderr_drops_the_banners_and_passes_every_other_line_on(capfd):
    with console.filtered_stderr(nvidia_gpu=False):
        os.write(2, ("\n".join(BANNERS[:2] + NO_GPU + REAL[:2]) + "\n").encode())
        os.write(2, b"a Python warning\n")
        os.write(2, BANNERS[0].encode() + b"\n" + b"an unfinished last line")
    os.write(2, b"after\n")
    # passed on as written: the unfinished line as it is, the next write continues it
    assert capfd.readouterr().err.splitlines() == REAL[:2] + ["a Python warning", "an unfinished last lineafter"]
    with console.filtered_stderr(nvidia_gpu=True):
        os.write(2, ("\n".join(NO_GPU) + "\n").encode())
    assert capfd.readouterr().err.splitlines() == NO_GPU


ABORT = """
import os
from ngl_keras import console
with console.filtered_stderr(nvidia_gpu=False):
    os.write(2, {lines!r})
    os.abort()
"""


def test_the_last_lines_of_a_process_that_aborts_inside_the_filter_are_not_lost():
    lines = (BANNERS[0] + "\n" + REAL[1] + "\n").encode()
    done = subprocess.run([sys.executable, "-c", ABORT.format(lines=lines)], cwd=ROOT, capture_output=True,
                          timeout=120)
    assert done.returncode == -6 and done.stderr.decode().splitlines() == [REAL[1]]


def test_tfds_warning_about_a_missing_dataset_folder_is_dropped_and_other_absl_warnings_kept(caplog):
    console.load_frameworks()
    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING, logger="absl"):
        absl.warning("Variant folder %s has no %s", "/tmp/none/cifar10/3.0.2", "dataset_info.json")  # as tfds
        absl.warning("5 out of the last 5 calls to <function f> triggered tf.function retracing")
    assert [record.getMessage()[:13] for record in caplog.records] == ["5 out of the "]


def _cli(args, verbose=False):
    return subprocess.run([sys.executable, str(ROOT / "train_small.py")] + args + (["-v"] if verbose else []),
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                                                  console.VERBOSE)})


@pytest.mark.parametrize("verbose", [False, True])
def test_a_cli_error_is_the_only_line_and_v_shows_the_frameworks(tmp_path, verbose):
    # A dataset that is not prepared: the whole output is the one error line (no banner, no
    # "Could not find cuda drivers", no cuInit error, no tfds warning, no grid planned).
    done = _cli(["--datasets", "cifar10", "--models", "small_cnn", "--data-dir", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o")], verbose)
    assert done.returncode == 2 and done.stdout == ""
    error = f"error: dataset 'cifar10' (tfds 'cifar10') is not available offline in {tmp_path / 'none'}"
    lines = done.stderr.strip().splitlines()
    if not verbose:
        assert len(lines) == 1 and lines[0].startswith(error), done.stderr
    else:
        assert lines[-1].startswith(error) and any("oneDNN custom operations are on" in x for x in lines)
        assert any("Variant folder" in x for x in lines)


def test_on_jax_the_cli_start_up_never_imports_tensorflow_and_a_librarys_later_import_is_filtered():
    code = ("import sys; from ngl_keras import console; console.load_frameworks(); "  # as the two CLIs start
            "print(sorted(m for m in ('jax', 'tensorflow') if m in sys.modules)); "
            "import tensorflow as tf; print(int(tf.constant(41) + 1))")  # as tfds or a Keras layer may
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.stdout.split() == ["['jax']", "42"] and done.stderr == "", done.stderr[-2000:]


IMPORT_ALONE = """
import os, subprocess, sys
started = []
real_popen_init = subprocess.Popen.__init__
def recording_init(self, *args, **kwargs):
    started.append(args[:1])
    real_popen_init(self, *args, **kwargs)
subprocess.Popen.__init__ = recording_init
fd2, finders = os.fstat(2), list(sys.meta_path)
import ngl_keras
after = os.fstat(2)
print(started, (after.st_dev, after.st_ino) == (fd2.st_dev, fd2.st_ino), sys.meta_path == finders,
      sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))
"""


def test_importing_the_package_starts_no_process_keeps_fd_2_and_adds_no_import_hook():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALONE], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != console.VERBOSE})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "[] True True []" and done.stderr == ""

