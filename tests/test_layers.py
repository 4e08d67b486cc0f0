"""RandomAffine: the tf.data pipeline's augmentation as a backend-agnostic layer."""

import keras
import numpy as np
import pytest

from ngl_keras import data, layers


@pytest.mark.parametrize("shape", [(6, 16, 20, 3), (6, 28, 28, 1)])
def test_ops_transform_equals_the_pipeline_transform(shape):
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 255, shape).astype("float32")
    flip = np.array([True, False, True, False, True, False])
    shift_x, shift_y = rng.uniform(-0.1, 0.1, (2, 6)).astype("float32")
    zoom_x, zoom_y = rng.uniform(0.8, 1.2, (2, 6)).astype("float32")
    expected = data.affine_transform(x, flip, shift_x, shift_y, zoom_x, zoom_y).numpy()
    got = np.asarray(layers.affine_transform(x, flip, shift_x, shift_y, zoom_x, zoom_y))
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
