"""Model builders: a compact CNN for CPUs (default) and the MobileNetV2 reference recipe.

Both take the shared model input (48x48x1 float in [0, 1], see
`webapp.vision.preprocess`) and output softmax probabilities over their classes (FER-2013's 7 `EMOTIONS`, or 8 with contempt),
named by the `EmotionClasses` layer that ends every model. Every
model starts with an `InferenceBlur` (identity while training): models trained on
resampled images serve held-out faces with the softness augmentation gave training
images (sigma > 0); models trained on sharp images leave it off (sigma 0).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from training.augment import AUGMENTATION_BLUR_SIGMA, blurs
from webapp.vision.labels import EMOTIONS
from webapp.vision.layers import EmotionClasses, InferenceBlur, model_classes
from webapp.vision.preprocess import INPUT_SHAPE

ARCHITECTURES = ("compact", "mobilenetv2")


def make_model(
    arch: str = "compact",
    *,
    width: int = 32,
    dropout: float = 0.4,
    weights: str | None = "imagenet",
    blur_sigma: float = 0.0,
    classes: tuple[str, ...] = EMOTIONS,
    stem_convs: int = 1,
) -> keras.Model:
    """Build an untrained classifier.

    Args:
        arch: "compact" or "mobilenetv2".
        width: channels of the compact CNN's first stage (doubles each stage).
        dropout: dropout before the classifier head.
        weights: MobileNetV2 only: "imagenet" (falls back to random init when the
            weights cannot be downloaded) or None.
        blur_sigma: sigma of the model's `InferenceBlur`: `AUGMENTATION_BLUR_SIGMA` for a
            model that will train on resampled (softened) images, 0 for sharp ones.
        classes: the emotions it outputs, in order (recorded in the model by `EmotionClasses`).
        stem_convs: the compact CNN's convolutions at full resolution (`make_compact_cnn`).
    """
    if arch == "compact":
        return make_compact_cnn(
            width=width, dropout=dropout, blur_sigma=blur_sigma, classes=classes, stem_convs=stem_convs
        )
    if arch == "mobilenetv2":
        return make_mobilenetv2(dropout=dropout, weights=weights, blur_sigma=blur_sigma, classes=classes)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def blur_sigma_for(augment: str) -> float:
    """The `InferenceBlur` sigma a model trained with augmentation mode `augment` is served with."""
    return AUGMENTATION_BLUR_SIGMA if blurs(augment) else 0.0


def with_blur_sigma(model: keras.Model, sigma: float) -> keras.Model:
    """A copy of `model` (same weights) whose `InferenceBlur` has `sigma`, e.g. to fine-tune a
    model trained on softened images on sharp ones."""

    def clone(layer):
        if isinstance(layer, InferenceBlur):
            return InferenceBlur(sigma, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def with_classes(model: keras.Model, classes: tuple[str, ...]) -> keras.Model:
    """`model` with a classifier head for `classes`, keeping its features and the head's
    weights for classes it already has. A class it lacks (contempt, for a FER-2013 model)
    starts with zero weights and a bias of log(0.01) plus the log-sum-exp of the old biases: a
    small share, about 1% where the other classes' features add nothing."""
    old_classes = model_classes(model)
    if tuple(classes) == old_classes and isinstance(model.layers[-1], EmotionClasses):
        return model
    old_head = model.get_layer("emotion")
    kernel, bias = old_head.get_weights()
    new_kernel = np.zeros((kernel.shape[0], len(classes)), np.float32)
    new_bias = np.full(len(classes), np.log(0.01) + np.log(np.exp(bias).sum()), np.float32)
    for index, name in enumerate(classes):
        if name in old_classes:
            new_kernel[:, index], new_bias[index] = kernel[:, old_classes.index(name)], bias[old_classes.index(name)]
    outputs = _head(old_head.input, classes)
    copy = keras.Model(model.inputs, outputs, name=model.name)
    copy.get_layer("emotion").set_weights([new_kernel, new_bias])
    return copy


def _head(features, classes: tuple[str, ...]):
    """The softmax over `classes` and the layer that records their names."""
    probabilities = layers.Dense(len(classes), activation="softmax", name="emotion")(features)
    return EmotionClasses(classes, name="classes")(probabilities)


def _face_input(blur_sigma: float):
    """The shared model input and the `InferenceBlur` every model starts with."""
    inputs = keras.Input(INPUT_SHAPE, name="face")
    return inputs, InferenceBlur(blur_sigma, name="inference_blur")(inputs)


def _conv_bn_relu(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def make_compact_cnn(
    width: int = 32,
    dropout: float = 0.4,
    blur_sigma: float = 0.0,
    classes: tuple[str, ...] = EMOTIONS,
    stem_convs: int = 1,
) -> keras.Model:
    """A VGG-style CNN sized for CPU training (~35 M multiply-adds per face at width 32, one stem conv).

    A cheap full-resolution stem (1 -> width channels at 48x48) is pooled to 24x24, then
    four stages of two 3x3 conv+BN+ReLU layers run at 24, 12, 6 and 3 pixels with
    width, 2w, 4w and 8w channels: capacity grows where the pixels are few, which keeps
    an epoch of FER-2013 near two minutes on two CPU cores. Global average pooling and
    dropout feed the softmax head.

    `stem_convs` > 1 stacks more width-channel convolutions in the stem, before the first
    pooling: at width 32, a second one costs as much to train as widening to 40, spent on
    the 48x48 detail (eyelids, mouth corners) that pooling discards.
    """
    if stem_convs < 1:
        raise ValueError(f"the compact CNN needs at least one stem convolution, not {stem_convs}")
    inputs, x = _face_input(blur_sigma)
    for _ in range(stem_convs):
        x = _conv_bn_relu(x, width)
    x = layers.MaxPooling2D()(x)
    for stage in range(4):
        filters = width * 2**stage
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters)
        if stage < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    name = f"compact_cnn_w{width}" + (f"_s{stem_convs}" if stem_convs > 1 else "")
    return keras.Model(inputs, _head(x, classes), name=name)


def stem_conv_count(model: keras.Model) -> int:
    """A compact CNN's `stem_convs`: its convolutions before the first pooling."""
    count = 0
    for layer in model.layers:
        if isinstance(layer, layers.MaxPooling2D):
            return count
        count += isinstance(layer, layers.Conv2D)
    raise ValueError(f"{model.name} is not a compact CNN: it has no pooling")


def compact_cnn_shape(model: keras.Model) -> tuple[int, int] | None:
    """A compact CNN's (width, stem_convs), read from its layers; None for any other model.

    Judged by structure, not by name: `training.consistent` and `transport unpack-models` rename the
    models they save (`w40-s0`). A compact CNN of that width, stem and classes must have the same weights."""
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    if not convs:
        return None
    try:
        stem_convs, classes = stem_conv_count(model), model_classes(model)
    except ValueError:
        return None
    twin = make_compact_cnn(convs[0].filters, classes=classes, stem_convs=stem_convs)
    if [w.shape for w in twin.weights] != [w.shape for w in model.weights]:
        return None
    return convs[0].filters, stem_convs


def make_mobilenetv2(
    dropout: float = 0.2,
    weights: str | None = "imagenet",
    size: int = 224,
    blur_sigma: float = 0.0,
    classes: tuple[str, ...] = EMOTIONS,
) -> keras.Model:
    """The reference recipe: MobileNetV2 (alpha 1.0) at 224x224, ImageNet transfer when reachable.

    The gray 48x48 input is resized inside the model and repeated to 3 channels, so the
    same preprocessing serves both architectures.
    """
    inputs, x = _face_input(blur_sigma)
    x = layers.Resizing(size, size)(x)
    x = layers.Concatenate()([x, x, x])
    x = layers.Rescaling(2.0, offset=-1.0)(x)  # [0, 1] -> MobileNetV2's [-1, 1]
    try:
        backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=weights)
    except Exception as error:  # no network: the download fails; train from scratch instead
        print(f"MobileNetV2 {weights} weights unavailable ({error.__class__.__name__}); using random init")
        backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
    x = backbone(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, classes), name="mobilenetv2")
