"""The model registry: keras.applications backbones with the paper's head, a small CNN, the
ImageNet-1k classifiers of Table 3 (their own standard top); and `ModelFunction`, any Keras model
from a function (the Python API's), trained the same way."""

import hashlib
import os
import re
import weakref
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from ngl_keras.settings import shown
from ngl_keras.names import MODELS as MODEL_NAMES, image_size_error, model_name


def scale_to_unit(x):
    return x / 255.0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    min_size: int
    channels: int
    build_backbone: Callable   # (input_shape, weights) -> backbone model or None
    preprocess: Callable
    # (image_size, classes) -> a whole classifier giving logits, from scratch (Table 3's models): its
    # own top replaces the paper's head; `check_size(image_size)` raises a one-line ValueError
    build_classifier: Callable = None
    check_size: Callable = None


def _inception(input_shape, weights):
    return keras.applications.InceptionV3(include_top=False, weights=weights,
                                          input_shape=input_shape, pooling="max")


def _resnet(input_shape, weights):
    return keras.applications.ResNet50(include_top=False, weights=weights,
                                       input_shape=input_shape, pooling="max")


# The ImageNet statistics of the published recipes (timm / torchvision, microsoft/Swin-Transformer):
# images in [0, 255] scaled to [0, 1], less the mean, over the standard deviation, per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_standardize(x):
    return (x / 255.0 - keras.ops.convert_to_tensor(IMAGENET_MEAN, x.dtype)) / \
        keras.ops.convert_to_tensor(IMAGENET_STD, x.dtype)


def _imagenet(name, min_size, check_size=None):
    from ngl_keras import imagenet_models  # builds Swin's layers: loaded on use

    return ModelInfo(name, min_size, 3, None, imagenet_standardize,
                     build_classifier=lambda size, classes: imagenet_models.build(name, size, classes),
                     check_size=check_size)


def _swin_size(depths, window=7):
    def check(size):
        from ngl_keras import swin

        swin.check_image_size(size, window, len(depths))
    return check


def _tiny_swin(image_size, classes):
    """A two-stage Swin (embed 16, depths [2, 2], heads [1, 2], window 4) for the tests only."""
    from ngl_keras import swin

    return swin.swin_transformer(image_size, classes, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                 window_size=4, drop_path_rate=0.1, name="tiny_swin")


def _tiny_resnet(image_size, classes):
    """Two residual blocks (8, 16 filters), global average pooling, logits: for the tests only."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    for filters in (8, 16):
        shortcut = keras.layers.Conv2D(filters, 1, strides=2)(x)
        y = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        y = keras.layers.BatchNormalization()(keras.layers.Conv2D(filters, 3, padding="same")(y))
        x = keras.layers.Activation("relu")(keras.layers.Add()([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name="tiny_resnet")


# The smallest image side and the channels of each are also in the Keras-free table ngl_keras.names.MODELS
# (a command line is checked before Keras loads; tests/test_names.py keeps the two equal).
MODELS = {m.name: m for m in (
    ModelInfo("inceptionv3", 75, 3, _inception, keras.applications.inception_v3.preprocess_input),
    ModelInfo("resnet50", 32, 3, _resnet, keras.applications.resnet50.preprocess_input),
    ModelInfo("small_cnn", 16, 1, None, scale_to_unit),
    _imagenet("resnet101", 32),
    _imagenet("resnet152", 32),
    _imagenet("swin_t", 32, _swin_size((2, 2, 6, 2))),
    _imagenet("swin_s", 32, _swin_size((2, 2, 18, 2))),
    ModelInfo("tiny_swin", 16, 3, None, imagenet_standardize, build_classifier=_tiny_swin,
              check_size=_swin_size((2, 2), window=4)),
    ModelInfo("tiny_resnet", 16, 3, None, imagenet_standardize, build_classifier=_tiny_resnet),
)}


def info(name):
    """The `ModelInfo` of a registered model's name; a `ModelInfo` or `ModelFunction` is returned as it is."""
    if isinstance(name, (ModelInfo, ModelFunction)):
        return name
    return MODELS[model_name(name)]  # any capitals; an unknown name: one line with "did you mean"


def keep_as_given(x):
    return x


@dataclass(frozen=True)
class ModelFunction:
    """A model from the user's function `function(num_classes) -> keras.Model` (uncompiled, ending
    in softmax, a new model on each call), checked once by `from_function`; each model it returns is
    checked to be new and uncompiled where it is called (`_new_model`). Its examples reach it
    as they are given (float32, nothing resized or preprocessed); it trains like a registered model.

    `fingerprint` (a hash of the model's Keras config, built after `clear_session` so that layer
    names are the same in every process) is part of each run's identity: a changed architecture
    is not mistaken for a finished run. It is None when the model has no config (a subclassed model
    without `get_config`); such a model is never resumed (the callers refuse an output directory
    that holds its runs).
    """

    name: str          # the function's name: the model's name in run keys and tables
    qualified_name: str
    function: Callable = field(compare=False, repr=False)
    fingerprint: str = None
    min_size: int = 1
    channels: int = 0  # the data's own
    build_backbone: Callable = None  # no pretrained weights
    preprocess: Callable = keep_as_given

    def build(self, classes, kernel_l2=0.0):
        model = _new_model(self.function, classes)
        if kernel_l2:
            apply_kernel_l2(model, kernel_l2)
        return model

    def identity(self):
        return {"function": self.qualified_name, "config_sha256": self.fingerprint}


