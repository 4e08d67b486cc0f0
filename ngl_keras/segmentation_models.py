"""The segmentation models of the paper's Tables 4 and 5: U-Net with a ResNet34 encoder, and
DeepLabv2 with a dilated ResNet101 and the ASPP-L head.

Both map images (B, H, W, 3), preprocessed by the caller, to per-pixel class scores
(B, H, W, classes): softmax probabilities, or logits with `output_activation=None`.

- `unet_resnet34`: the U-Net of segmentation_models (qubvel; Keras `Unet`, decoder_block_type
  "upsampling", and segmentation_models_pytorch's `Unet("resnet34")`, which has the same decoder):
  five decoder blocks with 256, 128, 64, 32, 16 filters, each upsampling ×2 (nearest), concatenating
  the encoder's feature map of that resolution (none for the last), then two 3×3 conv–BN–ReLU;
  a 3×3 convolution to the classes. The encoder is a ResNet34 (basic blocks [3, 4, 6, 3]) with
  torchvision's layout (convolutions without bias, BN after each, stride in the first block's 3×3),
  so torchvision's ImageNet weights map onto it one to one. The skips are the stem's ReLU (stride 2)
  and stages 1–3 (strides 4, 8, 16); H and W must be multiples of 32.
- `unet_small`: ours, not the paper's: a three-level U-Net sized for 2 CPU cores (the Fashion-MNIST
  scenes benchmark).
- `deeplabv2_resnet101`: kazuto1011/deeplab-pytorch's `DeepLabV2` (libs/models/deeplabv2.py):
  ResNet101 whose last two stages are dilated 2 and 4 instead of strided (output stride 8), and
  ASPP-L: four 3×3 convolutions with dilation 6, 12, 18, 24 from the 2048 features to the classes,
  summed; the logits are upsampled bilinearly (half-pixel centres, as `F.interpolate(...,
  align_corners=False)`) to the input size. The backbone is keras.applications.ResNet101 with the
  strides and dilations changed in its config (its layer structure is the reference's: stride in the
  first 1×1 convolution), so `weights="imagenet"` loads Keras's ImageNet weights layer by layer.

Differs from the reference, on purpose: keras.applications' ResNet convolutions have biases (the
reference's do not: 52,672 more parameters), its max pooling pads symmetrically where the reference
uses ceil mode (one row/column less for some odd sizes, absorbed by the final resize); the reference
initialises from a COCO-pretrained caffemodel, which is not available here.
"""

import dataclasses
from typing import Callable

import keras
from keras import layers, ops

UNET_DECODER_FILTERS = (256, 128, 64, 32, 16)
RESNET34_BLOCKS = (3, 4, 6, 3)
ASPP_RATES = (6, 12, 18, 24)
# The stages keras.applications.ResNet101 names conv4 and conv5, and the dilation that replaces
# their stride (the reference's layer4 and layer5).
DILATED_STAGES = {"conv4": 2, "conv5": 4}
_BN_EPSILON = 1e-5   # torchvision's and the reference's BatchNorm epsilon


@keras.saving.register_keras_serializable(package="ngl_keras")
class ResizeLike(layers.Layer):
    """Bilinear resize of `inputs[0]` to the height and width of `inputs[1]` (known only at run time
    for full-image evaluation)."""

    def call(self, inputs):
        x, reference = inputs
        size = ops.shape(reference)[1:3]
        return ops.image.resize(x, size, interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        x, reference = input_shape
        return (x[0], reference[1], reference[2], x[3])


def _conv_bn(x, filters, kernel_size, strides, name, relu=True):
    if kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, f"{name}_0", relu=False)
    h = _conv_bn(x, filters, 3, strides, f"{name}_1")
    h = _conv_bn(h, filters, 3, 1, f"{name}_2", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, h]))


def resnet34_features(images):
    """The ResNet34 encoder's feature maps at strides 2, 4, 8, 16, 32 (64, 64, 128, 256, 512 channels)."""
    x = _conv_bn(images, 64, 7, 2, "conv1")
    features = [x]
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (blocks, filters) in enumerate(zip(RESNET34_BLOCKS, (64, 128, 256, 512)), start=2):
        for block in range(1, blocks + 1):
            strides = 2 if block == 1 and stage > 2 else 1
            x = _basic_block(x, filters, strides, f"conv{stage}_block{block}")
        features.append(x)
    return features


def _output(x, output_activation):
    return x if output_activation is None else layers.Activation(output_activation, name=output_activation)(x)


def _checked_input_shape(input_shape, multiple, model):
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"{model} takes RGB images: input_shape must be (height, width, 3); got {input_shape}.")
    for side in input_shape[:2]:
        if side is not None and side % multiple:
            raise ValueError(f"{model} needs height and width that are multiples of {multiple}; "
                             f"got input_shape {input_shape}.")


def unet_resnet34(classes, input_shape=(None, None, 3), weights=None, output_activation="softmax"):
    """U-Net with a ResNet34 encoder (module docstring). `weights`: None (from scratch) or the
    path of a weights file saved from this model."""
    _checked_input_shape(input_shape, 32, "U-Net/ResNet34")
    images = keras.Input(input_shape, name="images")
    *skips, x = resnet34_features(images)
    skips = skips[::-1] + [None]
    for stage, (filters, skip) in enumerate(zip(UNET_DECODER_FILTERS, skips)):
        x = layers.UpSampling2D(2, name=f"decoder_stage{stage}_upsampling")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"decoder_stage{stage}_concat")([x, skip])
        for part in "ab":
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_uniform",
                              name=f"decoder_stage{stage}{part}_conv")(x)
            x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"decoder_stage{stage}{part}_bn")(x)
            x = layers.ReLU(name=f"decoder_stage{stage}{part}_relu")(x)
    x = layers.Conv2D(classes, 3, padding="same", name="final_conv")(x)
    model = keras.Model(images, _output(x, output_activation), name="unet_resnet34")
    if weights is not None:
        model.load_weights(weights)
    return model


