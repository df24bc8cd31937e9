"""The training CLIs end to end on a tiny synthetic dataset, and the shipped model on real data."""

from __future__ import annotations

import csv
import json

import pytest

from training import calibrate, card, choose, ensemble, evaluate, export, train

# the shipped model's floors on val (its figures are in models/README.md)
FER2013_LABELS_FLOOR = 0.605
FERPLUS_FLOOR = 0.835
CLEAR_FLOOR = 0.93


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Two epochs of a small compact CNN on 21 synthetic faces, then one more by --resume (with XLA)."""
    from tests.harness import write_random_faces

    root = write_random_faces(tmp_path_factory.mktemp("data") / "fer", {"train": 3, "val": 2})
    runs = tmp_path_factory.mktemp("runs")
    assert (
        train.main(
            [
                "--data",
                str(root),
                "--epochs",
                "2",
                "--width",
                "8",
                "--stem-convs",
                "2",
                "--erase",
                "0.5",
                "--batch-size",
                "8",
                "--runs-dir",
                str(runs),
                "--name",
                "smoke",
            ]
        )
        == 0
    )
    run = runs / "smoke"
    assert train.main(["--resume", str(run), "--epochs", "3", "--xla"]) == 0
    return root, run


def test_run_folder_holds_everything_needed_to_explain_the_result(trained_run):
    _, run = trained_run
    for name in ("hparams.json", "model_summary.txt", "log.csv", "best.keras", "last.keras", "state.json"):
        assert (run / name).is_file(), name
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams["width"] == 8 and hparams["seed"] == 1337 and hparams["epochs"] == 3
    assert hparams["stem_convs"] == 2 and hparams["erase"] == 0.5
    with open(run / "log.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]  # resumed, not restarted
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 3


def test_a_run_kept_as_slim_weights_goes_on_with_a_fresh_optimizer(trained_run, tmp_path, capsys):
    """checkpoints/ keeps a run in progress as float16 weights only; --resume continues its schedule."""
    import shutil

    import keras

    from training.slim import slim

    _, run = trained_run
    kept = tmp_path / run.name
    shutil.copytree(run, kept, ignore=shutil.ignore_patterns("*.keras"))
    slim(run / "last.keras", kept / "last.keras")
    steps = 3  # 21 faces in batches of 8
    assert train.main(["--resume", str(kept), "--epochs", "5"]) == 0
    assert "holds weights only: going on with a fresh optimizer from step 9" in capsys.readouterr().out
    with open(kept / "log.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2", "3", "4"]
    assert json.loads((kept / "state.json").read_text())["epochs_done"] == 5
    # random faces: whether best.keras exists depends on which epochs led, so expect exactly what the log says
    scores = train.logged_val_accuracy(kept)
    kept_was_best = scores[2] >= max(scores[:3])
    beaten_later = max(scores[3:]) > max(scores[:3])
    assert (kept / "best.keras").is_file() == (kept_was_best or beaten_later)

    optimizer = keras.models.load_model(kept / "last.keras").optimizer
    assert int(optimizer.iterations) == 2 * steps  # Adam's own count, for its bias correction
    config = optimizer._learning_rate.get_config()  # the WarmupCosine the optimizer follows
    assert config["start_step"] == 3 * steps and config["total_steps"] == 5 * steps
    assert config["rewarm_steps"] == steps // 10

    # resumed again, now with optimizer state: the cosine stays on the run's count, not Adam's
    assert train.main(["--resume", str(kept), "--epochs", "6"]) == 0
    optimizer = keras.models.load_model(kept / "last.keras").optimizer
    config = optimizer._learning_rate.get_config()
    assert int(optimizer.iterations) == 3 * steps and config["start_step"] == 3 * steps


@pytest.mark.parametrize("scores, restored", [((0.5, 0.6, 0.6), True), ((0.5, 0.7, 0.6), False)])
def test_a_kept_run_gets_best_keras_back_only_when_its_last_epoch_was_the_best(tmp_path, capsys, scores, restored):
    rows = "".join(f"{epoch},{score}\n" for epoch, score in enumerate(scores))
    (tmp_path / "log.csv").write_text("epoch,val_accuracy\n" + rows)
    (tmp_path / "last.keras").write_bytes(b"the last epoch's weights")
    train.restore_best(tmp_path)
    assert (tmp_path / "best.keras").exists() == restored
    if restored:
        assert (tmp_path / "best.keras").read_bytes() == b"the last epoch's weights"
    else:
        assert "best epoch 2 (0.7000) was not kept" in capsys.readouterr().out
    # either way a resumed run's best.keras is only written by an epoch that beats the log's best
    callbacks = train.make_callbacks(tmp_path, resume=True, train_images=1)
    (best,) = [c for c in callbacks if getattr(c, "monitor", None) == "val_accuracy"]
    assert best.best == max(scores)


def test_the_schedule_goes_on_where_the_run_was_and_ramps_a_fresh_optimizer_up():
    from training.schedule import WarmupCosine

    whole = WarmupCosine(1.0, total_steps=100, warmup_steps=10)
    continued = WarmupCosine(1.0, total_steps=100, warmup_steps=10, start_step=40, rewarm_steps=5)
    assert float(continued(0)) == pytest.approx(float(whole(40)) / 5)
    assert float(continued(2)) == pytest.approx(float(whole(42)) * 3 / 5)
    for step in (4, 30, 60):
        assert float(continued(step)) == pytest.approx(float(whole(40 + step)))
    assert float(continued(60)) == pytest.approx(0.0, abs=1e-6)
    assert WarmupCosine.from_config(whole.get_config() | {"start_step": 40}).start_step == 40
    # schedules saved before these two settings existed load as they were
    legacy = WarmupCosine.from_config({"peak": 1.0, "total_steps": 100, "warmup_steps": 10})
    assert float(legacy(40)) == pytest.approx(float(whole(40)))


def test_the_training_order_follows_the_session_seed():
    import numpy as np

    faces = train.LabeledFaces(
        np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8),
        np.eye(8, dtype=np.float32)[np.arange(64) % 8],
        tuple(map(str, range(64))),
    )
    # no random layers: their draws in a parallel map are not repeatable batch for batch, the order is
    args = train.parse_args(["--data", "-", "--augment", "none", "--batch-size", "16"])

    def first_batch(seed: int) -> np.ndarray:
        train_ds, _ = train.make_datasets(args, faces, faces, None, seed)
        return next(iter(train_ds))[0].numpy()

    np.testing.assert_array_equal(first_batch(5), first_batch(5))
    assert not np.array_equal(first_batch(5), first_batch(train.draw_seed(5, 3)))
    assert train.draw_seed(5, 0) == 5  # a fresh run draws as it always did


def test_a_resumed_session_draws_new_views_instead_of_replaying_the_first_epochs(trained_run, tmp_path, monkeypatch):
    """Order, augmentation, erasing and dropout of a resumed session all start from the moved seed."""
    import shutil

    import keras

    from training import augment

    _, run = trained_run
    resumed = tmp_path / run.name
    shutil.copytree(run, resumed)
    seeds = {}

    def spy(name, make, index):
        def wrapped(*args, **kwargs):
            seeds[name] = args[index] if index < len(args) else None  # None: left to the default
            return make(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(train, "make_datasets", spy("data", train.make_datasets, 4))
    monkeypatch.setattr(augment, "make_augmenter", spy("augment", augment.make_augmenter, 0))
    monkeypatch.setattr(augment, "make_eraser", spy("erase", augment.make_eraser, 1))
    monkeypatch.setattr(keras.utils, "set_random_seed", spy("global", keras.utils.set_random_seed, 0))
    assert train.main(["--resume", str(resumed), "--epochs", "4"]) == 0
    moved = train.draw_seed(json.loads((run / "hparams.json").read_text())["seed"], 3)  # the fixture ran 3 epochs
    assert seeds == {"global": moved, "data": moved, "augment": moved, "erase": moved + 5}


def test_evaluate_prints_accuracy_last_and_writes_json_and_png(trained_run, tmp_path, capsys):
    root, run = trained_run
    out = tmp_path / "report.json"
    assert evaluate.main(["--data", str(root / "val"), "--model", str(run / "best.keras"), "--json", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("accuracy: 0.") or last == "accuracy: 1.0000"
    report = json.loads(out.read_text())
    assert report["count"] == 14 and len(report["confusion"]) == 7
    assert out.with_suffix(".png").stat().st_size > 1000


def test_evaluate_writes_into_a_new_folder_and_refuses_faces_the_model_cannot_answer(trained_run, tmp_path, capsys):
    import shutil

    root, run = trained_run
    out = tmp_path / "not" / "yet" / "report.json"
    assert evaluate.main(["--data", str(root / "val"), "--model", str(run / "best.keras"), "--json", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()

    faces = shutil.copytree(root / "val", tmp_path / "with-contempt")
    shutil.copytree(faces / "happy", faces / "contempt")
    for main in (evaluate.main, calibrate.main):
        argv = ["--data", str(faces), "--model", str(run / "best.keras")]
        assert main(argv + (["--out", str(tmp_path / "c.keras")] if main is calibrate.main else [])) == 2
        assert "has contempt faces, which the model cannot answer" in capsys.readouterr().err
    assert choose.main(["--members", str(run / "best.keras"), "--data", str(faces)]) == 2
    assert "has contempt faces" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a model at all", "half"])
def test_a_file_that_is_not_a_model_is_one_clear_line(trained_run, tmp_path, capsys, content):
    root, run = trained_run
    model = tmp_path / "model.keras"
    whole = (run / "best.keras").read_bytes()
    model.write_bytes(whole[: len(whole) // 2] if content == "half" else content)
    for argv in (
        lambda: evaluate.main(["--data", str(root / "val"), "--model", str(model)]),
        lambda: calibrate.main(["--data", str(root), "--model", str(model), "--out", str(tmp_path / "c.keras")]),
        lambda: choose.main(["--data", str(root), "--members", str(model)]),
        lambda: export.main(["--model", str(model), "--out", str(tmp_path / "models")]),
        lambda: ensemble.main(["--members", str(model), str(model), "--out", str(tmp_path / "e.keras")]),
    ):
        assert argv() == 2
        assert "not a readable .keras or .tflite model" in capsys.readouterr().err


def test_evaluate_reports_a_bad_path(tmp_path, capsys):
    assert evaluate.main(["--data", str(tmp_path / "nope"), "--model", "x.tflite"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The smoke run exported to every serving form, with its accuracy checks."""
    root, run = trained_run
    out = tmp_path_factory.mktemp("models")
    assert (
        export.main(
            [
                "--model",
                str(run / "best.keras"),
                "--out",
                str(out),
                "--data",
                str(root),
                "--calibration-size",
                "20",
                "--latency-repeats",
                "3",
            ]
        )
        == 0
    )
    return out


