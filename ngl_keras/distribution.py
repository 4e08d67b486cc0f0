"""Devices and replication: where a run trains (one device, or data parallelism over several), and
the workarounds that keep replicated training going: JAX's from deadlocking (`SynchronousBatches`),
TensorFlow's across workers from failing inside Keras's `fit` (`Replication.prepare`)."""

import contextlib
import os
from dataclasses import dataclass

import keras

from ngl_keras import config as config_module
from ngl_keras.settings import shown


@dataclass(frozen=True)
class Replication:
    """How a run is spread over devices: `scope()` to build, compile, fit and evaluate the model
    in, and the number of replicas each global batch is split over."""

    name: str
    replicas: int
    scope: object  # () -> context manager
    between_workers: bool = False  # TensorFlow's MultiWorkerMirroredStrategy (its model needs `prepare`)

    def prepare(self, model):
        """The model to compile, fit, evaluate and predict with in `scope()`: `model` itself, or on
        TensorFlow across workers, the same layers in a `FitBetweenWorkers`. Call it on the model
        built in `scope()`, outside `scope()`: a model made there would take the strategy as its own
        and fail in Keras's first build (`FitBetweenWorkers` says why)."""
        if not self.between_workers:
            return model
        import tensorflow as tf

        if tf.distribute.has_strategy():
            raise RuntimeError("Replication.prepare must be called outside scope(): the model it makes must not own "
                               "the strategy.")
        return FitBetweenWorkers(model.inputs, model.outputs, name=model.name)


def _replica_devices():
    """Every GPU, or else every logical CPU device (several only when split on purpose)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _tf_strategy(name):
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = _replica_devices()
        if devices[0].upper().find("GPU") >= 0:
            return tf.distribute.MirroredStrategy(devices)
        # Logical CPU devices: reduce on one device; collective ops there keep instance keys
        # across strategies of one process and clash when a second strategy is made.
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multiworker' needs TF_CONFIG describing the cluster.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")  # auto
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def make_strategy(name):
    """The `Replication` for strategy `name` on the current Keras backend.

    TensorFlow: tf.distribute ("mirrored" over local GPUs or split CPUs, "multiworker" from
    TF_CONFIG, "auto" mirrored when there are several GPUs). JAX: "mirrored", and "auto" with
    several devices, are `keras.distribution.DataParallel` over every local device (each global
    batch split evenly, one model replica per device, gradients all-reduced by XLA).
    """
    if name not in config_module.STRATEGIES:
        raise ValueError(f"unknown strategy {shown(name)}; accepted: {', '.join(config_module.STRATEGIES)}.")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        strategy = _tf_strategy(name)
        return Replication(name, strategy.num_replicas_in_sync, strategy.scope, between_workers=name == "multiworker")
    if name == "multiworker":
        if backend != "jax":
            raise ValueError(f"strategy 'multiworker' needs the TensorFlow backend (MultiWorkerMirroredStrategy "
                             f"from TF_CONFIG) or JAX (its distributed runtime); on the {backend} backend use "
                             "'mirrored' or 'auto' on one machine.")
        return _jax_processes()
    devices = keras.distribution.list_devices() if backend == "jax" else ["cpu"]
    if name == "none" or (name == "auto" and len(devices) == 1):
        return Replication(name, 1, contextlib.nullcontext)
    if backend != "jax":
        if name == "auto":
            return Replication(name, 1, contextlib.nullcontext)
        raise ValueError(f"strategy {shown(name)} needs the TensorFlow or JAX backend; the {backend} backend "
                         "has no data parallelism in Keras. Use --strategy none.")
    distribution = keras.distribution.DataParallel(devices=devices)
    return Replication(name, len(devices), distribution.scope)


_JAX_STARTED = []  # this process's index once JAX's distributed runtime is started
JAX_PROCESS_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _jax_processes():
    """Data parallelism over the devices of several JAX processes (one per machine): JAX's distributed
    runtime started by `keras.distribution.initialize` from JAX_COORDINATOR_ADDRESS (host:port of process
    0), JAX_NUM_PROCESSES and JAX_PROCESS_ID. Each process feeds its own share of every global batch
    (`data.ArrayBatches` reads the process's rows), so Keras's automatic sharding is off. Must run before
    anything else computes with JAX (`training.run_grid` makes the strategy first)."""
    missing = [v for v in JAX_PROCESS_VARIABLES if not os.environ.get(v)]
    if missing:
        raise ValueError(f"strategy 'multiworker' on JAX needs {', '.join(JAX_PROCESS_VARIABLES)} (the coordinator's "
                         f"host:port, the number of processes, this process's index); missing: {', '.join(missing)}.")
    try:
        count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
    except ValueError:
        raise ValueError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers; got "
                         f"{os.environ['JAX_NUM_PROCESSES']!r} and {os.environ['JAX_PROCESS_ID']!r}.") from None
    if not _JAX_STARTED:  # once per process: JAX's runtime cannot be started twice
        keras.distribution.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], count, index)
        _JAX_STARTED.append(index)
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    return Replication("multiworker", len(devices), distribution.scope)


class SynchronousBatches(keras.callbacks.Callback):
    """Keeps Keras from reading each batch's logs in a thread pool while the next batch runs, which
    it does when no callback looks at batches. With DataParallel over XLA's CPU devices those reads
    and the next step's all-reduce were seen to deadlock (threads waiting in `ArrayImpl._value`,
    the main thread in the next step, for good). Defining the batch hooks turns the pool off."""

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass


class FitBetweenWorkers(keras.Model):
    """A functional model that Keras 3.15.1's TensorFlow trainer can fit with MultiWorkerMirroredStrategy
    (its `fit` fails there with any model; checked against keras master of 2026-08-21 too). Two faults,
    two public ways round them (keras-team/keras#20585, tensorflow/tensorflow#72388):

    - A model made in a strategy's scope owns it, and `fit` then first builds it from the first batch,
      reduced across workers with `strategy.reduce("MEAN", (x, y))`, which takes one tensor, not a tuple
      (`ValueError: Attempt to convert a value (PerReplica:...) with an unsupported type`). A model made
      outside the scope (`Replication.prepare`) takes the strategy in effect when `fit` runs (its
      `scope()`), and is built when the train step is traced, as without a strategy.
    - Each step's logs are reduced across workers by `strategy.reduce("MEAN", value, axis=0)`, which
      fails on a scalar (`Invalid reduction dimension 0 for input with 0 dimensions`). The train and
      test steps here give each value a batch axis of one, so the mean over it is the value.
    """

    def train_step(self, data):
        return {name: keras.ops.reshape(value, (1,)) for name, value in super().train_step(data).items()}

    def test_step(self, data):
        return {name: keras.ops.reshape(value, (1,)) for name, value in super().test_step(data).items()}
