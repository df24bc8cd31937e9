"""Sharpness-aware minimisation: the step's arithmetic on a toy model, and a SAM run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import train
from training.sam import sharpness_aware


def test_a_sam_step_applies_the_gradient_taken_rho_uphill():
    import keras
    import tensorflow as tf

    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]], np.float32)
    y = np.array([[1.0], [0.0], [2.0]], np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    start = [w.numpy() for w in model.trainable_variables]

    def gradients(weights):
        variables = [tf.Variable(w) for w in weights]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((x @ variables[0] + variables[1] - y) ** 2)
        return [g.numpy() for g in tape.gradient(loss, variables)]

    rho = 0.5
    first = gradients(start)
    norm = np.sqrt(sum((g**2).sum() for g in first))
    sharp = gradients([w + rho * g / norm for w, g in zip(start, first, strict=True)])
    expected = [w - 0.1 * g for w, g in zip(start, sharp, strict=True)]

    sharpness_aware(model, rho)
    history = model.fit(x, y, batch_size=3, epochs=1, shuffle=False, verbose=0)
    for weight, want in zip(model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(weight.numpy(), want, rtol=1e-5, atol=1e-6)
    # the logged loss is the one before the step, at the unperturbed weights
    start_loss = np.mean((x @ start[0] + start[1] - y) ** 2)
    assert history.history["loss"][0] == pytest.approx(start_loss, rel=1e-5)


def test_rho_zero_keeps_the_models_own_step():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    sharpness_aware(model, 0.0)
    assert "train_step" not in vars(model)


def test_a_sam_run_trains_resumes_and_saves_a_plain_model(tmp_path, monkeypatch):
    import cv2
    import keras

    import training.sam
    from webapp.vision.labels import EMOTIONS

    root = tmp_path / "fer"
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 2), ("val", 1)):
        for emotion in EMOTIONS:
            (root / split / emotion).mkdir(parents=True)
            for i in range(per_class):
                cv2.imwrite(str(root / split / emotion / f"{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    flags = ["--data", str(root), "--width", "8", "--batch-size", "8", "--sam", "0.05"]
    assert train.main([*flags, "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--name", "sam"]) == 0
    run = tmp_path / "runs" / "sam"
    assert json.loads((run / "hparams.json").read_text())["sam"] == 0.05
    radii = []
    monkeypatch.setattr(
        training.sam, "sharpness_aware", lambda model, rho: radii.append(rho) or sharpness_aware(model, rho)
    )
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert radii == [0.05]  # the step is not in the checkpoint: a resumed run puts it back
    rows = (run / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(float(row.split(",")[2]) > 0 for row in rows)  # loss logged each epoch
    # the checkpoint is the plain functional model, not a subclass that only training.sam could load
    model = keras.models.load_model(run / "last.keras", compile=False)
    assert type(model).__name__ == "Functional"
    assert model.predict(np.zeros((1, 48, 48, 1), np.float32), verbose=0).shape == (1, 7)
