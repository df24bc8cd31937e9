"""Custom Keras layers that saved models contain, importable by both training and serving.

Import this module before `keras.models.load_model` on a model that uses them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="moodlens")
class InferenceBlur(keras.layers.Layer):
    """A 3x3 Gaussian blur applied at inference only; identity while training.

    Training augmentation resamples every image with bilinear interpolation (see
    `training.augment`), and each resampling at a random sub-pixel offset blurs it a
    little. A model trained that way has never seen an image as sharp as a FER-2013
    crop or a resized webcam face; this layer gives it the softness it was trained on.
    Every model carries one, so the model file itself records whether it is served
    blurred: sigma 0 means it is not (the model trained on sharp images). Borders are
    mirrored, as in `cv2.GaussianBlur`.

    Args:
        sigma: standard deviation of the Gaussian, in pixels; 0 turns the blur off.
    """

    def __init__(self, sigma: float, **kwargs):
        super().__init__(**kwargs)
        if sigma < 0:
            raise ValueError(f"sigma must be 0 (off) or positive, got {sigma}")
        self.sigma = float(sigma)

    def build(self, input_shape):
        if self.sigma:
            taps = np.exp(-(np.arange(-1, 2) ** 2) / (2 * self.sigma**2))
            taps /= taps.sum()
            kernel = np.outer(taps, taps)[:, :, np.newaxis, np.newaxis]
            self.kernel = np.repeat(kernel, input_shape[-1], axis=2).astype("float32")

    def call(self, inputs, training=None):
        if training or not self.sigma:
            return inputs
        padded = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        return ops.depthwise_conv(padded, self.kernel, strides=1, padding="valid")

    def get_config(self) -> dict:
        return {**super().get_config(), "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="moodlens")
class EmotionClasses(keras.layers.Layer):
    """Identity on the model's probabilities; its config names the class of each output unit.

    The last layer of every model, so the `.keras` file says which emotions it outputs and
    `training.export` can copy the list into the TFLite file's metadata.

    Args:
        classes: the emotion names, in output order.
    """

    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        self.classes = tuple(classes)

    def call(self, inputs):
        return inputs

    def get_config(self) -> dict:
        return {**super().get_config(), "classes": list(self.classes)}


def named_classes(model: keras.Model) -> tuple[str, ...] | None:
    """The list in `model`'s `EmotionClasses` layer, or None for a model made before it."""
    return next((layer.classes for layer in model.layers if isinstance(layer, EmotionClasses)), None)


def model_classes(model: keras.Model) -> tuple[str, ...]:
    """The classes `model` outputs: its `EmotionClasses` list, else FER-2013's 7 by output size."""
    from webapp.vision.labels import classes_for

    return named_classes(model) or classes_for(int(model.outputs[0].shape[-1]))


def inference_blur_sigma(model: keras.Model) -> float:
    """The sigma of `model`'s `InferenceBlur` (0 when it is off or absent)."""
    return next((layer.sigma for layer in model.layers if isinstance(layer, InferenceBlur)), 0.0)


def load_model(path) -> keras.Model:
    """`keras.models.load_model` (uncompiled) for a model that may contain the layers above."""
    return keras.models.load_model(path, compile=False)
