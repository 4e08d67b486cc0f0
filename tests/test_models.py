"""The model registry: the paper's head, the small CNN, kernel L2 for "CE + L2"."""

import keras
import numpy as np
import pytest

from ngl_keras import models

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax


def test_backbone_gets_the_published_head():
    model = models.build_model("resnet50", 7, 32)
    head = [type(layer).__name__ for layer in model.layers[2:]]
    assert head == ["Flatten", "BatchNormalization", "Dense", "Dropout", "BatchNormalization", "Dense",
                    "Dropout", "BatchNormalization", "Dense", "Activation"]
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [128, 64, 7]
    assert model.layers[1].output.shape == (None, 2048)  # pooling="max"
    assert model.output_shape == (None, 7) and model.get_layer("output").dtype_policy.name == "float32"


def test_kernel_l2_is_applied_to_every_kernel():
    model = models.build_model("small_cnn", 10, 28, channels=1, kernel_l2=1e-3)
    kernels = [layer.kernel for layer in model.layers if getattr(layer, "kernel", None) is not None]
    assert len(model.losses) == len(kernels) == 6
    expected = 1e-3 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert models.build_model("small_cnn", 10, 28, channels=1).losses == []


def test_logit_output_and_size_limits():
    model = models.build_model("small_cnn", 3, 20, channels=1, output_activation="linear")
    assert model.predict(np.zeros((2, 20, 20, 1), "float32"), verbose=0).shape == (2, 3)
    assert model.get_layer("output").activation.__name__ == "linear"
    with pytest.raises(ValueError, match="image size 64 is below inceptionv3's minimum of 75 px"):
        models.build_model("inceptionv3", 10, 64)
    with pytest.raises(ValueError, match="unknown model 'vgg16'; known models: inceptionv3, resnet101, resnet152, resnet50, small_cnn, swin_s, swin_t, tiny_resnet, tiny_swin"):
        models.build_model("vgg16", 10, 64)


def test_small_cnn_batch_norm_follows_short_trainings():
    # Keras's default momentum 0.99 leaves the moving statistics far from the data after the
    # tens of steps the small CNN is trained for (the search's proxy fitness).
    model = models.build_model("small_cnn", 10, 28, channels=1)
    norms = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert [layer.momentum for layer in norms] == [0.9, 0.9]
