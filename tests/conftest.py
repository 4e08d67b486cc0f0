"""Test set-up: quiet TensorFlow, two logical CPU devices (for MirroredStrategy tests), and
hypothesis settings that keep the suite fast."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
from hypothesis import settings  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

settings.register_profile("ngl", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ngl")
