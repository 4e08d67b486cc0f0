"""Losses under tf.distribute.MirroredStrategy with 2 replicas (two logical CPU devices)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ngl_keras

RNG = np.random.default_rng(11)
X = RNG.normal(size=(32, 5)).astype("float32")
Y = RNG.integers(0, 3, 32)
BATCH = 16


def _model(weights=None):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    if weights is not None:
        model.set_weights(weights)
    return model


def _fit(loss_factory, strategy, weights):
    with strategy.scope():
        model = _model(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss_factory())
    history = model.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


def _two_replicas():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest splits the CPU into two logical devices"
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.mark.parametrize("factory", [ngl_keras.NGL, ngl_keras.SymmetricCrossEntropy,
                                     lambda: ngl_keras.ExpressionLoss("exp(1 - p*(1+y)) - y*p")])
def test_per_sample_loss_two_replicas_equal_one(factory):
    weights = _model().get_weights()
    loss_one, weights_one = _fit(factory, tf.distribute.get_strategy(), weights)
    loss_two, weights_two = _fit(factory, _two_replicas(), weights)
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
    for a, b in zip(weights_two, weights_one):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory", [lambda: ngl_keras.AnyLoss(metric="gmean", L=8.0),
                                     lambda: ngl_keras.SoftDice()])
def test_batch_level_loss_two_replicas_minimise_the_mean_of_their_shard_losses(factory):
    """Each replica computes the loss of its half of the global batch; training follows the
    gradient of the mean of the two, and the reported loss is that mean."""
    weights = _model().get_weights()
    loss_two, weights_two = _fit(factory, _two_replicas(), weights)

    model, loss, optimizer = _model(weights), factory(), keras.optimizers.SGD(0.5)
    epoch_losses = []
    for _ in range(2):
        step_losses = []
        for start in range(0, len(X), BATCH):
            halves = [slice(start, start + BATCH // 2), slice(start + BATCH // 2, start + BATCH)]
            with tf.GradientTape() as tape:
                value = tf.add_n([loss(Y[h], model(X[h])) for h in halves]) / 2.0
            grads = tape.gradient(value, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            step_losses.append(float(value))
        epoch_losses.append(np.mean(step_losses))
    np.testing.assert_allclose(loss_two, epoch_losses, rtol=1e-5)
    for a, b in zip(weights_two, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # And it is not the loss of the whole global batch: the difference is real.
    whole = float(loss(Y[:BATCH], _model(weights)(X[:BATCH])))
    halves = np.mean([float(loss(Y[h], _model(weights)(X[h]))) for h in (slice(0, 8), slice(8, 16))])
    assert abs(whole - halves) > 1e-4
