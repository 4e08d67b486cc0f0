"""RandomAffine: the tf.data pipeline's augmentation as a backend-agnostic layer."""

import keras
import numpy as np
import pytest

from ngl_keras import data, layers, models
from tests import reference


@pytest.mark.parametrize("shape", [(6, 16, 20, 3), (6, 28, 28, 1)])
def test_ops_transform_equals_the_pipeline_transform(shape):
    x, parameters = reference.affine_case(shape, seed=7)
    expected = data.affine_transform(x, *parameters).numpy()
    got = np.asarray(layers.affine_transform(x, *parameters))
    assert got.shape == shape
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_flip_only_mirrors_some_images_and_leaves_the_rest():
    x = np.random.default_rng(0).uniform(0, 255, (32, 8, 10, 1)).astype("float32")
    layer = layers.RandomAffine(horizontal_flip=True, width_shift=0.0, height_shift=0.0, zoom=0.0, seed=3)
    out = np.asarray(layer(x, training=True))
    same = np.all(np.abs(out - x) < 1e-3, axis=(1, 2, 3))
    mirrored = np.all(np.abs(out - x[:, :, ::-1]) < 1e-3, axis=(1, 2, 3))
    assert np.all(same | mirrored) and 4 < mirrored.sum() < 28


def test_training_only_seeded_and_serializable():
    x = np.random.default_rng(1).uniform(0, 255, (4, 12, 12, 3)).astype("float32")
    layer = layers.RandomAffine(seed=5)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    first = np.asarray(layer(x, training=True))
    assert first.shape == x.shape and not np.allclose(first, x, atol=1.0)
    assert not np.allclose(np.asarray(layer(x, training=True)), first)  # new draw per call
    twin = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert twin.get_config() == layer.get_config() and twin.augmentation == data.Augmentation()
    np.testing.assert_allclose(np.asarray(twin(x, training=True)), first, atol=1e-4)  # same seed, same draw
    with pytest.raises(ValueError, match="augmentation zoom must lie in"):
        layers.RandomAffine(zoom=1.5)


def test_a_model_with_it_keeps_jit_compile():
    inputs = keras.Input((12, 12, 1))
    x = layers.RandomAffine(seed=0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    assert model.jit_compile is True
    x = np.random.default_rng(2).uniform(size=(8, 12, 12, 1)).astype("float32")
    assert np.isfinite(model.train_on_batch(x, np.eye(2, dtype="float32")[np.arange(8) % 2]))


def test_input_layers_give_the_pipeline_batch_for_the_same_images():
    """Resize, gray to 3 channels and preprocessing as layers equal the tf.data pipeline's output."""
    images = np.random.default_rng(3).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(8) % 10
    resnet = models.info("resnet50")
    common = dict(image_size=40, channels=3, preprocess=resnet.preprocess)
    expected = next(iter(data.input_pipeline((images, labels), classes=10, batch_size=8, **common)))[0].numpy()
    inputs = keras.Input((28, 28, 1))
    stack = keras.Model(inputs, layers.input_layers(inputs, augmentation=data.Augmentation(), seed=0, **common))
    got = np.asarray(stack(images.astype("float32"), training=False))
    assert got.shape == (8, 40, 40, 3)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    # In training the augmentation runs, and only then.
    assert not np.allclose(np.asarray(stack(images.astype("float32"), training=True)), expected, atol=1.0)