def test_export_round_trip_keeps_accuracy(exported):
    forms = json.loads((exported / "export.json").read_text())["forms"]
    assert forms["float32"]["accuracy"] == pytest.approx(forms["keras"]["accuracy"], abs=0.08)
    assert forms["float16"]["accuracy"] == pytest.approx(forms["keras"]["accuracy"], abs=0.08)
    sizes = [(exported / f"emotion_{form}.tflite").stat().st_size for form in ("int8", "float16", "float32")]
    assert sizes == sorted(sizes)


def test_model_card_is_written_from_the_run_files(trained_run, exported, tmp_path, capsys):
    root, run = trained_run
    report = exported / "eval_val.json"
    assert (
        evaluate.main(
            ["--data", str(root / "val"), "--model", str(exported / "emotion_float16.tflite"), "--json", str(report)]
        )
        == 0
    )
    accuracy = json.loads(report.read_text())["accuracy"]
    for runs in ([run], [run, run]):
        assert card.main(["--run", *map(str, runs), "--models", str(exported), "--report", str(report)]) == 0
        text = (exported / "README.md").read_text()
        assert f"**accuracy {accuracy:.4f}**" in text and "`emotion_float16.tflite` (served by default)" in text
        assert ("An ensemble of 2" in text) == (len(runs) == 2)
        assert "python -m training.train --data" in text and "--epochs 3" in text
        assert "--width 8 --stem-convs 2" in text and "(width 8, 2 stem convs)" in text
        assert " --erase 0.5" in text and "Random erasing (`--erase 0.5`)" in text
        assert f"- Kept: `{run / 'best.keras'}`, `{run / 'last.keras'}`." in text

    # a report with FER+ votes adds the consensus scores and the human reference beside them
    record = json.loads(report.read_text())
    # the folder-label report stands in for the FER+ one (the card's recall table reads its classes)
    ferplus = record | {"count": 3422, "accuracy": 0.8431, "macro_f1": 0.671, "ece": 0.011}
    ferplus |= {"confident_share": 0.65, "confident_accuracy": 0.96}
    record |= {"ferplus_majority": ferplus, "clear_non_neutral": {"count": 1556, "accuracy": 0.9325}}
    record |= {
        "neutral_share": {"model": 0.3656, "ferplus_majority": 0.3656},
        "ferplus_one_annotator_agreement": 0.7876,
        "both_labelings": {
            "faces": 3422,
            "agree_share": 0.6447,
            "right_where_they_agree": 0.8989,
            "differ_says_majority": 0.7451,
            "differ_says_label": 0.1316,
        },
    }
    voted_report = tmp_path / "eval_val_voted.json"  # the module's exported folder keeps its own report
    voted_report.write_text(json.dumps(record))
    assert card.main(["--run", str(run), "--models", str(exported), "--report", str(voted_report)]) == 0
    text = (exported / "README.md").read_text()
    assert "Against the FER+ majority (3,422 faces; ties left out): **accuracy 0.8431**" in text
    assert "agrees with the majority of the face's other annotators 78.8% of the time" in text
    # no answer is right on both labels where they differ: the two accuracies' ceiling is stated
    assert "agree on 64.5% of these faces, and the model is right on 89.9% of those" in text
    assert (
        "its two accuracies add up to 1.471; a model as accurate where the labelings agree could reach at most 1.514"
        in text
    )
    assert "Served form (`emotion_float16.tflite`, flip TTA)" in text and "--flip-tta" not in text

    # a model chosen to be served without flip TTA is described, and reproduced, so; its kept weights are slim
    import shutil

    from training.slim import slim

    unflipped, models = tmp_path / "eval_val_no_tta.json", tmp_path / "models"
    unflipped.write_text(json.dumps(record | {"flip_tta": False}))
    models.mkdir()
    export_record = json.loads((exported / "export.json").read_text())
    (models / "export.json").write_text(json.dumps(export_record | {"flip_tta": False}))
    slim_run = tmp_path / "checkpoints" / run.name
    shutil.copytree(run, slim_run, ignore=shutil.ignore_patterns("*.keras"))
    slim(run / "best.keras", slim_run / "best.keras")
    assert card.main(["--run", str(slim_run), "--models", str(models), "--report", str(unflipped)]) == 0
    text = (models / "README.md").read_text()
    assert "Served form (`emotion_float16.tflite`, no TTA)" in text and "(batch 1, no TTA)" in text
    assert "python -m training.export --model" in text and "--flip-tta off" in text
    assert f"- Kept: `{slim_run / 'best.keras'}`, its weights rounded to float16 by `python -m training.slim`" in text

    # a calibration held to a chosen neutral share is reproduced with it, and said so
    calibration = {"against": "the FER+ majority", "temperature": 0.55, "ece_before": 0.14, "ece_after": 0.012}
    for fitted, flag, said in (
        ({"neutral_shift": 0.0}, "", "divided by 0.55;"),
        ({"neutral_shift": 0.02}, " --match-neutral", "than the FER+ majority does"),
        ({"neutral_shift": 0.0, "match_neutral": True}, " --match-neutral", "divided by 0.55;"),  # none needed
        (
            {"neutral_shift": 0.14, "neutral_share_target": 0.354},
            " --neutral-share 0.354",
            "than 0.354 of val's faces neutral",
        ),
    ):
        (tmp_path / "calibration.json").write_text(json.dumps(calibration | fitted))
        argv = ["--run", str(slim_run), "--models", str(models), "--report", str(unflipped)]
        assert card.main([*argv, "--calibration", str(tmp_path / "calibration.json")]) == 0
        text = (models / "README.md").read_text()
        assert said in text and ("--neutral-share" in text) == (flag == " --neutral-share 0.354")
        assert ("--match-neutral" in text) == (flag == " --match-neutral")


