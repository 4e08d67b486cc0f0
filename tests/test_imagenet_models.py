"""The ImageNet classifiers: parameter counts with 1,000 classes, logits out, unknown names refused."""

import keras
import numpy as np
import pytest

from ngl_keras import imagenet_models


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.slow
@pytest.mark.any_backend
@pytest.mark.parametrize("name, total, trainable", [("resnet101", 44_707_176, 44_601_832),
                                                    ("resnet152", 60_419_944, 60_268_520)])
def test_resnet_parameter_counts_are_keras_applications_with_the_standard_top(name, total, trainable):
    model = imagenet_models.build(name)
    assert model.count_params() == total
    assert _trainable(model) == trainable
    assert tuple(model.output.shape) == (None, 1000)
    assert model.layers[-1].activation is keras.activations.linear      # logits: the losses apply the softmax


@pytest.mark.any_backend
def test_a_resnet_at_a_small_size_maps_images_to_logits():
    model = imagenet_models.build("resnet101", image_size=32, num_classes=7)
    out = model(np.zeros((2, 32, 32, 3), dtype="float32"), training=False)
    assert tuple(out.shape) == (2, 7)
    assert model.layers[-2].__class__.__name__ == "GlobalAveragePooling2D"


@pytest.mark.any_backend
def test_the_registry_holds_the_four_models_of_table_3_and_refuses_others_in_one_line():
    assert list(imagenet_models.IMAGENET_MODELS) == ["resnet101", "resnet152", "swin_t", "swin_s"]
    with pytest.raises(ValueError, match="unknown ImageNet model 'resnet34'; expected one of resnet101, ") as error:
        imagenet_models.build("resnet34")
    assert "\n" not in str(error.value)


@pytest.mark.any_backend
def test_swin_entries_carry_the_published_stochastic_depth():
    model = imagenet_models.build("swin_t", num_classes=10)
    rates = [layer.drop_path for layer in model.layers if hasattr(layer, "drop_path")]
    assert len(rates) == 12 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
