"""The ImageNet-1k classifiers of the paper's Table 3, built from scratch with the standard top
(global average pooling and a 1,000-way classifier): ResNet101 and ResNet152 from
keras.applications (He et al. 2016), Swin-T and Swin-S from `ngl_keras.swin` (Liu et al. 2021).

Each entry is `(image_size, num_classes) -> keras.Model` returning logits, ready for a model
registry:

    model = IMAGENET_MODELS["resnet101"](224, 1000)

Parameters with 1,000 classes: resnet101 44,707,176, resnet152 60,419,944 (keras.applications:
44,601,832 and 60,268,520 trainable plus BatchNorm's moving statistics; its convolutions carry
biases, so it is 0.1 % above the 44.5 M and 60.2 M usually quoted, torchvision's bias-free counts),
swin_t 28,288,354, swin_s 49,606,258 (microsoft/Swin-Transformer's).
"""

import keras

from ngl_keras import swin


def _resnet(application, image_size, num_classes):
    return application(include_top=True, weights=None, input_shape=(image_size, image_size, 3),
                       classes=num_classes, classifier_activation=None)


def resnet101(image_size=224, num_classes=1000):
    """ResNet101 (keras.applications), from scratch, logits out."""
    return _resnet(keras.applications.ResNet101, image_size, num_classes)


def resnet152(image_size=224, num_classes=1000):
    """ResNet152 (keras.applications), from scratch, logits out."""
    return _resnet(keras.applications.ResNet152, image_size, num_classes)


def swin_t(image_size=224, num_classes=1000):
    """Swin-T, stochastic depth 0.2, logits out."""
    return swin.swin_t(image_size, num_classes)


def swin_s(image_size=224, num_classes=1000):
    """Swin-S, stochastic depth 0.3, logits out."""
    return swin.swin_s(image_size, num_classes)


IMAGENET_MODELS = {build.__name__: build for build in (resnet101, resnet152, swin_t, swin_s)}


def build(name, image_size=224, num_classes=1000):
    """The named model; a one-line ValueError naming the accepted names otherwise."""
    if name not in IMAGENET_MODELS:
        raise ValueError(f"unknown ImageNet model {name!r}; expected one of {', '.join(IMAGENET_MODELS)}")
    return IMAGENET_MODELS[name](image_size, num_classes)
