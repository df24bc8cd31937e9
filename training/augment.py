"""Training-time augmentation, applied to batches inside the tf.data pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

# RandomRotation, RandomZoom and RandomTranslation each resample the image bilinearly.
# A bilinear sample at sub-pixel offset t mixes two pixels with weights (1 - t, t): a
# blur of variance t(1 - t), 1/6 on average over t. Three resamplings add to a Gaussian
# of variance 3/6, the softness every augmented training image has; serving reproduces
# it with `webapp.vision.layers.InferenceBlur` (see `training.model`).
RESAMPLINGS_PER_IMAGE = 3
AUGMENTATION_BLUR_SIGMA = (RESAMPLINGS_PER_IMAGE / 6) ** 0.5

# "full": flip, rotation, zoom, shift and contrast (blurs: models get an InferenceBlur);
# "sharp": flip, whole-pixel shift and contrast, no resampling blur (for fine-tuning on
# faces as sharp as held-out ones); "none": the images as stored.
AUGMENT_MODES = ("full", "sharp", "none")


def make_augmenter(seed: int = 0, mode: str = "full") -> keras.Sequential:
    """The augmentation of `mode` (see AUGMENT_MODES): the variation a webcam adds."""
    import keras
    from keras import layers

    if mode == "full":
        augment = [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
        ]
    elif mode == "sharp":
        augment = [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", interpolation="nearest", seed=seed + 3),
        ]
    else:
        raise ValueError(f"no augmenter for mode {mode!r}; expected one of full, sharp")
    return keras.Sequential([*augment, layers.RandomContrast(0.3, seed=seed + 4)], name="augment")


def blurs(mode: str) -> bool:
    """Whether augmentation `mode` softens images (so the model needs an InferenceBlur)."""
    return mode == "full"


# Random erasing (Zhong et al. 2020) hides a rectangle of 2-20% of the face behind noise: a hand,
# glasses or a shadow over part of a webcam face must not decide its emotion, so the model
# learns to read the rest of the face too.
ERASE_SCALE = (0.02, 0.2)


def make_eraser(probability: float, seed: int = 0) -> keras.layers.Layer:
    """Replace a random rectangle (`ERASE_SCALE` of the area) of each image by noise, with `probability`.

    Keras's noise is a standard normal clipped to the pixel range: half the erased pixels are black,
    the rest spread over the grays, like a dark, speckled occluder.
    """
    import keras

    # a single factor f would draw each image's probability from [0, f] (f/2 on average); a
    # range of one value makes it exactly `probability`
    return keras.layers.RandomErasing(
        factor=(probability, probability), scale=ERASE_SCALE, value_range=(0, 1), seed=seed
    )


def add_mixup(dataset, alpha: float, seed: int = 0):
    """`dataset` (batches of image, target and optionally sample weight) with each image, target and
    weight blended with those of another image of its batch (mixup, Zhang et al. 2018), with a weight
    drawn from Beta(alpha, alpha).

    Blending two faces pixel by pixel is a regulariser, not a face a camera would see: it keeps a
    fine-tune on labels the model already fits closely from memorising them. The draws come from a
    seed stream that changes every epoch: seeded random ops inside a `tf.data` map start again from
    their seed each time the dataset is iterated, so every epoch would repeat the same blends.
    """
    import tensorflow as tf

    def mix(batch, seed_pair):
        seeds = tf.random.experimental.stateless_split(seed_pair, 3)
        size = tf.shape(batch[0])[0]
        first = tf.random.stateless_gamma([size], seeds[0], alpha)
        lam = first / (first + tf.random.stateless_gamma([size], seeds[1], alpha))
        lam = tf.maximum(lam, 1 - lam)  # each image keeps most of itself
        partner = tf.random.experimental.stateless_shuffle(tf.range(size), seeds[2])

        def blend(tensor):
            share = tf.reshape(lam, [-1] + [1] * (len(tensor.shape) - 1))
            return share * tensor + (1 - share) * tf.gather(tensor, partner)

        return tuple(blend(tensor) for tensor in batch)

    seed_pairs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seed_pairs).map(mix, num_parallel_calls=tf.data.AUTOTUNE)