def test_ensemble_averages_its_members_and_scores_them(trained_run, tmp_path, capsys):
    import keras
    import numpy as np

    root, run = trained_run
    out = tmp_path / "ensemble.keras"
    members = [str(run / "best.keras"), str(run / "last.keras")]
    assert ensemble.main(["--members", *members, "--out", str(out), "--data", str(root)]) == 0
    scores = capsys.readouterr().out.strip().splitlines()[-3:]
    assert [line.split()[-1] for line in scores] == [*members, str(out)]
    faces = np.random.default_rng(1).random((4, 48, 48, 1), dtype=np.float32)
    expected = np.mean(
        [keras.models.load_model(path, compile=False).predict(faces, verbose=0) for path in members], axis=0
    )
    np.testing.assert_allclose(
        keras.models.load_model(out, compile=False).predict(faces, verbose=0), expected, atol=1e-5
    )
    assert ensemble.main(["--members", members[0], "--out", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err


def test_inference_blur_matches_cv2_at_inference_and_is_off_while_training(tmp_path):
    import cv2
    import numpy as np

    from training.augment import AUGMENTATION_BLUR_SIGMA
    from training.model import make_model
    from webapp.vision.layers import InferenceBlur, inference_blur_sigma, load_model

    faces = np.random.default_rng(2).random((3, 48, 48, 1), dtype=np.float32)
    blur = InferenceBlur(0.7)
    expected = np.stack([cv2.GaussianBlur(face, (3, 3), 0.7) for face in faces[..., 0]])[..., np.newaxis]
    np.testing.assert_allclose(np.asarray(blur(faces)), expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(blur(faces, training=True)), faces)
    np.testing.assert_array_equal(np.asarray(InferenceBlur(0)(faces)), faces)
    assert pytest.approx(0.707, abs=1e-3) == AUGMENTATION_BLUR_SIGMA

    model = make_model(width=8, blur_sigma=AUGMENTATION_BLUR_SIGMA)
    assert (
        inference_blur_sigma(model) == pytest.approx(AUGMENTATION_BLUR_SIGMA)
        and inference_blur_sigma(make_model(width=8)) == 0
    )
    model.save(tmp_path / "m.keras")
    reloaded = load_model(tmp_path / "m.keras")
    assert inference_blur_sigma(reloaded) == pytest.approx(AUGMENTATION_BLUR_SIGMA)  # the model file records it
    np.testing.assert_allclose(reloaded.predict(faces, verbose=0), model.predict(faces, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        InferenceBlur(-1)


def test_stem_convs_add_full_resolution_convolutions_before_the_first_pooling():
    from training.model import make_compact_cnn, stem_conv_count

    plain, deep_stem = make_compact_cnn(width=8), make_compact_cnn(width=8, stem_convs=2)
    assert (stem_conv_count(plain), stem_conv_count(deep_stem)) == (1, 2)
    assert plain.name == "compact_cnn_w8" and deep_stem.name == "compact_cnn_w8_s2"
    assert deep_stem.count_params() - plain.count_params() == 3 * 3 * 8 * 8 + 4 * 8  # one conv and its batch norm
    with pytest.raises(ValueError, match="at least one stem"):
        make_compact_cnn(width=8, stem_convs=0)
    import keras

    inputs = keras.Input((48, 48, 1))
    with pytest.raises(ValueError, match="no pooling"):
        stem_conv_count(keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)))


def test_with_blur_sigma_keeps_the_weights_and_changes_only_the_blur():
    import numpy as np

    from training.model import make_model, with_blur_sigma
    from webapp.vision.layers import InferenceBlur, inference_blur_sigma

    blurred = make_model(width=8, blur_sigma=0.7)
    sharp = with_blur_sigma(blurred, 0.0)
    assert inference_blur_sigma(sharp) == 0 and inference_blur_sigma(blurred) == 0.7
    faces = np.random.default_rng(3).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(
        sharp.predict(np.asarray(InferenceBlur(0.7)(faces)), verbose=0), blurred.predict(faces, verbose=0), atol=1e-5
    )


def test_sharp_augmentation_moves_whole_pixels_and_needs_no_blur():
    import keras
    import numpy as np

    from training.augment import blurs, make_augmenter

    faces = np.random.default_rng(4).random((4, 48, 48, 1), dtype=np.float32)
    geometric = keras.Sequential([layer for layer in make_augmenter(0, "sharp").layers if "contrast" not in layer.name])
    moved = np.asarray(geometric(faces, training=True))
    assert np.isin(moved, faces).all()  # every pixel is a stored pixel: nothing was interpolated
    assert blurs("full") and not blurs("sharp") and not blurs("none")
    with pytest.raises(ValueError, match="mode"):
        make_augmenter(0, "none")


def test_fine_tune_on_sharp_faces_from_a_trained_model(trained_run, exported, tmp_path):
    """--init-from starts from a trained model; --augment sharp turns its blur off, each ensemble member
    keeps its own blur, and the model card shows both stages."""
    import numpy as np

    from webapp.vision.layers import inference_blur_sigma, load_model

    root, run = trained_run
    assert (
        train.main(
            [
                "--data",
                str(root),
                "--init-from",
                str(run / "best.keras"),
                "--augment",
                "sharp",
                "--epochs",
                "1",
                "--lr",
                "1e-4",
                "--batch-size",
                "8",
                "--runs-dir",
                str(tmp_path),
                "--name",
                "tuned",
            ]
        )
        == 0
    )
    tuned = tmp_path / "tuned"
    hparams = json.loads((tuned / "hparams.json").read_text())
    assert hparams["width"] == 8 and hparams["augment"] == "sharp" and hparams["init_from"] == str(run / "best.keras")
    assert hparams["stem_convs"] == 2  # read from the model it fine-tunes
    assert (
        inference_blur_sigma(load_model(run / "best.keras")) > 0
        and inference_blur_sigma(load_model(tuned / "best.keras")) == 0
    )

    out = tmp_path / "ensemble.keras"
    assert ensemble.main(["--members", str(run / "best.keras"), str(tuned / "best.keras"), "--out", str(out)]) == 0
    faces = np.random.default_rng(5).random((3, 48, 48, 1), dtype=np.float32)
    expected = (
        load_model(run / "best.keras").predict(faces, verbose=0)
        + load_model(tuned / "best.keras").predict(faces, verbose=0)
    ) / 2
    np.testing.assert_allclose(load_model(out).predict(faces, verbose=0), expected, atol=1e-5)
    assert sorted(
        inference_blur_sigma(member) > 0 for member in load_model(out).layers if hasattr(member, "layers")
    ) == [False, True]

    report = tmp_path / "eval_val.json"
    assert (
        evaluate.main(
            ["--data", str(root / "val"), "--model", str(exported / "emotion_float16.tflite"), "--json", str(report)]
        )
        == 0
    )
    assert (
        card.main(["--run", str(run), str(tuned / "last.keras"), "--models", str(exported), "--report", str(report)])
        == 0
    )
    text = (exported / "README.md").read_text()
    assert (
        f"then fine-tuned from `{run / 'best.keras'}` as `tuned`" in text and "Augmentation `--augment sharp`" in text
    )
    assert f"--init-from {run / 'best.keras'}" in text and "--augment sharp" in text and "runs/tuned/last.keras" in text
    assert "Checkpoint used: the last, epoch 1" in text


def test_exported_ensemble_serves_any_batch_size(trained_run, tmp_path):
    """A nested-model ensemble exported with a fixed batch of 1 could not be resized by XNNPACK; it now can."""
    import numpy as np

    from webapp.vision.classifier import EmotionClassifier

    _, run = trained_run
    out = tmp_path / "ensemble.keras"
    assert ensemble.main(["--members", str(run / "best.keras"), str(run / "last.keras"), "--out", str(out)]) == 0
    assert (
        export.main(
            [
                "--model",
                str(out),
                "--out",
                str(tmp_path),
                "--forms",
                "float16",
                "--latency-repeats",
                "3",
                "--calibration-size",
                "5",
            ]
        )
        == 0
    )
    classifier = EmotionClassifier(tmp_path / "emotion_float16.tflite")
    for batch in (1, 3, 2):
        probabilities = classifier.predict_probabilities(np.zeros((batch, 48, 48), np.uint8))
        assert probabilities.shape == (batch, 7) and np.allclose(probabilities.sum(1), 1, atol=1e-3)


def test_train_cli_help_and_bad_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--help"])
    assert exit_.value.code == 0
    with pytest.raises(SystemExit):
        train.main(["--data", str(tmp_path), "--stem-convs", "0"])
    assert "--stem-convs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--data", str(tmp_path), "--init-from", "m.keras", "--stem-convs", "2"])
    assert "a fine-tune keeps its model's stem" in capsys.readouterr().err
    for bad in ("-0.1", "1.5"):
        with pytest.raises(SystemExit):
            train.main(["--data", str(tmp_path), "--erase", bad])
        assert "--erase must be in [0, 1]" in capsys.readouterr().err
    assert train.main(["--data", str(tmp_path / "missing"), "--runs-dir", str(tmp_path)]) == 2


