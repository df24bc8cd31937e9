"""Training-time augmentation, applied to batches inside the tf.data pipeline."""
from __future__ import annotations

import keras
from keras import layers

# RandomRotation, RandomZoom and RandomTranslation each resample the image bilinearly.
# A bilinear sample at sub-pixel offset t mixes two pixels with weights (1 - t, t): a
# blur of variance t(1 - t), 1/6 on average over t. Three resamplings add to a Gaussian
# of variance 3/6, the softness every augmented training image has; serving reproduces
# it with `webapp.vision.layers.InferenceBlur` (see `training.model`).
RESAMPLINGS_PER_IMAGE = 3
AUGMENTATION_BLUR_SIGMA = (RESAMPLINGS_PER_IMAGE / 6) ** 0.5


def make_augmenter(seed: int = 0) -> keras.Sequential:
    """Random flip, rotation (+-10 deg), zoom, shift (10%) and contrast: the variation a webcam adds."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            layers.RandomContrast(0.3, seed=seed + 4),
        ],
        name="augment",
    )
