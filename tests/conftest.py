"""Test set-up: quiet TensorFlow, two CPU devices for the data-parallel tests (two logical CPUs
on TensorFlow, two XLA host devices on JAX), and hypothesis settings that keep the suite fast.

The suite runs on TensorFlow (the default); `KERAS_BACKEND=jax python -m pytest -m any_backend`
runs the backend-neutral tests again on JAX (README.md's test command does both).
"""

import importlib.abc
import importlib.machinery
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

if os.environ["KERAS_BACKEND"] != "tensorflow":
    # Two host devices for DataParallel. Their all-reduce can wedge XLA's multi-threaded Eigen pool
    # on a 2-core machine (seen here: a rendezvous that never completes), so Eigen runs one thread
    # per device; and one device may wait for the other longer than XLA's default 40 s when the
    # machine is loaded.
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false "
                                       "--xla_cpu_collective_call_terminate_timeout_seconds=900")

    class _NoTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """This run proves that nothing on the backend-neutral path needs TensorFlow. Importing it
        fails; asking whether it exists (`importlib.util.find_spec`, as etils does for tfds's file
        access) gets an answer, as in an environment without it, where tfds reads prepared datasets."""

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                return importlib.machinery.ModuleSpec(name, self)
            return None

        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r} (hidden in the non-TensorFlow test run)",
                                      name=spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _NoTensorFlow())


_IMPORTS_TENSORFLOW = re.compile(r"^(import|from) tensorflow(\s|\.|$)", re.M)


def pytest_ignore_collect(collection_path, config):
    """Off TensorFlow, test modules that import TensorFlow themselves (as the reference, or for
    tf.data / tf.distribute) are not collected; their backend-neutral behaviour is tested elsewhere."""
    if os.environ["KERAS_BACKEND"] != "tensorflow" and collection_path.suffix == ".py":
        return bool(_IMPORTS_TENSORFLOW.search(collection_path.read_text())) or None
    return None

from hypothesis import settings  # noqa: E402

if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

settings.register_profile("ngl", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ngl")
