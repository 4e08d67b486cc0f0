"""RandomAffine: the tf.data pipeline's augmentation as a backend-agnostic layer."""

import keras
import numpy as np
import pytest

from ngl_keras import data, layers, models
from tests import reference


@pytest.mark.any_backend
@pytest.mark.parametrize("shape", [(6, 16, 20, 3), (6, 28, 28, 1)])
def test_the_layer_runs_the_pipeline_kernel_with_its_parameters(shape):
    """RandomAffine's output is data.affine_transform of the uniforms it drew (one kernel)."""
    x, _ = reference.affine_case(shape, seed=7)
    layer = layers.RandomAffine(seed=11)
    got = np.asarray(layer(x, training=True))
    u = keras.random.uniform((shape[0], 5), seed=keras.random.SeedGenerator(11))
    expected = np.asarray(data.affine_transform(x, *data.Augmentation().parameters(u)))
    assert got.shape == shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.any_backend
def test_flip_only_mirrors_some_images_and_leaves_the_rest():
    x = np.random.default_rng(0).uniform(0, 255, (32, 8, 10, 1)).astype("float32")
    layer = layers.RandomAffine(horizontal_flip=True, width_shift=0.0, height_shift=0.0, zoom=0.0, seed=3)
    out = np.asarray(layer(x, training=True))
    same = np.all(np.abs(out - x) < 1e-3, axis=(1, 2, 3))
    mirrored = np.all(np.abs(out - x[:, :, ::-1]) < 1e-3, axis=(1, 2, 3))
    assert np.all(same | mirrored) and 4 < mirrored.sum() < 28


@pytest.mark.any_backend
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


@pytest.mark.any_backend
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
    common = dict(image_size=40, channels=3)
    expected = next(iter(data.input_pipeline((images, labels), classes=10, batch_size=8,
                                             preprocess=models.info("resnet50").preprocess, **common)))[0].numpy()
    inputs = keras.Input((28, 28, 1))
    stack = keras.Model(inputs, layers.input_layers(inputs, augmentation=data.Augmentation(), seed=0,
                                                    model="resnet50", **common))
    got = np.asarray(stack(images.astype("float32"), training=False))
    assert got.shape == (8, 40, 40, 3)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    # In training the augmentation runs, and only then.
    assert not np.allclose(np.asarray(stack(images.astype("float32"), training=True)), expected, atol=1.0)


@pytest.mark.any_backend
def test_a_model_with_the_input_layers_saves_and_reloads(tmp_path):
    """Resize, gray to RGB, RandomAffine and Preprocess are registered: a .keras file reloads
    without custom_objects and computes the same outputs."""
    inputs = keras.Input((28, 28, 1))
    x = layers.input_layers(inputs, image_size=32, channels=3, model="inceptionv3",
                            augmentation=data.Augmentation(zoom=0.1), seed=4)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(5).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    twin = keras.saving.load_model(tmp_path / "m.keras")
    assert [type(layer).__name__ for layer in twin.layers][1:4] == ["Resizing", "GrayToRGB", "RandomAffine"]
    assert twin.get_layer("preprocess").get_config()["model"] == "inceptionv3"
    np.testing.assert_allclose(np.asarray(twin(images, training=False)), np.asarray(model(images, training=False)),
                               atol=1e-6)
    # inceptionv3's preprocessing maps [0, 255] to [-1, 1]
    preprocess = keras.Model(twin.inputs[0], twin.get_layer("preprocess").output)
    np.testing.assert_allclose(np.asarray(preprocess(np.full((1, 28, 28, 1), 255.0, "float32"))), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        layers.Preprocess("vgg")
