"""Every registered loss on label maps with void pixels (ignore_class=255): the value is the numpy
reference on the valid pixels alone, and a void pixel's prediction changes neither value nor gradient."""

import keras
import numpy as np
import pytest

from ngl_keras import losses
from tests import reference

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax

VOID = 255
C = 4
FORMULA = "exp(p) - y*p"
RNG = np.random.default_rng(7)
LABELS = RNG.integers(0, C, (2, 3, 5))
LABELS[0, 0, :3] = VOID
LABELS[1, 2, 4] = VOID
LABELS[1, 1, 1] = VOID
LOGITS = (2 * RNG.normal(size=(2, 3, 5, C))).astype("float32")
PROBS = reference.softmax(LOGITS).astype("float32")
VALID = LABELS != VOID
VOID_PIXEL = (0, 0, 1)


def _focal(y, p, alpha=0.25, gamma=2.0):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(alpha * (1 - p) ** gamma * y * np.log(p)).sum(-1).mean()


# name -> (numpy reference of the batch (one-hot rows y, predictions rows), takes logits)
REFERENCES = {
    "ce": (lambda y, p: -(y * np.log(np.clip(p, 1e-7, 1))).sum(-1).mean(), False),
    "ce_l2": (lambda y, p: -(y * np.log(np.clip(p, 1e-7, 1))).sum(-1).mean(), False),
    "sparse_ce": (lambda y, p: -(y * np.log(np.clip(p, 1e-7, 1))).sum(-1).mean(), False),
    "focal": (_focal, False),
    "ngl": (reference.ngl_published_tf, False),
    "sce": (lambda y, p: reference.sce(y, p, 0.1, 1.0, -4.0).mean(), False),
    "dice": (reference.dice, False),
    "bi_tempered": (lambda y, z: reference.bi_tempered(y, z, 1.0, 1.0).mean(), True),
    "anyloss": (lambda y, p: reference.anyloss_multiclass(y, p, "fbeta", "macro", L=2 * C, threshold=1 / C), False),
    "anyloss_accuracy": (lambda y, p: reference.anyloss_multiclass(y, p, "accuracy", "macro", L=2 * C,
                                                                   threshold=1 / C), False),
    "anyloss_balanced_accuracy": (lambda y, p: reference.anyloss_multiclass(
        y, p, "balanced_accuracy", "macro", L=2 * C, threshold=1 / C), False),
    "anyloss_f1": (lambda y, p: reference.anyloss_multiclass(y, p, "fbeta", "macro", L=2 * C, threshold=1 / C), False),
    "anyloss_fbeta": (lambda y, p: reference.anyloss_multiclass(y, p, "fbeta", "macro", L=2 * C,
                                                                threshold=1 / C), False),
    "anyloss_gmean": (lambda y, p: reference.anyloss_multiclass(y, p, "gmean", "macro", L=2 * C,
                                                                threshold=1 / C), False),
    FORMULA: (lambda y, p: (np.exp(p) - y * p).mean(), False),
}


def test_every_registered_loss_has_a_reference_here():
    assert set(REFERENCES) == set(losses.names()) | {FORMULA}


