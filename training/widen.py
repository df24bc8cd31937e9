"""Widen a trained compact CNN without changing what it computes (Net2WiderNet, Chen et al. 2016).

Training a wider network from scratch costs more CPU hours than fine-tuning; widening a trained
one gives the fine-tune room to grow. Every new channel of a convolution copies an existing
one (its kernel and its batch-norm statistics), and the layer that reads those channels
splits the weight it gave the original among the copies, so the widened model's output
equals the original's. The split is uneven and random, and the copies get a little noise:
copies that were equal in every way would get equal gradients and never grow apart.
"""

from __future__ import annotations

import numpy as np


def channel_map(old: int, new: int, rng: np.random.Generator) -> np.ndarray:
    """For each of `new` channels, the old channel it copies: the old ones first, then random picks."""
    if new < old:
        raise ValueError(f"cannot narrow a layer from {old} to {new} channels")
    return np.concatenate([np.arange(old), rng.integers(0, old, new - old)])


def split_fractions(mapping: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each new channel, its share of the weight its old channel had: random, summing to 1 per old channel."""
    raw = np.where(np.bincount(mapping)[mapping] > 1, rng.uniform(0.5, 1.5, len(mapping)), 1.0)
    return raw / np.bincount(mapping, weights=raw)[mapping]


def widen(model, width: int, noise: float = 0.01, seed: int = 0):
    """A compact CNN of `width` (first-stage channels) that computes what `model` computes.

    Args:
        model: a trained compact CNN (`training.model.make_compact_cnn`).
        width: the new first-stage width, at least the model's.
        noise: standard deviation of the noise added to each copied kernel, relative to that
            layer's kernel standard deviation (0: an exact copy).
        seed: picks which channels are copied and the noise.
    """
    import keras

    from training.model import compact_cnn_shape, make_compact_cnn
    from webapp.vision.layers import inference_blur_sigma, model_classes

    rng = np.random.default_rng(seed)
    shape = compact_cnn_shape(model)  # (its name may be any: training.consistent renames its models)
    if shape is None:
        raise ValueError(f"--widen needs a compact CNN; {model.name} is not one")
    old_width, stem_convs = shape
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    dropout = next((layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)), 0.4)
    if width < old_width:
        raise ValueError(f"cannot narrow a width-{old_width} model to {width}")
    wide = make_compact_cnn(width, dropout, inference_blur_sigma(model), model_classes(model), stem_convs=stem_convs)
    wide_convs = [layer for layer in wide.layers if isinstance(layer, keras.layers.Conv2D)]
    wide_norms = [layer for layer in wide.layers if isinstance(layer, keras.layers.BatchNormalization)]

    incoming = np.arange(1)  # the gray input channel, never copied
    for conv, norm, wide_conv, wide_norm in zip(convs, norms, wide_convs, wide_norms, strict=True):
        (kernel,) = conv.get_weights()
        outgoing = channel_map(kernel.shape[-1], wide_conv.filters, rng)
        shares = split_fractions(incoming, rng)
        new_kernel = kernel[:, :, incoming][..., outgoing] * shares[None, None, :, None]
        copied = np.arange(len(outgoing)) >= kernel.shape[-1]
        new_kernel[..., copied] += rng.normal(0, noise * kernel.std(), new_kernel[..., copied].shape)
        wide_conv.set_weights([new_kernel.astype(np.float32)])
        wide_norm.set_weights([weights[outgoing] for weights in norm.get_weights()])
        incoming = outgoing
    head_kernel, head_bias = model.get_layer("emotion").get_weights()
    shares = split_fractions(incoming, rng)
    wide.get_layer("emotion").set_weights([head_kernel[incoming] * shares[:, None], head_bias])
    return wide