@pytest.mark.parametrize(
    "option, message",
    [
        (["--fer2013-weight", "1.5"], "--fer2013-weight must be in [0, 1]"),
        (["--fer2013-weight", "-0.1"], "--fer2013-weight must be in [0, 1]"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--limit", "-1"], "--limit must be >= 0"),
    ],
)
def test_train_rejects_numbers_out_of_range(tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--data", str(tmp_path), *option])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_failed_start_leaves_no_run_folder_and_an_existing_one_is_a_clear_error(fer_folders, tmp_path, capsys):
    runs = tmp_path / "runs"
    for data in (tmp_path / "missing", fer_folders / "train"):  # the second would be train and val at once
        assert train.main(["--data", str(data), "--runs-dir", str(runs), "--name", "x"]) == 2
        assert not (runs / "x").exists()
    assert "both train and val" in capsys.readouterr().err
    (runs / "x").mkdir(parents=True)  # as a run stopped in its first epoch leaves it: nothing to resume
    assert train.main(["--data", str(fer_folders), "--runs-dir", str(runs), "--name", "x"]) == 2
    assert "without a finished epoch: delete it, or pick another --name" in capsys.readouterr().err
    (runs / "x" / "last.keras").write_bytes(b"weights")  # stopped between the epoch's two records
    assert train.main(["--data", str(fer_folders), "--runs-dir", str(runs), "--name", "x"]) == 2
    assert "without a finished epoch" in capsys.readouterr().err
    (runs / "x" / "state.json").write_text('{"epochs_done": 1}')
    assert train.main(["--data", str(fer_folders), "--runs-dir", str(runs), "--name", "x"]) == 2
    assert f"--resume {runs / 'x'}, or pick another --name" in capsys.readouterr().err


def fake_run(folder, epochs_done: int = 2, **hparams):
    """A run folder as training leaves it, trained on another machine."""
    folder.mkdir()
    record = {"data": "/tmp/elsewhere/fer", "votes": "/tmp/elsewhere/votes.csv", "epochs": 5, **hparams}
    (folder / "hparams.json").write_text(json.dumps(record))
    (folder / "last.keras").write_bytes(b"weights")
    (folder / "state.json").write_text(json.dumps({"epochs_done": epochs_done}))
    return folder


def test_resume_takes_data_and_votes_from_the_command_line(tmp_path):
    run = str(fake_run(tmp_path / "run"))
    args, done = train.resumed_args(train.parse_args(["--resume", run, "--data", "here", "--votes", "v.csv"]))
    assert (args.data, args.votes, args.epochs, done) == ("here", "v.csv", 5, 2)
    args, _ = train.resumed_args(train.parse_args(["--resume", run, "--epochs", "8"]))
    assert (args.data, args.votes, args.epochs) == ("/tmp/elsewhere/fer", "/tmp/elsewhere/votes.csv", 8)


def test_resume_says_which_options_it_leaves_to_the_run(tmp_path, capsys):
    run = str(fake_run(tmp_path / "run", lr=0.002))
    args, _ = train.resumed_args(train.parse_args(["--resume", run, "--lr", "1e-4", "--batch-size", "32"]))
    assert args.lr == 0.002 and args.batch_size == 64
    assert "the run's own --batch-size, --lr: ignored here" in capsys.readouterr().err
    train.resumed_args(train.parse_args(["--resume", run, "--epochs", "8", "--threads", "1"]))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no folder", "no run folder"),
        ("hparams.json", "has no hparams.json"),
        ("last.keras", "has no last.keras"),
        ("state.json", "has no state.json"),
        ("epochs", "has done 2 of its 2 epochs; pass --epochs above 2"),
        ("data", "here' does not exist"),
    ],
)
def test_resume_errors_are_clear_and_leave_the_record_alone(tmp_path, capsys, breakage, message):
    run = fake_run(tmp_path / "run", epochs=2 if breakage == "epochs" else 5)
    record = (run / "hparams.json").read_text()
    if breakage == "no folder":
        run = tmp_path / "absent"
    elif breakage.endswith((".json", ".keras")):
        (run / breakage).unlink()
    assert train.main(["--resume", str(run), "--data", str(tmp_path / "here")]) == 2
    assert message in capsys.readouterr().err
    if breakage in ("last.keras", "state.json", "epochs", "data"):
        assert (run / "hparams.json").read_text() == record


