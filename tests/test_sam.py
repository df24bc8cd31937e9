"""Sharpness-aware minimisation: the step's arithmetic on a toy model, and a SAM run end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from training import card, train
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


def test_batchnorm_statistics_move_once_a_step_from_the_real_weights():
    import keras

    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = np.ones((16, 1), np.float32)

    def one_step(rho: float) -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4),
                keras.layers.BatchNormalization(momentum=0.5),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        sharpness_aware(model, rho)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        return [v.numpy() for v in model.non_trainable_variables]

    for plain, sam in zip(one_step(0.0), one_step(5.0), strict=True):
        np.testing.assert_allclose(sam, plain, rtol=1e-6)


def test_rho_zero_keeps_the_models_own_step():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    sharpness_aware(model, 0.0)
    assert "train_step" not in vars(model)


def test_a_sam_run_trains_resumes_and_saves_a_plain_model(tmp_path, monkeypatch):
    import keras

    import training.sam
    from tests.harness import write_random_faces

    root = write_random_faces(tmp_path / "fer", {"train": 2, "val": 1}, seed=1)
    flags = ["--data", str(root), "--width", "8", "--batch-size", "8", "--sam", "0.05"]
    assert train.main([*flags, "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--name", "sam"]) == 0
    run = tmp_path / "runs" / "sam"
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams["sam"] == 0.05
    assert " --sam 0.05 " in card._train_command({"hparams": hparams, "dir": run})
    radii = []

    def spy(model, rho):
        sharpness_aware(model, rho)
        radii.append((rho, "train_step" in vars(model)))

    monkeypatch.setattr(training.sam, "sharpness_aware", spy)
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert radii == [(0.05, True)]  # the step is not in the checkpoint: a resumed run puts it back
    with open(run / "log.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 and min(losses) > 0  # resumed, not restarted; the loss is logged each epoch
    # the checkpoint is the plain functional model, not a subclass that only training.sam could load
    model = keras.models.load_model(run / "last.keras", compile=False)
    assert type(model).__name__ == "Functional"
    assert model.predict(np.zeros((1, 48, 48, 1), np.float32), verbose=0).shape == (1, 7)