def dilated_resnet101(input_shape=(None, None, 3), weights=None):
    """keras.applications.ResNet101 without its top, its conv4 and conv5 stages dilated 2 and 4
    instead of strided (output stride 8); `weights` as keras.applications takes them ("imagenet"
    needs the file in Keras's cache when offline)."""
    strided = keras.applications.ResNet101(include_top=False, weights=weights, input_shape=input_shape)
    config = strided.get_config()
    for layer in config["layers"]:
        stage = layer["config"]["name"].split("_")[0]
        if layer["class_name"] != "Conv2D" or stage not in DILATED_STAGES:
            continue
        layer["config"]["strides"] = (1, 1)          # the first block's 1×1 and shortcut convolutions
        if tuple(layer["config"]["kernel_size"]) == (3, 3):
            layer["config"]["dilation_rate"] = (DILATED_STAGES[stage],) * 2
    config["name"] = "dilated_resnet101"
    dilated = keras.Model.from_config(config)
    if weights is not None:
        dilated.set_weights(strided.get_weights())   # same layers in the same order, same shapes
    return dilated


def deeplabv2_resnet101(classes, input_shape=(None, None, 3), weights=None, rates=ASPP_RATES,
                        output_activation="softmax"):
    """DeepLabv2 (module docstring). `weights`: None (from scratch), "imagenet" (the backbone's
    Keras ImageNet weights; the head from scratch), or the path of a weights file saved from this model."""
    _checked_input_shape(input_shape, 1, "DeepLabv2/ResNet101")
    backbone_weights = "imagenet" if weights == "imagenet" else None
    backbone = dilated_resnet101(input_shape, backbone_weights)
    images = keras.Input(input_shape, name="images")
    features = backbone(images)
    # The reference initialises the head with N(0, 0.01) weights and zero biases.
    branches = [layers.Conv2D(classes, 3, padding="same", dilation_rate=rate,
                              kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                              name=f"aspp_rate{rate}")(features) for rate in rates]
    logits = layers.Add(name="aspp_sum")(branches)
    logits = ResizeLike(name="upsample_to_input")([logits, images])
    model = keras.Model(images, _output(logits, output_activation), name="deeplabv2_resnet101")
    if weights not in (None, "imagenet"):
        model.load_weights(weights)
    return model


UNET_SMALL_FILTERS = (16, 32, 64)  # ours: a CPU-sized U-Net for the Fashion-MNIST scenes (not in the paper)


def unet_small(classes, input_shape=(None, None, 3), weights=None, output_activation="softmax"):
    """A small U-Net (not in the paper): per level two 3×3 conv–BN–ReLU with 16, 32, 64 filters and a
    ×2 max pooling, a 128-filter bottom, and the mirror image upward (×2 upsampling, the skip
    concatenated, two conv–BN–ReLU); a 1×1 convolution to the classes. H and W must be multiples of 8.
    Seconds per epoch of 2,000 scenes of 64×64 on 2 CPU cores; `weights`: None or a weights file."""
    _checked_input_shape(input_shape, 2 ** len(UNET_SMALL_FILTERS), "the small U-Net")
    images = keras.Input(input_shape, name="images")

    def block(x, filters, name):
        for part in "ab":
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}{part}_conv")(x)
            x = layers.BatchNormalization(name=f"{name}{part}_bn")(x)
            x = layers.ReLU(name=f"{name}{part}_relu")(x)
        return x

    x, skips = images, []
    for level, filters in enumerate(UNET_SMALL_FILTERS):
        x = block(x, filters, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"down{level}_pool")(x)
    x = block(x, 2 * UNET_SMALL_FILTERS[-1], "bottom")
    for level, filters in reversed(list(enumerate(UNET_SMALL_FILTERS))):
        x = layers.UpSampling2D(2, name=f"up{level}_upsampling")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = block(x, filters, f"up{level}")
    x = layers.Conv2D(classes, 1, name="final_conv")(x)
    model = keras.Model(images, _output(x, output_activation), name="unet_small")
    if weights is not None:
        model.load_weights(weights)
    return model


@dataclasses.dataclass(frozen=True)
class SegmentationModel:
    """A segmentation model a grid can name: its builder `(classes, input_shape, weights,
    output_activation) -> keras.Model`, the multiple its input sides must be (full images are padded
    to it), and the weights it accepts besides None."""
    name: str
    build: Callable
    multiple: int
    weights: tuple = ()   # "imagenet" where keras.applications has the backbone; a file path is always accepted


MODELS = {m.name: m for m in (
    SegmentationModel("unet_resnet34", unet_resnet34, 32),
    SegmentationModel("deeplabv2_resnet101", deeplabv2_resnet101, 1, ("imagenet",)),
    SegmentationModel("unet_small", unet_small, 2 ** len(UNET_SMALL_FILTERS)),
)}


def model(name):
    """The `SegmentationModel` of `name`, or a one-line ValueError naming the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown segmentation model {name!r}; known: {', '.join(sorted(MODELS))}.")
    return MODELS[name]