def test_a_checkpoint_cut_while_saving_is_a_clear_error_and_saving_leaves_no_partial_file(
    trained_run, tmp_path, capsys
):
    import shutil

    _, run = trained_run
    assert not list(run.glob(".partial-*"))  # each save was renamed into place whole
    cut = shutil.copytree(run, tmp_path / "cut")
    whole = (cut / "last.keras").read_bytes()
    (cut / "last.keras").write_bytes(whole[: len(whole) // 2])  # Keras writes in place: a kill left this
    assert train.main(["--resume", str(cut), "--epochs", "4"]) == 2
    assert f"--resume: {cut / 'last.keras'} cannot be read back" in capsys.readouterr().err


def test_a_save_that_fails_midway_leaves_the_last_good_checkpoint(tmp_path):
    from pathlib import Path

    class DiesWhileSaving:
        def save(self, path):  # as a kill or a full disk leaves it: half a file, then nothing
            Path(path).write_bytes(b"half an epoch")
            raise OSError("no space left on device")

    (tmp_path / "last.keras").write_bytes(b"the last finished epoch")
    (last,) = [
        c for c in train.make_callbacks(tmp_path, False, 1) if getattr(c, "path", None) == tmp_path / "last.keras"
    ]
    last.set_model(DiesWhileSaving())
    with pytest.raises(OSError):
        last.on_epoch_end(1, {})
    assert (tmp_path / "last.keras").read_bytes() == b"the last finished epoch"  # Keras wrote over it in place


def test_an_epoch_logged_but_not_counted_is_forgotten_before_it_runs_again(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,val_accuracy\n0,0.5\n1,0.6\n2,0.7\n")
    train.forget_unfinished_epoch(tmp_path, epochs_done=2)
    assert (tmp_path / "log.csv").read_text() == "epoch,val_accuracy\n0,0.5\n1,0.6\n"
    train.forget_unfinished_epoch(tmp_path, epochs_done=2)
    assert train.logged_val_accuracy(tmp_path) == [0.5, 0.6]


def test_the_card_reproduces_every_option_a_run_changed(tmp_path):
    given = ["--data", "d", "--epochs", "30", "--augment", "sharp", "--lr", "5e-4", "--dropout", "0.2"]
    given += ["--batch-size", "128", "--label-smoothing", "0.2", "--weight-decay", "0.01", "--warmup-epochs", "3"]
    given += ["--width", "40", "--seed", "7", "--name", "x", "--threads", "2", "--xla"]
    hparams = vars(train.parse_args(given))
    command = card._train_command({"hparams": hparams, "dir": tmp_path})
    assert train.parse_args(command.split()[3:]) == train.parse_args([*given[:-3]])  # this session's choices left out
    assert "--threads" not in command and "--arch" not in command  # compact is the default


@pytest.mark.slow
def test_shipped_model_on_fer2013_val_against_both_labelings(fer2013, model_path, tmp_path, capsys):
    """The model card's headline figures: the served form on PublicTest, flip TTA on, against
    FER-2013's labels and against the FER+ majority of ten annotators."""
    report = tmp_path / "report.json"
    args = ["--data", str(fer2013 / "val"), "--model", model_path, "--json", str(report)]
    assert evaluate.main([*args, "--confusion-png", str(tmp_path / "confusion.png")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(report.read_text())
    assert last == f"accuracy: {record['accuracy']:.4f}" and record["count"] == 3589
    assert record["classes"][-1] == "contempt"  # the shipped model has FER+'s eighth class
    # models/README.md reports 0.6135 (FER-2013 labels), 0.8442 (FER+ majority) and 0.9364 (clear non-neutral faces)
    assert record["accuracy"] >= FER2013_LABELS_FLOOR
    assert record["ferplus_majority"]["accuracy"] >= FERPLUS_FLOOR
    assert record["clear_non_neutral"]["accuracy"] >= CLEAR_FLOOR
    share = record["neutral_share"]
    assert share["model"] <= share["ferplus_majority"] + 0.005
    assert record["ferplus_majority"]["ece"] <= 0.05
    assert record["ferplus_majority"]["confident_accuracy"] >= 0.94  # issue 14: answers at >= 80% stay right


@pytest.mark.slow
def test_fer2013_label_ensemble_stays_available(fer2013, capsys):
    """The previous default, trained on FER-2013's labels, for MODEL_PATH=models/fer2013/emotion_int8.tflite."""
    from webapp.config import PROJECT_ROOT

    model = PROJECT_ROOT / "models" / "fer2013" / "emotion_int8.tflite"
    assert evaluate.main(["--data", str(fer2013 / "val"), "--model", str(model), "--confusion-png", "/dev/null"]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1]) >= 0.685


def test_mobilenetv2_option_builds_offline(monkeypatch):
    """The reference recipe: ImageNet weights when reachable, random init when the download fails."""
    import keras
    import numpy as np

    from training.model import make_model

    real = keras.applications.MobileNetV2

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise OSError("no network")
        return real(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    model = make_model("mobilenetv2", weights="imagenet")
    assert model.output_shape == (None, 7)
    assert model(np.zeros((1, 48, 48, 1), np.float32)).shape == (1, 7)
