"""Widening a compact CNN keeps what it computes, its classes and its blur."""

from __future__ import annotations

import numpy as np
import pytest

from training.model import make_compact_cnn
from training.widen import channel_map, split_fractions, widen
from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT
from webapp.vision.layers import InferenceBlur, model_classes


def test_split_fractions_share_each_old_channel_among_its_copies():
    rng = np.random.default_rng(0)
    mapping = channel_map(4, 10, rng)
    assert mapping[:4].tolist() == [0, 1, 2, 3] and mapping.max() < 4
    shares = split_fractions(mapping, rng)
    np.testing.assert_allclose(np.bincount(mapping, weights=shares), np.ones(4))
    with pytest.raises(ValueError, match="narrow"):
        channel_map(8, 4, rng)


@pytest.mark.parametrize("stem_convs", [1, 2])
def test_a_widened_model_computes_what_the_original_computes(stem_convs):
    from training.model import stem_conv_count

    model = make_compact_cnn(width=8, blur_sigma=0.7, classes=EMOTIONS_WITH_CONTEMPT, stem_convs=stem_convs)
    rng = np.random.default_rng(1)
    # batch norm with non-trivial statistics, as after training
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    faces = rng.random((6, 48, 48, 1), dtype=np.float32)
    wide = widen(model, 12, noise=0.0)
    assert wide.count_params() > model.count_params() and model_classes(wide) == EMOTIONS_WITH_CONTEMPT
    assert stem_conv_count(wide) == stem_convs
    assert next(layer for layer in wide.layers if isinstance(layer, InferenceBlur)).get_config()["sigma"] == 0.7
    np.testing.assert_allclose(wide.predict(faces, verbose=0), model.predict(faces, verbose=0), atol=1e-5)
    noisy = widen(model, 12, noise=0.01)
    assert not np.allclose(noisy.get_weights()[0], wide.get_weights()[0])
    with pytest.raises(ValueError, match="narrow"):
        widen(model, 4)


def test_widen_needs_a_model_to_widen(tmp_path, capsys):
    from training import train

    with pytest.raises(SystemExit):
        train.main(["--data", str(tmp_path), "--widen", "64"])
    assert "--widen needs --init-from" in capsys.readouterr().err


def test_only_compact_cnns_widen_and_ema_must_be_below_one(tmp_path, capsys):
    import keras

    from training import train

    inputs = keras.Input((48, 48, 1))
    other = keras.Model(inputs, keras.layers.Dense(8, name="emotion")(keras.layers.Flatten()(inputs)), name="other")
    with pytest.raises(ValueError, match="needs a compact CNN"):
        widen(other, 16)
    with pytest.raises(SystemExit):
        train.main(["--data", str(tmp_path), "--ema", "1"])
    assert "--ema must be in [0, 1)" in capsys.readouterr().err


def test_a_compact_cnn_is_known_by_its_layers_not_its_name():
    """training.consistent and transport unpack-models save compact CNNs as w<width>-s<seed>."""
    import keras

    model = make_compact_cnn(width=8, classes=EMOTIONS_WITH_CONTEMPT)
    renamed = keras.Model(model.input, model.output, name="w8-s0")
    faces = np.random.default_rng(2).random((3, 48, 48, 1), dtype=np.float32)
    wide = widen(renamed, 12, noise=0.0)
    np.testing.assert_allclose(wide.predict(faces, verbose=0), model.predict(faces, verbose=0), atol=1e-5)
