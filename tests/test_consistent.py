"""`training.consistent`: several models trained at once, as students of teachers that see the
same augmented view, on the TensorFlow backend (the same code runs on JAX on a GPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import consistent
from training.data import DataError


def test_mixup_blends_images_and_targets_alike_and_only_while_training():
    layer = consistent.make_mixup_layer(0.4, seed=3)
    images = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1) * np.ones((4, 2, 2, 1), np.float32)
    targets = np.eye(4, dtype=np.float32)
    mixed_images, mixed_targets = (np.asarray(t) for t in layer([images, targets], training=True))
    # each image's blend of image indices is its target's blend of classes
    np.testing.assert_allclose(mixed_images[:, 0, 0, 0], mixed_targets @ np.arange(4), rtol=1e-5)
    assert (mixed_targets.max(1) >= 0.5 - 1e-6).all()  # each keeps most of itself
    np.testing.assert_allclose(mixed_targets.sum(1), 1, rtol=1e-5)
    same_images, same_targets = layer([images, targets], training=False)
    np.testing.assert_array_equal(np.asarray(same_images), images)
    np.testing.assert_array_equal(np.asarray(same_targets), targets)


def test_teacher_targets_blend_the_mean_of_mirrored_views_with_the_labels():
    import keras

    from training.model import make_model

    teachers = [make_model(width=4, classes=("a", "b")), make_model(width=4, classes=("a", "b"))]
    images = np.random.default_rng(0).random((3, 48, 48, 1)).astype(np.float32)
    labels = np.array([[1, 0], [0, 1], [0.5, 0.5]], np.float32)
    blended = np.asarray(consistent.make_teacher_layer(teachers, 0.7)([images, labels]))
    views = [teacher.predict(view, verbose=0) for teacher in teachers for view in (images, images[:, :, ::-1])]
    np.testing.assert_allclose(blended, 0.7 * np.mean(views, 0) + 0.3 * labels, atol=1e-5)
    assert isinstance(consistent.mean_prediction(teachers, images), type(keras.ops.convert_to_tensor(images)))


def test_epoch_schedule_warms_up_then_decays_to_near_zero():
    base = ["--data", "-", "--out", "-", "--widths", "8", "--lr", "1.0", "--warmup-epochs", "2"]
    schedule = consistent.make_epoch_schedule(consistent.parse_args([*base, "--epochs", "10"]), started=0.0)
    rates = [schedule.rate(epoch) for epoch in range(10)]
    assert rates[0] < rates[1] < rates[2] and rates[2] > 0.95
    assert (np.diff(rates[2:]) < 0).all() and rates[-1] < 0.05
    short = consistent.make_epoch_schedule(consistent.parse_args([*base, "--epochs", "2"]), started=0.0)
    assert short.rate(1) <= 0.5  # too short for its warm-up: half the peak, not the peak
    with pytest.raises(SystemExit):  # the length is decided after epoch 2, so warm-up must cover it
        consistent.parse_args([*base[:-1], "1", "--time-budget", "60"])
    with pytest.raises(SystemExit):
        consistent.parse_args([*base, "--time-budget", "0"])


def test_time_budget_keeps_the_epochs_that_end_within_it(monkeypatch):
    import keras

    args = consistent.parse_args(["--data", "-", "--out", "-", "--widths", "8", "--time-budget", "100"])
    args.reserve = 10
    clock = iter([15.0, 20.0, 20.0])  # epoch 1 starts at 15 s and takes 5 s: 100 - 10 - 20 = 70 s are left
    monkeypatch.setattr(consistent.time, "perf_counter", lambda: next(clock))
    schedule = consistent.make_epoch_schedule(args, started=0.0)
    schedule.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    schedule.model.compile(optimizer=keras.optimizers.AdamW(learning_rate=0.0), loss="mse")
    schedule.on_epoch_begin(1)
    schedule.on_epoch_end(1)
    assert schedule.epochs == 2 + 70 // 5
    assert not schedule.model.stop_training
    schedule.on_epoch_end(schedule.epochs - 1)
    assert schedule.model.stop_training


def test_a_training_step_moves_the_students_and_leaves_the_teachers_alone():
    from training.model import make_model

    classes = tuple("abcdefgh")
    args = consistent.parse_args(["--data", "-", "--out", "-", "--widths", "4", "--mixup", "0.4"])
    students = [make_model(width=4, classes=classes)]
    teachers = [make_model(width=4, classes=classes)]
    teacher_weights = [w.copy() for w in teachers[0].get_weights()]  # BatchNorm statistics included
    student_weights = [w.copy() for w in students[0].get_weights()]
    trainer = consistent.build_trainer(students, teachers, args, len(classes))
    consistent.compile_trainer(trainer, args, len(classes))
    trainer.optimizer.learning_rate = 1e-2
    rng = np.random.default_rng(0)
    images = rng.random((16, 48, 48, 1)).astype(np.float32)
    targets = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 16)]
    trainer.fit([images, targets], [np.zeros((16, 1), np.float32)], batch_size=8, epochs=1, verbose=0)
    for before, after in zip(teacher_weights, teachers[0].get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(a, b) for a, b in zip(student_weights, students[0].get_weights(), strict=True))


def test_teachers_then_students_on_the_same_views(voted_data, tmp_path, capsys):
    from training.distill import load_teacher
    from training.evaluate import main as evaluate
    from training.model import stem_conv_count
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT
    from webapp.vision.layers import load_model, model_classes

    common = ["--data", str(voted_data), "--batch-size", "8", "--warmup-epochs", "1"]
    assert consistent.main([*common, "--out", str(tmp_path / "t"), "--widths", "4", "8", "--epochs", "2"]) == 0
    record = json.loads((tmp_path / "t" / "run.json").read_text())
    assert record["args"]["epochs"] == 2 and set(record["val_ferplus"]) == {"0:w4-s0", "1:w8-s1", "mean"}
    teachers = [str(tmp_path / "t" / name) for name in ("w4-s0.keras", "w8-s1.keras")]

    student_args = ["--out", str(tmp_path / "s"), "--widths", "4", "--teachers", *teachers, "--mixup", "0.3"]
    student_args += ["--save-teacher", "--time-budget", "1", "--warmup-epochs", "2", "--seed", "5", "--stem-convs", "2"]
    assert consistent.main([*common[:-2], *student_args]) == 0
    out = capsys.readouterr().out
    assert "epochs fit in the budget" in out and "teachers:" in out
    record = json.loads((tmp_path / "s" / "run.json").read_text())
    assert record["args"]["epochs"] == 2  # the budget is spent: the shortest run, two epochs
    assert set(record["teachers_val_ferplus"]) == {"0:w4-s0", "1:w8-s1", "mean"}

    student = load_model(tmp_path / "s" / "w4-stem2-s5.keras")
    assert model_classes(student) == EMOTIONS_WITH_CONTEMPT and stem_conv_count(student) == 2
    keys = [f"{emotion}/{i}.png" for emotion in ("angry", "happy") for i in range(4)]
    saved = load_teacher(tmp_path / "s" / "teacher.npz", keys, EMOTIONS_WITH_CONTEMPT)
    assert saved.shape == (8, 8) and np.allclose(saved.sum(1), 1, atol=1e-2)
    student_file = str(tmp_path / "s" / "w4-stem2-s5.keras")
    png = str(tmp_path / "confusion.png")
    assert evaluate(["--data", str(voted_data / "val"), "--model", student_file, "--confusion-png", png]) == 0


def test_trained_models_are_fine_tuned_with_a_head_for_the_run_classes(voted_data, tmp_path):
    from training.model import make_model
    from webapp.vision.labels import EMOTIONS, EMOTIONS_WITH_CONTEMPT
    from webapp.vision.layers import load_model, model_classes

    (tmp_path / "old").mkdir()
    make_model(width=4, classes=EMOTIONS).save(tmp_path / "old" / "best.keras")
    args = [
        "--data",
        str(voted_data),
        "--out",
        str(tmp_path / "ft"),
        "--init-from",
        str(tmp_path / "old" / "best.keras"),
    ]
    assert consistent.main([*args, "--epochs", "1", "--batch-size", "8", "--augment", "sharp"]) == 0
    tuned = load_model(tmp_path / "ft" / "old-best.keras")
    assert model_classes(tuned) == EMOTIONS_WITH_CONTEMPT
    with pytest.raises(SystemExit):  # new models or trained ones, not both
        consistent.parse_args([*args, "--widths", "8"])
    with pytest.raises(SystemExit):  # two models that would be saved under one name
        consistent.parse_args([*args, str(tmp_path / "old" / "best.keras")])


def test_bad_options_and_data_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        consistent.parse_args(["--data", "x", "--out", "y", "--widths", "8", "--teacher-weight", "1.5"])
    with pytest.raises(SystemExit):
        consistent.parse_args(["--data", "x", "--out", "y", "--widths", "8", "--save-teacher"])
    assert consistent.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path), "--widths", "4"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        consistent.parse_args(["--data", "x", "--out", "y", "--widths", "8", "--stem-convs", "0"])
    with pytest.raises(SystemExit):
        consistent.parse_args(["--data", "x", "--out", "y", "--init-from", "m.keras", "--stem-convs", "2"])
    with pytest.raises(SystemExit):
        consistent.parse_args(["--data", "x", "--out", "y", "--widths", "8", "--labels", "fer2013"])


def test_a_teacher_with_other_classes_is_refused(voted_data, tmp_path, capsys):
    from training.model import make_model

    make_model(width=4).save(tmp_path / "seven.keras")  # FER-2013's 7 classes; the run trains 8
    args = ["--data", str(voted_data), "--out", str(tmp_path / "s"), "--widths", "4"]
    assert consistent.main([*args, "--teachers", str(tmp_path / "seven.keras")]) == 2
    assert "this run trains" in capsys.readouterr().err


def test_val_is_the_ferplus_majority_and_optional(voted_data, tmp_path):
    import shutil

    import cv2

    from training.data import load_split
    from training.ferplus import attach_votes, majority, votes_table
    from webapp.vision.labels import classes_for

    data = tmp_path / "fer"
    shutil.copytree(voted_data, data)
    rows = (data / "ferplus_votes.csv").read_text()
    # a tie and a face most annotators called unknown or not a face: neither is scored
    for name, votes in (("tie", "5,5,0,0,0,0,0,0,0,0"), ("unknown", "1,0,0,0,0,0,0,0,6,3")):
        cv2.imwrite(str(data / "val" / "happy" / f"{name}.png"), np.full((48, 48), 128, np.uint8))
        rows += f"val/happy/{name}.png,9999,{votes}\n"
    (data / "ferplus_votes.csv").write_text(rows)
    args = consistent.parse_args(["--data", str(data), "--out", "unused", "--widths", "4"])
    train, (images, labels) = consistent.load_faces(args)
    val = attach_votes(load_split(data, "val"), votes_table(data))
    expected = majority(val.votes, classes_for(8))
    assert len(train.images) == 7 * 4 and (expected == -1).sum() == 2
    np.testing.assert_array_equal(labels, expected[expected >= 0])
    np.testing.assert_array_equal(images, val.images[expected >= 0])
    fer2013 = ["--data", str(data), "--out", "unused", "--widths", "4", "--labels", "fer2013", "--classes", "7"]
    assert consistent.load_faces(consistent.parse_args(fer2013))[1] is None  # scored on FER+ only
    # the GPU machine may carry train only: training goes on, unscored
    shutil.rmtree(data / "val")
    train, val = consistent.load_faces(args)
    assert len(train.images) == 7 * 4 and val is None
    # an unreadable val split is still an error
    (data / "val" / "happy").mkdir(parents=True)
    (data / "val" / "happy" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError):
        consistent.load_faces(args)


def test_a_run_never_overwrites_models_or_a_run_record(tmp_path, capsys):
    """Refused before the data loads: --data here does not even exist."""
    out = tmp_path / "t"
    out.mkdir()
    (out / "w4-s0.keras").write_bytes(b"a trained teacher")
    common = ["--data", str(tmp_path / "absent"), "--out", str(out)]
    assert consistent.main([*common, "--widths", "4", "--teachers", str(out / "w4-s0.keras")]) == 2
    assert f"a student would be saved over its teacher {out / 'w4-s0.keras'}" in capsys.readouterr().err
    assert consistent.main([*common, "--widths", "4"]) == 2
    assert f"{out / 'w4-s0.keras'} exists: pick another --out" in capsys.readouterr().err
    assert (out / "w4-s0.keras").read_bytes() == b"a trained teacher"
    (out / "run.json").write_text("{}")
    assert consistent.main([*common, "--widths", "8"]) == 2
    assert "run.json exists" in capsys.readouterr().err


def test_a_missing_model_to_fine_tune_is_one_error_line(voted_data, tmp_path, capsys):
    args = ["--data", str(voted_data), "--out", str(tmp_path / "ft"), "--init-from", str(tmp_path / "absent.keras")]
    assert consistent.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --init-from: model file") and "not found" in err and len(err.splitlines()) == 1
