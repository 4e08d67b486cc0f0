"""The segmentation models: parameter counts by an independent per-layer formula, tied to published
counts, and output shapes.

Sources of the published counts:
- torchvision's model table (pytorch.org/vision/stable/models): resnet34 21,797,672 and resnet101
  44,549,160 parameters, each with a 1000-class fc layer (512·1000 + 1000 and 2048·1000 + 1000).
- segmentation_models_pytorch `Unet("resnet34")` (decoder_channels 256/128/64/32/16, the decoder of
  qubvel's Keras segmentation_models, models/unet.py): 24,436,369 parameters for 1 class, the
  ≈ 24.4 M usually quoted; 24,439,269 for VOC's 21 classes (the head's 3×3 conv grows by 20·(16·9 + 1)).
- kazuto1011/deeplab-pytorch `DeepLabV2(n_classes=21, n_blocks=[3, 4, 23, 3], atrous_rates=[6, 12, 18, 24])`
  (libs/models/deeplabv2.py, resnet.py: convolutions without bias, BN affine): its ResNet101 is
  torchvision's without fc, 42,500,160 (the "≈ 42.5 M"), plus ASPP 4·(3·3·2048·21 + 21) = 1,548,372:
  44,048,532 for VOC in all.
PyTorch counts BN's scale and offset only; Keras also counts the moving mean and variance (non-trainable),
so the comparisons are on trainable parameters, and the non-trainable ones are checked as 2 per BN channel.
"""

import keras
import numpy as np
import pytest

from ngl_keras import segmentation_models as sm

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax

TORCHVISION_RESNET34 = 21_797_672
TORCHVISION_RESNET101 = 44_549_160
UNET_RESNET34_1_CLASS = 24_436_369
DEEPLABV2_VOC = 44_048_532


def conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def resnet_counts(blocks, bottleneck, conv_bias=False):
    """(trainable weights, BN channels, conv biases) of a ResNet without fc, layer by layer."""
    weights, bn, biases = conv(7, 3, 64, conv_bias), 64, 64 if conv_bias else 0
    c_in = 64
    for stage, count in enumerate(blocks):
        width = 64 * 2 ** stage
        c_out = width * 4 if bottleneck else width
        for block in range(count):
            layers = [(1, c_in, width), (3, width, width), (1, width, c_out)] if bottleneck else \
                     [(3, c_in, width), (3, width, width)]
            if block == 0 and (c_in != c_out or stage > 0):
                layers.append((1, c_in, c_out))   # the projection shortcut
            for k, i, o in layers:
                weights += conv(k, i, o, conv_bias)
                bn += o
                biases += o if conv_bias else 0
            c_in = c_out
    return weights + 2 * bn, bn, biases


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def non_trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)


def test_the_formula_gives_torchvision_published_counts():
    assert resnet_counts((3, 4, 6, 3), bottleneck=False)[0] == TORCHVISION_RESNET34 - (512 * 1000 + 1000)
    assert resnet_counts((3, 4, 23, 3), bottleneck=True)[0] == TORCHVISION_RESNET101 - (2048 * 1000 + 1000)


def unet_decoder_counts(classes):
    weights, bn, c_in = 0, 0, 512
    for filters, skip in zip(sm.UNET_DECODER_FILTERS, (256, 128, 64, 64, 0)):
        weights += conv(3, c_in + skip, filters) + conv(3, filters, filters)
        bn += 2 * filters
        c_in = filters
    return weights + 2 * bn + conv(3, 16, classes, bias=True), bn


def test_unet_resnet34_parameters_and_shape():
    encoder, encoder_bn, _ = resnet_counts((3, 4, 6, 3), bottleneck=False)
    decoder, decoder_bn = unet_decoder_counts(21)
    assert encoder + unet_decoder_counts(1)[0] == UNET_RESNET34_1_CLASS
    model = sm.unet_resnet34(21)
    assert trainable(model) == encoder + decoder == 24_439_269
    assert non_trainable(model) == 2 * (encoder_bn + decoder_bn)
    out = model.predict(np.random.default_rng(0).normal(size=(1, 32, 64, 3)).astype("float32"), verbose=0)
    assert out.shape == (1, 32, 64, 21)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-5)


def test_deeplabv2_resnet101_parameters_shape_and_output_stride():
    backbone, backbone_bn, biases = resnet_counts((3, 4, 23, 3), bottleneck=True, conv_bias=True)
    aspp = 4 * conv(3, 2048, 21, bias=True)
    model = sm.deeplabv2_resnet101(21, output_activation=None)
    assert trainable(model) == backbone + aspp
    assert trainable(model) - biases == DEEPLABV2_VOC    # keras.applications' conv biases: 52,672
    assert biases == 52_672
    assert non_trainable(model) == 2 * backbone_bn
    features = model.get_layer("dilated_resnet101")
    assert features.compute_output_shape((1, 64, 48, 3)) == (1, 8, 6, 2048)   # output stride 8
    dilations = {layer.name: layer.dilation_rate for layer in features.layers if isinstance(layer, keras.layers.Conv2D)}
    assert dilations["conv3_block4_2_conv"] == (1, 1)
    assert dilations["conv4_block23_2_conv"] == (2, 2) and dilations["conv5_block1_2_conv"] == (4, 4)
    out = model.predict(np.zeros((1, 37, 29, 3), "float32"), verbose=0)   # full-image evaluation: any size
    assert out.shape == (1, 37, 29, 21)


def test_imagenet_backbone_weights_map_layer_by_layer(monkeypatch):
    # Keras's ImageNet file is not on this machine: a strided ResNet101 with known random weights
    # stands in for it, and the dilated copy must hold exactly those weights.
    build = keras.applications.ResNet101

    def with_known_weights(include_top, weights, input_shape):
        model = build(include_top=include_top, weights=None, input_shape=input_shape)
        rng = np.random.default_rng(0)
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
        with_known_weights.model = model
        return model

    monkeypatch.setattr(keras.applications, "ResNet101", with_known_weights)
    dilated = sm.dilated_resnet101(weights="imagenet")
    for got, want in zip(dilated.get_weights(), with_known_weights.model.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("build, shape, message", [
    (sm.unet_resnet34, (100, 96, 3), "multiples of 32; got input_shape (100, 96, 3)"),
    (sm.unet_resnet34, (64, 64, 1), "input_shape must be (height, width, 3)"),
    (sm.deeplabv2_resnet101, (64, 64), "input_shape must be (height, width, 3)"),
])
def test_bad_input_shapes_are_one_line(build, shape, message):
    with pytest.raises(ValueError) as error:
        build(21, input_shape=shape)
    assert message in str(error.value) and "\n" not in str(error.value)
