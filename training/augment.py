"""Training-time augmentation, applied to batches inside the tf.data pipeline."""
from __future__ import annotations

import keras
from keras import layers


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