def value_and_gradient(loss, labels, predictions):
    """The loss and its gradient with respect to the predictions, on the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        x = tf.Variable(predictions)
        with tf.GradientTape() as tape:
            value = loss(labels, x)
        return float(value), tape.gradient(value, x).numpy()
    if backend == "jax":
        import jax
        value, gradient = jax.value_and_grad(lambda x: loss(labels, x))(predictions)
        return float(value), np.asarray(gradient)
    pytest.skip(f"no gradient helper for the {backend} backend")


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_value_is_the_reference_on_the_valid_pixels_only(name):
    numpy_loss, takes_logits = REFERENCES[name]
    predictions = LOGITS if takes_logits else PROBS
    loss = losses.get(name, ignore_class=VOID)
    expected = numpy_loss(np.eye(C)[LABELS[VALID]], predictions[VALID].astype(np.float64))
    assert float(loss(LABELS, predictions)) == pytest.approx(expected, rel=2e-4, abs=1e-6)
    assert float(loss(LABELS[..., None], predictions)) == pytest.approx(expected, rel=2e-4, abs=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_a_void_pixels_prediction_changes_neither_value_nor_gradient(name):
    _, takes_logits = REFERENCES[name]
    predictions = LOGITS if takes_logits else PROBS
    other = predictions.copy()
    other[VOID_PIXEL] = other[VOID_PIXEL][::-1] * (3.0 if takes_logits else 1.0)
    loss = losses.get(name, ignore_class=VOID)
    value, gradient = value_and_gradient(loss, LABELS, predictions)
    other_value, other_gradient = value_and_gradient(loss, LABELS, other)
    assert other_value == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(other_gradient, gradient, rtol=1e-5, atol=1e-7)
    assert not gradient[~VALID].any()            # void pixels get no gradient
    assert np.abs(gradient[VALID]).sum() > 0


def test_per_example_weights_weigh_the_valid_pixels():
    weights = np.array([1.0, 3.0])
    loss = losses.get("ngl", ignore_class=VOID)
    per_pixel = (np.exp(2.4092 - PROBS * (1 + np.eye(C)[np.where(VALID, LABELS, 0)]))
                 - np.cos(np.cos(np.sin(PROBS)))).mean(-1)
    expected = (per_pixel * weights[:, None, None])[VALID].sum() / VALID.sum()
    assert float(loss(LABELS, PROBS, sample_weight=weights)) == pytest.approx(expected, rel=1e-5)
    dice = losses.get("dice", ignore_class=VOID)
    y, p = np.eye(C)[LABELS[1][VALID[1]]], PROBS[1][VALID[1]]   # weight 0 drops example 0 from the sums
    assert float(dice(LABELS, PROBS, sample_weight=np.array([0.0, 1.0]))) == pytest.approx(reference.dice(y, p),
                                                                                           rel=1e-5)


def test_classification_is_unchanged_and_the_setting_serializes():
    for name in losses.names():
        plain = losses.get(name).get_config()
        assert "ignore_class" not in plain or plain["ignore_class"] is None, name
        assert losses.get(name, ignore_class=None).get_config() == plain, name
    ngl = losses.get("ngl", ignore_class=VOID)
    again = keras.losses.deserialize(keras.losses.serialize(ngl))
    assert type(again) is type(ngl) and again.ignore_class == VOID
    assert float(again(LABELS, PROBS)) == pytest.approx(float(ngl(LABELS, PROBS)))
    assert "ignore_class=255" in repr(ngl)


@pytest.mark.parametrize("call, message", [
    (lambda: losses.get(keras.losses.Hinge(), ignore_class=VOID), "loss 'hinge' (Hinge) cannot ignore void labels"),
    (lambda: losses.get("ngl", ignore_class=-1), "ignore_class must be None or a class id >= 0"),
    (lambda: losses.get("ngl", ignore_class="255"), "ignore_class must be None or a class id >= 0"),
    (lambda: losses.get("ngl", ignore_class=VOID)(np.eye(C)[np.where(VALID, LABELS, 0)], PROBS),
     "ignore_class needs integer labels of shape (2, 3, 5)"),
])
def test_what_cannot_ignore_void_is_refused_in_one_line(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_compiled_train_step_on_a_label_map_with_void():
    inputs = keras.Input((3, 5, 2))
    outputs = keras.layers.Conv2D(C, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=losses.get("focal", ignore_class=VOID), jit_compile=True)
    images = RNG.normal(size=(2, 3, 5, 2)).astype("float32")
    first = float(model.train_on_batch(images, LABELS))
    assert np.isfinite(first)
    voided = np.full_like(LABELS, VOID)
    voided[0, 0, 0] = 1
    assert np.isfinite(float(model.train_on_batch(images, voided)))