_RETURNED = weakref.WeakValueDictionary()  # id -> each model a model function returned, while it lives


def _new_model(function, classes):
    """`function(classes)`, refused (one-line ValueError) unless it is a new, uncompiled model: the
    same object returned twice would train every run (or every search candidate) on one set of
    weights, each starting where the last stopped, and a compiled or trained one would carry its
    optimizer's state into the run."""
    model = function(classes)
    if not isinstance(model, keras.Model):
        raise ValueError(f"model_fn({classes}) returned {type(model).__name__}; it must return a keras.Model "
                         "(uncompiled, ending in softmax).")
    optimizer = getattr(model, "optimizer", None)
    steps = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None else 0
    reason = ("a model it returned before" if _RETURNED.get(id(model)) is model else
              f"a trained model (its optimizer took {steps} steps)" if steps else
              "a compiled model" if getattr(model, "compiled", False) else None)
    if reason is not None:
        raise ValueError(f"model_fn({classes}) returned {reason}; model_fn must return a new, uncompiled "
                         "keras.Model on every call (runs share no weights).")
    _RETURNED[id(model)] = model
    return model


def from_function(function, classes, examples):
    """`function` checked as a `ModelFunction` for `classes` classes: callable, returning a
    keras.Model that takes `examples` (a few examples of the data, shape (n, ...)) and gives
    softmax probabilities of shape (n, classes). One-line ValueErrors say what is wrong."""
    if isinstance(function, keras.Model):  # callable, but calling it with num_classes fails deep in Keras
        raise ValueError("model_fn must be a function returning a new model; got a keras.Model instance: wrap it, "
                         "e.g. lambda num_classes: keras.models.clone_model(model) (new weights on every call).")
    if not callable(function):
        raise ValueError(f"model_fn must be callable (num_classes -> uncompiled keras.Model ending in softmax); "
                         f"got {type(function).__name__}.")
    keras.backend.clear_session()  # auto-generated layer names start afresh: the same config in every process
    model = _new_model(function, classes)
    try:
        outputs = keras.ops.convert_to_numpy(model(np.asarray(examples, "float32"), training=False))
    except Exception as error:
        raise ValueError(f"model_fn's model does not take examples of shape {tuple(examples.shape[1:])} "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}).") from None
    if outputs.shape != (len(examples), classes):
        raise ValueError(f"model_fn's model gives outputs of shape {outputs.shape[1:]} per batch of "
                         f"{len(examples)}; it must give ({classes},): one probability per class.")
    if (outputs < 0).any() or not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"model_fn's model must end in softmax: its outputs on {len(examples)} examples sum to "
                         f"{', '.join(f'{v:.3g}' for v in outputs.sum(axis=1))} per example, not 1.")
    try:
        fingerprint = hashlib.sha256(model.to_json(sort_keys=True).encode()).hexdigest()[:16]
    except Exception:  # a subclassed model without get_config: unknowable
        fingerprint = None
    keras.backend.clear_session()
    name = getattr(function, "__name__", type(function).__name__)
    qualified = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', name)}"
    return ModelFunction(re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "model", qualified, function,
                         fingerprint)


def check_image_size(name, size, dataset=None):
    model = info(name)
    if isinstance(model, ModelFunction):
        return
    if size is None:
        raise ValueError(f"model {shown(model.name)} needs images (N, height, width, channels); the data is not "
                         "images: give a model function for it.")
    if not isinstance(size, int) or size < model.min_size:
        raise ValueError(image_size_error(model.name, size, dataset))
    if model.check_size is not None:
        model.check_size(size)


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
            f"{shown(weights)} weights for {name} cannot be loaded offline: Keras expects the weights "
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
    if model_info.build_classifier is not None:  # its own top, logits out; softmax for losses on probabilities
        logits = model_info.build_classifier(image_size, classes)(inputs)
        outputs = keras.layers.Activation(output_activation, dtype="float32", name="output")(logits)
    elif model_info.build_backbone is None:
        outputs = small_cnn(inputs, classes, output_activation)
    else:
        outputs = paper_head(_backbone(name, input_shape, weights)(inputs), classes, output_activation)
    model = keras.Model(inputs, outputs, name=name)
    if kernel_l2:
        apply_kernel_l2(model, kernel_l2)
    return model


def apply_kernel_l2(model, strength):
    """An L2 penalty of `strength` on every kernel of `model` (the "CE + L2" baseline)."""
    regularizer = keras.regularizers.L2(strength)
    for layer in _all_layers(model):
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.regularizer = regularizer


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer
