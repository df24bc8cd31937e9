"""Model builders: a compact CNN for CPUs (default) and the MobileNetV2 reference recipe.

Both take the shared model input (48x48x1 float in [0, 1], see
`webapp.vision.preprocess`) and output softmax probabilities over `EMOTIONS`. Models
trained with augmentation start with an `InferenceBlur` (identity while training) that
gives held-out faces the softness augmentation gives training images.
"""
from __future__ import annotations

import keras
from keras import layers

from training.augment import AUGMENTATION_BLUR_SIGMA
from webapp.vision.labels import NUM_CLASSES
from webapp.vision.layers import InferenceBlur
from webapp.vision.preprocess import INPUT_SHAPE

ARCHITECTURES = ("compact", "mobilenetv2")


def make_model(arch: str = "compact", *, width: int = 32, dropout: float = 0.4, weights: str | None = "imagenet", augmented: bool = True) -> keras.Model:
    """Build an untrained classifier.

    Args:
        arch: "compact" or "mobilenetv2".
        width: channels of the compact CNN's first stage (doubles each stage).
        dropout: dropout before the classifier head.
        weights: MobileNetV2 only: "imagenet" (falls back to random init when the
            weights cannot be downloaded) or None.
        augmented: the model will train on augmented images: add the matching
            `InferenceBlur` in front of it.
    """
    if arch == "compact":
        model = make_compact_cnn(width=width, dropout=dropout)
    elif arch == "mobilenetv2":
        model = make_mobilenetv2(dropout=dropout, weights=weights)
    else:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    return with_inference_blur(model) if augmented else model


def has_inference_blur(model: keras.Model) -> bool:
    return any(isinstance(layer, InferenceBlur) for layer in model.layers)


def with_inference_blur(model: keras.Model, sigma: float = AUGMENTATION_BLUR_SIGMA) -> keras.Model:
    """`model` behind an `InferenceBlur`: for models trained on augmented images without one."""
    if has_inference_blur(model):
        return model
    inputs = keras.Input(INPUT_SHAPE, name="face")
    blurred = InferenceBlur(sigma, name="inference_blur")(inputs)
    return keras.Model(inputs, model(blurred), name=model.name)


def without_inference_blur(model: keras.Model) -> keras.Model:
    """The classifier inside a `with_inference_blur` model (or `model` itself if it has no blur)."""
    if not has_inference_blur(model):
        return model
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) != 1:
        raise ValueError(f"{model.name}: expected an InferenceBlur in front of one classifier")
    return inner[0]


def _conv_bn_relu(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def make_compact_cnn(width: int = 32, dropout: float = 0.4) -> keras.Model:
    """A VGG-style CNN sized for CPU training (~35 M multiply-adds per face at width 32).

    A cheap full-resolution stem (1 -> width channels at 48x48) is pooled to 24x24, then
    four stages of two 3x3 conv+BN+ReLU layers run at 24, 12, 6 and 3 pixels with
    width, 2w, 4w and 8w channels: capacity grows where the pixels are few, which keeps
    an epoch of FER-2013 near two minutes on two CPU cores. Global average pooling and
    dropout feed the softmax head.
    """
    inputs = keras.Input(INPUT_SHAPE, name="face")
    x = _conv_bn_relu(inputs, width)
    x = layers.MaxPooling2D()(x)
    for stage in range(4):
        filters = width * 2**stage
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters)
        if stage < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"compact_cnn_w{width}")


def make_mobilenetv2(dropout: float = 0.2, weights: str | None = "imagenet", size: int = 224) -> keras.Model:
    """The reference recipe: MobileNetV2 (alpha 1.0) at 224x224, ImageNet transfer when reachable.

    The gray 48x48 input is resized inside the model and repeated to 3 channels, so the
    same preprocessing serves both architectures.
    """
    inputs = keras.Input(INPUT_SHAPE, name="face")
    x = layers.Resizing(size, size)(inputs)
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
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="mobilenetv2")
