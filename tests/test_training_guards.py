"""Training commands that must not mislead or destroy: a class with no faces, a run's raw weights, its
record after a failed resume, models that an ensemble or a fine-tune cannot take."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from training import ensemble, train


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """One --ema epoch of a width-8 CNN on faces with no disgust among them, logit-adjusted, with the
    default one-epoch warm-up: (the run folder, what it printed)."""
    from tests.harness import write_random_faces

    root = write_random_faces(tmp_path_factory.mktemp("data") / "fer", {"train": 2, "val": 1})
    shutil.rmtree(root / "train" / "disgust")
    runs = tmp_path_factory.mktemp("runs")
    argv = ["--data", str(root), "--epochs", "1", "--width", "8", "--batch-size", "8", "--augment", "none"]
    argv += ["--ema", "0.5", "--logit-adjust", "1", "--class-weights", "balanced", "--runs-dir", str(runs)]
    out, err = io.StringIO(), io.StringIO()  # (capsys is for one test: this run serves several)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert train.main([*argv, "--name", "ema"]) == 0
    return runs / "ema", out.getvalue() + err.getvalue()


def test_a_class_without_training_targets_is_never_favoured_when_the_shift_comes_off():
    """Trained to the optimum of the logit-adjusted loss (label smoothing gives every class some
    target), a model serves logits without the shift: an empty class floored to a prior of 1e-6
    came out 13.8 ahead and was called on every face."""
    import keras
    import tensorflow as tf

    from training.losses import LogitAdjustedCrossEntropy

    loss = LogitAdjustedCrossEntropy([0.9, 0.1, 0.0], tau=1.0, label_smoothing=0.1)
    logits = keras.Variable(np.zeros((2, 3), np.float32))
    targets = np.eye(3, dtype=np.float32)[:2]  # a face of the common class, one of the rare class
    optimizer = keras.optimizers.Adam(0.2)
    for _ in range(200):
        with tf.GradientTape() as tape:
            value = loss(targets, keras.ops.softmax(logits))
        optimizer.apply_gradients([(tape.gradient(value, logits), logits)])
    served = keras.ops.convert_to_numpy(logits)
    assert served.argmax(1).tolist() == [0, 1]  # the rare class still gains: it wins its own face


def test_class_weights_count_only_the_classes_that_have_targets():
    weights = train.class_weights(np.array([10.0, 30.0, 0.0]), "balanced")
    np.testing.assert_allclose(weights, [40 / (2 * 10), 40 / (2 * 30), 0.0])
    np.testing.assert_allclose(train.class_weights(np.array([10.0, 30.0, 0.0]), "sqrt"), np.sqrt(weights))


def test_a_run_says_which_class_has_no_targets_and_weighs_it_zero(one_epoch_run):
    _, printed = one_epoch_run
    assert "warning: no training targets for disgust: the model cannot learn to recognise it" in printed
    assert "disgust 0.00" in printed  # its class weight


def test_a_run_no_longer_than_its_warm_up_warms_up_less(one_epoch_run, capsys):
    run, printed = one_epoch_run
    assert "note: --warmup-epochs 1 is not shorter than the run's 1 epochs: warming up over 0 instead" in printed
    assert json.loads((run / "hparams.json").read_text())["warmup_epochs"] == 0
    args = train.parse_args(["--data", "-", "--epochs", "3", "--warmup-epochs", "1"])
    train.cap_warmup(args)
    assert args.warmup_epochs == 1 and capsys.readouterr().out == ""  # shorter than the run: left alone


def test_an_ema_run_keeps_its_raw_weights_at_its_last_epoch_and_goes_on_from_them(one_epoch_run, tmp_path, capsys):
    """Keras's swap callback wrote the average over the raw weights at a run's last epoch, so a
    finished run extended by --resume --epochs went on from the average, in both places."""
    import keras

    import training.schedule  # noqa: F401  (registers the schedule last.keras names)
    import webapp.vision.layers  # noqa: F401  (registers InferenceBlur)

    run, _ = one_epoch_run

    def largest_gap(path) -> float:
        """The largest difference between the model's weights and the optimizer's average slots."""
        model = keras.models.load_model(path)
        pairs = zip(model.trainable_variables, model.optimizer._model_variables_moving_average, strict=True)
        return max(float(np.abs(np.asarray(w) - np.asarray(a)).max()) for w, a in pairs)

    assert largest_gap(run / "last.keras") > 0  # the average in the model, the raw weights in the slots
    extended = shutil.copytree(run, tmp_path / "extended")
    assert train.main(["--resume", str(extended), "--epochs", "2"]) == 0
    assert "in place of its raw weights" not in capsys.readouterr().out
    assert largest_gap(extended / "last.keras") > 0


def test_a_failed_resume_leaves_the_run_record_as_it_was(fer_folders, tmp_path, capsys):
    """The data loads, the checkpoint does not: hparams.json, log.csv and best.keras stay as they were."""
    run = tmp_path / "run"
    run.mkdir()
    record = json.dumps({"data": "/elsewhere/fer", "epochs": 5})
    (run / "hparams.json").write_text(record)
    (run / "state.json").write_text(json.dumps({"epochs_done": 2}))
    log = "epoch,val_accuracy\n0,0.5\n1,0.6\n2,0.7\n"  # an epoch logged, then stopped before it counted
    (run / "log.csv").write_text(log)
    (run / "last.keras").write_bytes(b"not a model")
    assert train.main(["--resume", str(run), "--data", str(fer_folders), "--epochs", "6"]) == 2
    assert "cannot be read back" in capsys.readouterr().err
    assert (run / "hparams.json").read_text() == record
    assert (run / "log.csv").read_text() == log
    assert not (run / "best.keras").exists()


def test_an_ensemble_is_not_fine_tuned_and_leaves_no_run_folder(voted_data, untrained_ferplus_models, tmp_path, capsys):
    from webapp.vision.layers import load_model

    members = [load_model(path) for path in untrained_ferplus_models(2)]
    ensemble.make_ensemble(members).save(tmp_path / "ensemble.keras")
    argv = ["--data", str(voted_data), "--labels", "ferplus-votes", "--classes", "8", "--epochs", "1"]
    argv += ["--init-from", str(tmp_path / "ensemble.keras"), "--runs-dir", str(tmp_path / "runs"), "--name", "x"]
    for _ in range(2):  # the same command again meets the same error, not a run folder left behind
        assert train.main(argv) == 2
        assert "neither a compact CNN nor MobileNetV2" in capsys.readouterr().err
        assert not (tmp_path / "runs" / "x").exists()


def test_a_renamed_compact_cnn_is_fine_tuned_as_one():
    """training.consistent and transport unpack-models save compact CNNs as w<width>-s<seed>."""
    import keras

    from training.model import make_compact_cnn

    model = make_compact_cnn(width=8, stem_convs=2)
    renamed = keras.Model(model.input, model.output, name="w8-s0")
    assert train.fine_tuned_architecture(renamed, "w8-s0.keras") == ("compact", 8, 2)


def test_the_ensemble_is_never_written_over_a_member(untrained_ferplus_models, tmp_path, capsys):
    from pathlib import Path

    first, second = untrained_ferplus_models(2)
    before = Path(first).read_bytes()
    for out in (first, str(Path(first).parent / "." / Path(first).name)):  # however it is spelled
        assert ensemble.main(["--members", first, second, "--out", out]) == 2
        assert f"is the member {first}: write the ensemble to a new file" in capsys.readouterr().err
    assert Path(first).read_bytes() == before


def test_members_of_different_classes_are_one_error_line(untrained_ferplus_models, tmp_path, capsys):
    from training.model import make_model

    (eight,) = untrained_ferplus_models(1)
    make_model(width=8).save(tmp_path / "seven.keras")  # FER-2013's 7 classes
    out = tmp_path / "ensemble.keras"
    assert ensemble.main(["--members", eight, str(tmp_path / "seven.keras"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the members output different classes") and len(err.splitlines()) == 1
    assert not out.exists()
