"""The model registry: keras.applications backbones with the paper's head, and a small CNN."""

import os
from dataclasses import dataclass
from typing import Callable

import keras


def scale_to_unit(x):
    return x / 255.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    min_size: int
    channels: int
    build_backbone: Callable   # (input_shape, weights) -> backbone model or None
    preprocess: Callable


def _inception(input_shape, weights):
    return keras.applications.InceptionV3(include_top=False, weights=weights,
                                          input_shape=input_shape, pooling="max")


def _resnet(input_shape, weights):
    return keras.applications.ResNet50(include_top=False, weights=weights,
                                       input_shape=input_shape, pooling="max")


MODELS = {m.name: m for m in (
    ModelInfo("inceptionv3", 75, 3, _inception, keras.applications.inception_v3.preprocess_input),
    ModelInfo("resnet50", 32, 3, _resnet, keras.applications.resnet50.preprocess_input),
    ModelInfo("small_cnn", 16, 1, None, scale_to_unit),
)}


def info(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def check_image_size(name, size):
    model = info(name)
    if not isinstance(size, int) or size < model.min_size:
        raise ValueError(f"image size {size!r} is below {name}'s minimum of {model.min_size} px; "
                         f"use image_size >= {model.min_size}.")


def paper_head(x, classes, output_activation):
    """Flatten → BN → Dense(128, relu) → Dropout(0.5) → BN → Dense(64, relu) → Dropout(0.5)
    → BN → Dense(C) (the published example's head)."""
    x = keras.layers.Flatten()(x)
    for units in (128, 64):
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(classes)(x)
    return keras.layers.Activation(output_activation, dtype="float32", name="output")(x)


SMALL_CNN_BN_MOMENTUM = 0.9


def small_cnn(inputs, classes, output_activation):
    """Two conv blocks (16, 32 filters) → Dense(128) → Dropout(0.3) → Dense(C): about a minute
    per Fashion-MNIST epoch on 2 CPU cores; the default run's and the search's proxy model.

    Its BatchNormalization uses momentum 0.9, not Keras's 0.99: the short trainings this model is
    for (tens to hundreds of steps) otherwise validate with moving statistics still far from the
    data (after 256 steps, 54 % validation accuracy with Keras's momentum against 85 % with batch
    statistics and 87 % with 0.9), and a loss that barely moves the weights would win the search's
    proxy fitness. The paper's backbones and head keep their published momentum.
    """
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization(momentum=SMALL_CNN_BN_MOMENTUM)(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(classes)(x)
    return keras.layers.Activation(output_activation, dtype="float32", name="output")(x)


def _backbone(name, input_shape, weights):
    try:
        return info(name).build_backbone(input_shape, weights)
    except Exception as error:
        if weights is None:
            raise
        home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
        raise ValueError(
            f"{weights!r} weights for {name} cannot be loaded offline: Keras expects the weights "
            f"file in {home}/models/ ({type(error).__name__}); place it there, or train from scratch: "
            "--weights none (train_small.py), weights: null (a config file) or weights=None (Python)."
        ) from None


def build_model(name, classes, image_size, channels=None, weights=None, kernel_l2=0.0,
                output_activation="softmax"):
    """A model ready to compile: a backbone with the paper's head, or the small CNN.

    `weights` is None (from scratch) or "imagenet" (fine-tuning); `kernel_l2` puts an L2
    penalty on every kernel (the "CE + L2" baseline); `output_activation` is "softmax" or
    "linear" for losses that take logits.
    """
    model_info = info(name)
    check_image_size(name, image_size)
    channels = channels or model_info.channels
    if model_info.channels == 3:
        channels = 3
    input_shape = (image_size, image_size, channels)
    inputs = keras.Input(input_shape)
    if model_info.build_backbone is None:
        outputs = small_cnn(inputs, classes, output_activation)
    else:
        outputs = paper_head(_backbone(name, input_shape, weights)(inputs), classes, output_activation)
    model = keras.Model(inputs, outputs, name=name)
    if kernel_l2:
        regularizer = keras.regularizers.L2(kernel_l2)
        for layer in _all_layers(model):
            if getattr(layer, "kernel", None) is not None:
                layer.kernel.regularizer = regularizer
    return model


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer
