"""What a run prints on the terminal: by default our own lines only (one per run or candidate, one
summary per generation, warnings when something is wrong); with the command-line tools' `-v` the
frameworks' own output too.

TensorFlow's C++ writes a start-up banner to file descriptor 2 before absl logging is initialised
(so TF_CPP_MIN_LOG_LEVEL cannot stop it), on `import tensorflow` and again on the first device
query. `load_frameworks` runs both under `filtered_stderr`, which drops the lines known to be
harmless and passes every other line on as it arrives (on another backend, a later import of
TensorFlow by a library runs under it too): an unknown message, a Python traceback, a
fatal error are never swallowed (the filter is a process of its own: it still passes on the last
lines of a process that aborts).

Verbosity travels in the environment variable NGL_KERAS_VERBOSE, so that the search's training
processes (spawned) and a distributed search's workers started with it are as quiet as the command:
"1" shows everything (no filter), "0" (the CLIs' default) also hides TensorFlow's C++ INFO and
WARNING lines (TF_CPP_MIN_LOG_LEVEL=2) and keras-tuner's per-trial tables. Only the command-line
tools (and the search's training processes they start) call `load_frameworks`: importing
ngl_keras filters nothing (a notebook, a test or a library user sees the frameworks as Keras shows
them). This module imports no framework.
"""

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

VERBOSE = "NGL_KERAS_VERBOSE"

# Lines written to stderr while the frameworks load that say nothing is wrong, on any machine.
HARMLESS = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\.",
    r"^I\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use",
    r"^To enable the following instructions: .*, in other operations, rebuild TensorFlow with",
    # float16 (or another type) on a CPU without AVX-512 FP16: TensorFlow's own kernels run instead
    r"^E\d{4} [\d:. ]+\d+ util\.cc:\d+\] oneDNN supports DT_\w+ only on platforms with AVX-512\. Falling back "
    r"to the default Eigen-based implementation if present\.$",
))
# Lines that say no NVIDIA GPU can be used: noise on a machine without one (no driver, no device
# node), a real fault on a machine with one (a driver TensorFlow cannot load), shown there.
NO_GPU = tuple(re.compile(pattern) for pattern in (
    r"^I\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\.$",
    r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ",
))


def verbosity():
    """"1" (everything), "0" (the CLIs' quiet default) or "" (unset: a library import)."""
    return os.environ.get(VERBOSE, "")


def is_verbose():
    return verbosity() == "1"


def has_nvidia_gpu():
    """Whether this machine has an NVIDIA GPU (a device node or a loaded driver), usable or not."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/proc/driver/nvidia/version").exists()


def is_harmless(line, nvidia_gpu=False):
    """Whether a line the frameworks write while loading can be dropped: a known banner, or a
    "no GPU" line on a machine that has no NVIDIA GPU (`nvidia_gpu`)."""
    line = line.rstrip("\r\n")
    return (any(p.search(line) for p in HARMLESS)
            or (not nvidia_gpu and any(p.search(line) for p in NO_GPU)))


FILTER = "--filter-stderr"  # this file run as a script: the filter process


@contextlib.contextmanager
def filtered_stderr(nvidia_gpu=None):
    """Point file descriptor 2 at a pipe for the duration; a filter process (this file run as a
    script) passes each line that is not `is_harmless` on to the real stderr as it arrives. Being a
    process of its own, it outlives a crash of this one (an abort inside a framework's start-up)
    and still passes that crash's last words on."""
    nvidia_gpu = has_nvidia_gpu() if nvidia_gpu is None else nvidia_gpu
    sys.stderr.flush()
    saved = os.dup(2)
    filter_process = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), FILTER, "1" if nvidia_gpu else "0"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=saved)
    os.dup2(filter_process.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        filter_process.stdin.close()  # the last write end: the filter reads to the end and exits
        filter_process.wait(30)


def _filter(nvidia_gpu):
    for raw in sys.stdin.buffer:
        if not is_harmless(raw.decode(errors="replace"), nvidia_gpu):
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()


class MissingDatasetFolder(logging.Filter):
    """tfds warns that a dataset's version folder has no dataset_info.json before failing on a
    dataset that is not there; our own error (data.load_split) says what is missing and how to
    prepare it."""

    def filter(self, record):
        return not re.match(r"Variant folder .* has no dataset_info\.json", record.getMessage())


MISSING_DATASET_FOLDER = MissingDatasetFolder()


class _LaterTensorFlowImport(importlib.abc.MetaPathFinder):
    """On another backend, TensorFlow is never imported by us, but may be later by a library
    (tfds, some Keras layers) when it is installed: that import, and the device query that prints
    the CUDA start-up lines, then run under `filtered_stderr`. Only the module's execution is
    wrapped; its spec and loader are TensorFlow's own."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and find_spec below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module):
                with filtered_stderr():
                    execute(module)
                    module.config.list_physical_devices("GPU")  # its CUDA start-up lines, now

            spec.loader.exec_module = exec_module
        return spec


def load_frameworks():
    """Import Keras (and its backend) and, on TensorFlow, query the devices once, with the
    harmless start-up lines filtered out; nothing to do when Keras is loaded already or -v asks
    for everything."""
    if is_verbose():
        return
    logging.getLogger("absl").addFilter(MISSING_DATASET_FOLDER)  # once: the same object is not added twice
    if "keras" in sys.modules:
        return
    if verbosity() == "0":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the first device query: CUDA start-up lines
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _LaterTensorFlowImport())


if __name__ == "__main__" and sys.argv[1:2] == [FILTER]:
    _filter(sys.argv[2] == "1")
