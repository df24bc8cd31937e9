"""FER+ labels: the votes loader, training targets, the soft-label losses, both labelings in
evaluate, and an 8-class run end to end, on small synthetic data made here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import evaluate, train
from training.data import DataError, FaceDataset, load_split
from training.ferplus import (
    NEUTRAL,
    VOTE_COLUMNS,
    attach_votes,
    clear_majority,
    majority,
    one_annotator_agreement,
    read_votes,
    training_targets,
    usable,
)
from webapp.vision.labels import EMOTIONS, EMOTIONS_WITH_CONTEMPT

HEADER = "file,fer2013_row," + ",".join(VOTE_COLUMNS)
#             neutral happy surprise sad anger disgust fear contempt unknown NF
VOTES = {
    "angry/a.png": (1, 0, 0, 1, 8, 0, 0, 0, 0, 0),  # clear anger
    "angry/tie.png": (4, 0, 0, 0, 4, 0, 0, 0, 2, 0),  # neutral and anger tie
    "happy/unknown.png": (1, 2, 0, 0, 0, 0, 0, 0, 7, 0),  # mostly unknown
    "sad/nf.png": (0, 0, 0, 3, 0, 0, 0, 0, 1, 6),  # mostly not a face
    "neutral/contempt.png": (3, 0, 0, 0, 0, 0, 0, 6, 1, 0),  # contempt majority
    "fear/soft.png": (6, 0, 1, 0, 0, 0, 3, 0, 0, 0),  # neutral majority, FER-2013 says fear
}


def write_votes(path, votes=VOTES, rows=None):
    rows = rows or {key: index for index, key in enumerate(votes)}
    lines = [HEADER] + [f"val/{key},{rows[key]},{','.join(map(str, counts))}" for key, counts in votes.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def dataset(keys=(*VOTES, "happy/missing.png")) -> FaceDataset:
    labels = np.array([EMOTIONS.index(key.split("/")[0]) for key in keys])
    return FaceDataset(np.zeros((len(keys), 48, 48), np.uint8), labels, "synthetic", tuple(keys))


def test_votes_join_by_file_and_missing_rows_are_nan(tmp_path):
    data = attach_votes(dataset(), read_votes(write_votes(tmp_path / "votes.csv")))
    assert data.votes.shape == (7, 10) and data.votes[0, 4] == 8
    assert np.isnan(data.votes[-1]).all()  # FER+ has no row for it
    assert usable(data.votes).tolist() == [True, True, False, False, True, True, False]


def test_majority_leaves_out_ties_unknown_not_a_face_and_missing():
    data = attach_votes(dataset(), read_votes_from(VOTES))
    index = EMOTIONS_WITH_CONTEMPT.index
    assert majority(data.votes).tolist() == [index("angry"), -1, -1, -1, index("contempt"), index("neutral"), -1]
    # without contempt as a class its votes are dropped, and neutral wins that face
    assert majority(data.votes, EMOTIONS)[4] == index("neutral")
    assert clear_majority(data.votes).tolist() == [index("angry"), -1, -1, -1, -1, -1, -1]


def test_one_annotator_agreement_with_the_others_majority_is_the_human_reference():
    data = attach_votes(dataset(), read_votes_from(VOTES))
    agreement = one_annotator_agreement(data.votes)
    # anger: its 8 voters agree with the other nine, the neutral and sad voters do not; contempt:
    # 6 of 9 emotion votes (unknown is not one); the soft face: the 6 neutral voters of 10
    assert agreement[[0, 4, 5]] == pytest.approx([0.8, 6 / 9, 0.6])
    assert np.isnan(agreement[[1, 2, 3, 6]]).all()  # the tie, unknown, not a face, no row
    # two neutral votes and one happy: a neutral voter sees the others tie, which counts half
    votes = np.zeros((1, len(VOTE_COLUMNS)), np.float32)
    votes[0, :2] = 2, 1
    assert one_annotator_agreement(votes) == pytest.approx([1 / 3])
    # without contempt as a class its voters are left out: the contempt face's 3 neutral voters agree
    assert one_annotator_agreement(data.votes, EMOTIONS)[4] == 1.0


def read_votes_from(votes):
    return {key: np.array(counts, np.float32) for key, counts in votes.items()}


def test_targets_for_each_label_mode():
    data = attach_votes(dataset(), read_votes_from(VOTES))
    chosen, targets = training_targets(data, "fer2013", EMOTIONS)
    assert chosen.all() and (targets.argmax(1) == data.labels).all()
    chosen, targets = training_targets(data, "ferplus-majority", EMOTIONS_WITH_CONTEMPT)
    assert chosen.tolist() == [True, False, False, False, True, True, False]
    assert targets.argmax(1).tolist() == [0, 7, 6]
    chosen, targets = training_targets(data, "ferplus-votes", EMOTIONS_WITH_CONTEMPT, fer2013_weight=0.5)
    assert chosen.tolist() == [True, True, False, False, True, True, False]
    assert np.allclose(targets.sum(1), 1)
    # the tie: half neutral/anger votes (unknown dropped), half FER-2013's "angry"
    assert targets[1, EMOTIONS.index("angry")] == pytest.approx(0.75)
    # FER-2013's fear keeps half the target of a face most annotators called neutral
    assert targets[3, EMOTIONS.index("fear")] == pytest.approx(0.5 + 0.5 * 0.3)


def test_votes_without_a_table_and_bad_tables_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="needs FER\\+ votes"):
        training_targets(dataset(), "ferplus-votes", EMOTIONS)
    with pytest.raises(DataError, match="not found"):
        read_votes(tmp_path / "none.csv")
    (tmp_path / "short.csv").write_text("file,fer2013_row,neutral\nval/angry/a.png,0,3\n")
    with pytest.raises(DataError, match="missing column"):
        read_votes(tmp_path / "short.csv")
    bad = dict(VOTES, **{"angry/a.png": (1, 0, 0, 1, "x", 0, 0, 0, 0, 0)})
    with pytest.raises(DataError, match="whole numbers"):
        read_votes(write_votes(tmp_path / "bad.csv", bad))
    rows = {key: "12.0" if key == "angry/tie.png" else index for index, key in enumerate(VOTES)}
    with pytest.raises(DataError, match=r"bad_row\.csv:3: fer2013_row '12\.0' is not a whole number"):
        read_votes(write_votes(tmp_path / "bad_row.csv", rows=rows))


def test_a_table_that_joins_no_image_is_a_clear_error():
    table = read_votes_from({"angry/other.png": VOTES["angry/a.png"]})
    with pytest.raises(DataError, match=r"no image joins .*'angry/a\.png'.*'angry/other\.png'"):
        attach_votes(dataset(), table)
    # a few images without a row are normal (FER+ dropped some): they get NaN
    assert np.isnan(attach_votes(dataset(), read_votes_from(VOTES)).votes[-1]).all()


@pytest.mark.parametrize("table_folder", ["angry", "Angry"])
def test_capitalised_class_folders_join_the_votes(tmp_path, table_folder):
    """Kaggle copies name their folders Train/Angry/; FER+'s table writes train/angry/."""
    import cv2

    (tmp_path / "Train" / "Angry").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "Train" / "Angry" / "a.png"), np.zeros((48, 48), np.uint8))
    votes = tmp_path / "votes.csv"
    votes.write_text(f"{HEADER}\ntrain/{table_folder}/a.png,0,{','.join(map(str, VOTES['angry/a.png']))}\n")
    data = attach_votes(load_split(tmp_path, "train"), read_votes(votes))
    assert data.keys == ("angry/a.png",) and data.votes[0, 4] == 8


def unjoinable_copy(voted_data, tmp_path):
    """`voted_data` with a vote table that names other files."""
    import shutil

    copy = tmp_path / "fer"
    shutil.copytree(voted_data, copy)
    table = copy / "ferplus_votes.csv"
    table.write_text(table.read_text().replace(".png,", ".jpg,"))
    return copy


def test_ferplus_labels_that_join_no_image_stop_train_calibrate_and_evaluate(voted_data, tmp_path, capsys):
    from training import calibrate

    data = str(unjoinable_copy(voted_data, tmp_path))
    runs = tmp_path / "runs"
    argv = ["--data", data, "--labels", "ferplus-votes", "--runs-dir", str(runs), "--name", "x"]
    assert train.main(argv) == 2
    assert "no image joins a row of the FER+ votes" in capsys.readouterr().err and not runs.exists()
    model = tmp_path / "m.keras"
    model.write_bytes(b"never loaded: the data is checked first")
    assert calibrate.main(["--model", str(model), "--data", data, "--out", str(tmp_path / "c.keras")]) == 2
    assert "no image joins" in capsys.readouterr().err
    assert evaluate.main(["--model", str(model), "--data", data]) == 2
    assert "no image joins" in capsys.readouterr().err


def test_fer2013_csv_rows_join_by_row_number(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        f"{EMOTIONS.index(key.split('/')[0])},{' '.join(map(str, rng.integers(0, 256, 2304)))},PublicTest"
        for key in VOTES
    ]
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    write_votes(tmp_path / "ferplus_votes.csv")
    data = attach_votes(load_split(tmp_path / "fer2013.csv", "val"), read_votes(tmp_path / "ferplus_votes.csv"))
    assert data.keys[0] == "row:0" and data.votes[0, 4] == 8 and not np.isnan(data.votes).any()


def test_soft_label_losses_on_a_toy_batch():
    import keras

    from training.losses import LogitAdjustedCrossEntropy

    targets = np.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]], np.float32)
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], np.float32)
    by_hand = -(targets * np.log(probabilities)).sum(1).mean()
    plain = keras.losses.CategoricalCrossentropy()(targets, probabilities)
    assert float(plain) == pytest.approx(by_hand, rel=1e-5)
    prior = np.array([0.5, 0.3, 0.2], np.float32)
    assert float(LogitAdjustedCrossEntropy(prior, tau=0.0)(targets, probabilities)) == pytest.approx(by_hand, rel=1e-5)
    adjusted = np.log(probabilities) + np.log(prior)
    adjusted = np.exp(adjusted) / np.exp(adjusted).sum(1, keepdims=True)
    expected = -(targets * np.log(adjusted)).sum(1).mean()
    assert float(LogitAdjustedCrossEntropy(prior, tau=1.0)(targets, probabilities)) == pytest.approx(expected, rel=1e-5)


def test_mixup_blends_images_targets_and_weights_alike():
    import tensorflow as tf

    from training.augment import add_mixup

    faces = np.stack([np.full((48, 48, 1), i, np.float32) for i in range(8)])
    targets, weights = np.eye(8, dtype=np.float32), np.arange(8, dtype=np.float32)
    batch = add_mixup(tf.data.Dataset.from_tensors((faces, targets, weights)), 0.4, seed=3)
    x, y, w = (tensor.numpy() for tensor in next(iter(batch)))
    assert np.allclose(y.sum(1), 1) and (y.max(1) >= 0.5).all()  # each face keeps most of its own target
    own = y[np.arange(8), np.arange(8)]
    partner = y.argsort(1)[:, -2]
    mixed = own < 1
    assert np.allclose(x[:, 0, 0, 0][mixed], (own * np.arange(8) + (1 - own) * partner)[mixed], atol=1e-4)
    assert np.allclose(w, x[:, 0, 0, 0], atol=1e-4)  # the weights blend with the same shares


def test_mixup_draws_new_blends_every_epoch_and_the_same_ones_for_a_seed():
    import tensorflow as tf

    from training.augment import add_mixup

    faces = np.arange(64, dtype=np.float32).reshape(64, 1, 1, 1)
    batches = tf.data.Dataset.from_tensor_slices((faces, np.eye(64, dtype=np.float32))).batch(16)

    def epochs(dataset, count):
        return [np.concatenate([x.numpy().ravel() for x, _ in dataset]) for _ in range(count)]

    first, second = epochs(add_mixup(batches, 0.4, seed=3), 2)
    assert not np.allclose(first, second)  # a seeded op in a map would repeat epoch 1's blends
    (again,) = epochs(add_mixup(batches, 0.4, seed=3), 1)
    assert np.allclose(first, again)  # a run started again from its seed blends as it did


def test_erasing_hides_one_small_rectangle_of_some_faces_and_only_while_training():
    from training.augment import ERASE_SCALE, make_eraser

    faces = np.full((400, 48, 48, 1), 2.0, np.float32)  # outside the noise's [0, 1], so every erased pixel shows
    erased = np.asarray(make_eraser(0.5, seed=3)(faces, training=True)) != 2.0
    share = erased.mean((1, 2, 3))
    assert 0.4 <= (share > 0).mean() <= 0.6  # half the faces (a bare Keras factor of 0.5 erases a quarter)
    assert share.max() <= ERASE_SCALE[1] + 0.01
    for mask in erased[share > 0, :, :, 0]:  # one rectangle: its bounding box is all erased
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
    assert (np.asarray(make_eraser(1.0, seed=3)(faces, training=False)) == 2.0).all()


def test_score_all_reports_both_labelings():
    data = attach_votes(dataset(), read_votes_from(VOTES))
    probabilities = np.full((7, 8), 0.01, np.float32)
    calls = ["angry", "neutral", "happy", "sad", "contempt", "fear", "happy"]
    for row, name in enumerate(calls):
        probabilities[row, EMOTIONS_WITH_CONTEMPT.index(name)] = 0.93
    result = evaluate.score_all(data, probabilities)
    assert result.labels.count == 7 and result.labels.accuracy == pytest.approx(5 / 7)  # FER-2013 labels
    assert result.ferplus.count == 3 and result.ferplus.accuracy == pytest.approx(2 / 3)  # fear is neutral to FER+
    assert result.ferplus.classes == EMOTIONS_WITH_CONTEMPT and result.ferplus.ece is not None
    assert result.clear_non_neutral.count == 1 and result.clear_non_neutral.accuracy == 1.0
    assert result.neutral_share == {"model": 0.0, "ferplus_majority": pytest.approx(0.3333, abs=1e-4)}
    assert result.one_annotator_agreement == pytest.approx((0.8 + 6 / 9 + 0.6) / 3, abs=1e-4)
    # anger agrees; contempt (FER-2013 neutral) and neutral (FER-2013 fear) differ: one answer takes each side
    assert result.both_labelings == evaluate.BothLabelings(
        faces=3, agree_share=0.3333, right_where_they_agree=1.0, differ_says_majority=0.5, differ_says_label=0.5
    )
    # every answer here is given at 93%: all count as confident
    assert result.ferplus.confident_share == 1.0 and result.ferplus.confident_accuracy == pytest.approx(2 / 3, abs=1e-4)


def test_confident_answers_are_counted_apart():
    from training.metrics import score

    labels, predictions = np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])
    probabilities = np.full((4, 7), 0.02)
    probabilities[np.arange(4), predictions] = [0.9, 0.85, 0.5, 0.95]
    report = score(labels, predictions, probabilities)
    assert report.confident_share == 0.75 and report.confident_accuracy == pytest.approx(2 / 3, abs=1e-4)
    assert score(labels, predictions).confident_share is None
    assert score(labels, predictions, np.full((4, 7), 1 / 7)).confident_accuracy is None  # no confident answer


def test_an_8_class_run_on_votes_trains_resumes_and_is_scored_on_both_labelings(voted_data, tmp_path, capsys):
    from webapp.vision.layers import load_model, model_classes

    common = ["--width", "8", "--batch-size", "8", "--runs-dir", str(tmp_path), "--name", "votes"]
    options = ["--labels", "ferplus-votes", "--classes", "8", "--fer2013-weight", "0.3", "--logit-adjust", "0.5"]
    options += ["--mixup", "0.4", "--ema", "0.9", "--erase", "0.5"]
    assert train.main(["--data", str(voted_data), "--epochs", "1", *options, *common]) == 0
    assert train.main(["--resume", str(tmp_path / "votes"), "--epochs", "2"]) == 0
    model = load_model(tmp_path / "votes" / "last.keras")
    assert model_classes(model) == EMOTIONS_WITH_CONTEMPT and model.outputs[0].shape[-1] == 8
    hparams = json.loads((tmp_path / "votes" / "hparams.json").read_text())
    assert hparams["labels"] == "ferplus-votes" and hparams["classes"] == 8 and hparams["epochs"] == 2
    assert hparams["ema"] == 0.9 and hparams["erase"] == 0.5

    capsys.readouterr()
    report = tmp_path / "eval.json"
    model_file = str(tmp_path / "votes" / "last.keras")
    assert evaluate.main(["--data", str(voted_data / "val"), "--model", model_file, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "== against the folder's labels" in out and "== against the FER+ majority" in out
    assert out.strip().splitlines()[-1].startswith("accuracy: ")
    record = json.loads(report.read_text())
    assert record["count"] == 14 and len(record["ferplus_majority"]["confusion"]) == 8
    assert "contempt" in record["ferplus_majority"]["per_class_accuracy"]
    assert 0 <= record["ece"] <= 1 and set(record["neutral_share"]) == {"model", "ferplus_majority"}
    assert 0 < record["ferplus_one_annotator_agreement"] <= 1 and "(human reference)" in out
    assert report.with_name("eval-ferplus.png").stat().st_size > 1000

    # a folder holding only some of the model's classes, contempt among them, and no votes
    import shutil

    subset = tmp_path / "subset"
    shutil.copytree(voted_data / "val" / "happy", subset / "happy")
    shutil.copytree(voted_data / "val" / "sad", subset / "contempt")
    assert evaluate.main(["--data", str(subset), "--model", model_file, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "FER+ majority" not in out and out.strip().splitlines()[-1].startswith("accuracy: ")
    record = json.loads(report.read_text())
    assert record["count"] == 4 and set(record["per_class_accuracy"]) == {"happy", "contempt"}


def test_contempt_needs_ferplus_labels(voted_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--data", str(voted_data), "--classes", "8", "--runs-dir", str(tmp_path)])
    assert "needs FER+ labels" in capsys.readouterr().err


def test_calibration_bakes_one_temperature_into_the_softmax_heads(voted_data, tmp_path, capsys):
    from training import calibrate, ensemble
    from webapp.vision.layers import load_model, model_classes

    common = [
        "--data",
        str(voted_data),
        "--epochs",
        "1",
        "--width",
        "8",
        "--batch-size",
        "8",
        "--runs-dir",
        str(tmp_path),
    ]
    for seed in ("1", "2"):
        assert train.main([*common, "--labels", "ferplus-votes", "--classes", "8", "--seed", seed, "--name", seed]) == 0
    members = [str(tmp_path / seed / "last.keras") for seed in ("1", "2")]
    assert ensemble.main(["--members", *members, "--out", str(tmp_path / "ensemble.keras")]) == 0
    model, calibrated = str(tmp_path / "ensemble.keras"), str(tmp_path / "cal.keras")
    capsys.readouterr()
    assert (
        calibrate.main(
            [
                "--model",
                model,
                "--data",
                str(voted_data),
                "--out",
                calibrated,
                "--match-neutral",
                "--json",
                str(tmp_path / "cal.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    temperature = float(out.split("temperature ")[1].split()[0])
    shift = float(out.split("neutral logit lowered by ")[1].split(":")[0])
    assert "against the FER+ majority" in out and temperature in calibrate.TEMPERATURES
    record = json.loads((tmp_path / "cal.json").read_text())
    assert record["temperature"] == temperature and record["neutral_shift"] == shift

    # a 7-class model is calibrated against the majority over its own classes (no contempt)
    seven = ["--labels", "ferplus-votes", "--classes", "7", "--name", "seven"]
    assert train.main([*common, *seven]) == 0
    out7 = str(tmp_path / "seven.keras")
    assert (
        calibrate.main(["--model", str(tmp_path / "seven" / "last.keras"), "--data", str(voted_data), "--out", out7])
        == 0
    )

    faces = np.random.default_rng(3).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    before = calibrate.head_probabilities(load_model(tmp_path / "ensemble.keras"), faces)
    after = calibrate.head_probabilities(load_model(tmp_path / "cal.keras"), faces)
    assert np.allclose(after.mean((0, 1)), calibrate.tempered(before, temperature, shift), atol=1e-5)
    assert (after.mean((0, 1)).argmax(1) >= 0).all() and np.allclose(after.sum(-1), 1, atol=1e-5)

    # fitted for a model served without flip TTA: the faces alone, and the record says so
    assert calibrate.head_probabilities(load_model(tmp_path / "cal.keras"), faces, flip_tta=False).shape[1] == 1
    argv = ["--model", str(tmp_path / "ensemble.keras"), "--data", str(voted_data), "--out", str(tmp_path / "x.keras")]
    assert calibrate.main([*argv, "--flip-tta", "off", "--json", str(tmp_path / "off.json")]) == 0
    assert "flip TTA off: temperature" in capsys.readouterr().out
    off = json.loads((tmp_path / "off.json").read_text())
    assert off["flip_tta"] is False and record["flip_tta"] is True
    val = evaluate.with_votes(load_split(voted_data, "val"), str(voted_data), None)
    pair = load_model(tmp_path / "ensemble.keras")
    labels, _ = calibrate.calibration_labels(val, model_classes(pair))
    known = labels >= 0
    faces_alone = calibrate.head_probabilities(pair, val.images[known], flip_tta=False)
    assert off["temperature"] == calibrate.fit_temperature(faces_alone, labels[known])
    assert off["ece_before"] == round(calibrate.ece(faces_alone, labels[known], 1.0), 4)


def neutral_leading_heads(faces: int, margins: np.ndarray) -> np.ndarray:
    """Heads (1 head, 2 views, faces, 8 classes) in which neutral leads every face by its margin (log-odds)."""
    logits = np.zeros((faces, 8))
    logits[:, 0] = 1.0
    logits[:, NEUTRAL] = 1.0 + margins
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return np.stack([[probabilities, probabilities]])


def test_neutral_share_holds_neutral_calls_to_the_share_asked_for(
    voted_data, untrained_ferplus_models, tmp_path, capsys, monkeypatch
):
    from training import calibrate, choose

    val = evaluate.with_votes(load_split(voted_data, "val"), str(voted_data), None)
    labels, _ = calibrate.calibration_labels(val, EMOTIONS_WITH_CONTEMPT)
    known = int((labels >= 0).sum())
    majority_share = float((labels[labels >= 0] == NEUTRAL).mean())
    assert known == 14 and 0 < majority_share < 0.2  # the fixture: 1 of 14 faces
    # spaced so that each face is freed by its own step of the shift at any fitted temperature
    heads = neutral_leading_heads(known, np.linspace(0.05, 0.57, known))

    # calibrate: the share asked for replaces the majority's, is recorded, and is reproduced exactly
    model = untrained_ferplus_models(1)[0]
    monkeypatch.setattr(calibrate, "head_probabilities", lambda model, images, flip_tta=True: heads)
    argv = ["--model", model, "--data", str(voted_data), "--out", str(tmp_path / "c.keras")]
    fitted = {}
    for name, extra in (("majority", ["--match-neutral"]), ("0.3", ["--neutral-share", "0.3"])):
        assert calibrate.main([*argv, *extra, "--json", str(tmp_path / f"{name}.json")]) == 0
        fitted[name] = json.loads((tmp_path / f"{name}.json").read_text())
        share = majority_share if name == "majority" else 0.3
        record = fitted[name]
        called = calibrate.tempered(heads, record["temperature"], record["neutral_shift"]).argmax(1) == NEUTRAL
        assert called.mean() <= share
        assert record["neutral_shift"] == calibrate.fit_neutral_shift(heads, record["temperature"], share)
    assert "neutral_share_target" not in fitted["majority"] and fitted["0.3"]["neutral_share_target"] == 0.3
    assert 0 < fitted["0.3"]["neutral_shift"] < fitted["majority"]["neutral_shift"]
    out, err = capsys.readouterr()
    assert "held to 0.3000" in out and "warning" not in err

    # a share no tried shift reaches is said so
    monkeypatch.setattr(
        calibrate,
        "head_probabilities",
        lambda model, images, flip_tta=True: neutral_leading_heads(known, np.full(known, 50.0)),
    )
    assert calibrate.main([*argv, "--neutral-share", "0.05"]) == 0
    assert "warning: even lowered by 2.00" in capsys.readouterr().err
    for share in ("0", "1.5", "-0.2", "some"):
        with pytest.raises(SystemExit):
            calibrate.main([*argv, "--neutral-share", share])

    # choose: the same share, with or without match_neutral; all faces allowed means no shift
    held = choose.calibrated(("m",), heads, val, labels, False, neutral_share=0.3)
    by_majority = choose.calibrated(("m",), heads, val, labels, True)
    assert 0 < held.neutral_shift < by_majority.neutral_shift
    # each face is freed by its own step of the shift, so each share is met exactly: 4 of 14 faces and 1 of 14
    assert held.evaluation.neutral_share["model"] == pytest.approx(4 / 14, abs=1e-4)
    assert by_majority.evaluation.neutral_share["model"] == pytest.approx(1 / 14, abs=1e-4)
    assert choose.calibrated(("m",), heads, val, labels, True, neutral_share=1.0).neutral_shift == 0.0


def test_baseline_is_the_member_alone_as_served_and_pairs_count_each_side():
    from training.choose import Candidate, baseline_of, paired
    from training.metrics import mcnemar_p

    def candidate(members, flip, correct):
        return Candidate(members, len(members), flip, 1.0, 0.0, None, np.array(correct, bool))

    rows = [
        candidate(("a",), False, [1, 1, 0, 0, 1]),
        candidate(("a",), True, [1, 0, 1, 0, 1]),
        candidate(("a", "b"), True, [0, 1, 1, 1, 1]),
    ]
    baseline = baseline_of(rows, "a")
    assert baseline is rows[1]  # the flip row, as served, over the one without
    assert baseline_of(rows[:1], "a") is rows[0]  # scored only without the mirror (--tta none)
    pair = paired(rows[2], baseline)
    assert (pair.only_this_right, pair.only_baseline_right) == (2, 1) and pair.p == mcnemar_p(2, 1)
    assert paired(baseline, baseline).to_dict() == {"only_this_right": 0, "only_baseline_right": 0, "p": 1.0}
    assert paired(rows[0], baseline).to_dict() == {"only_this_right": 1, "only_baseline_right": 1, "p": 1.0}


def test_mcnemar_p_is_the_exact_two_sided_binomial():
    from training.metrics import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)
    assert mcnemar_p(74, 62) == pytest.approx(0.346, abs=0.001)


def test_blend_mixes_labels_and_teacher():
    from training.distill import blend

    targets = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    teacher = np.array([[0.0, 1.0], [0.9, 0.1]], np.float32)
    np.testing.assert_allclose(blend(targets, teacher, 0.25), [[0.75, 0.25], [0.6, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(blend(targets, teacher, 0.0), targets)
    with pytest.raises(ValueError, match="teacher_weight"):
        blend(targets, teacher, 1.5)


def test_a_student_distils_its_teacher_whose_columns_are_matched_by_name(voted_data, tmp_path, capsys):
    from training.distill import teacher_probabilities
    from training.model import make_model
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT

    # a teacher whose file lists the 8 classes in another order
    reordered = tuple(reversed(EMOTIONS_WITH_CONTEMPT))
    teacher = make_model(width=8, classes=reordered)
    teacher.save(tmp_path / "teacher.keras")
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probabilities = teacher_probabilities(str(tmp_path / "teacher.keras"), faces, EMOTIONS_WITH_CONTEMPT)
    from webapp.vision.classifier import EmotionClassifier

    raw = EmotionClassifier(tmp_path / "teacher.keras").predict_probabilities(faces)
    np.testing.assert_allclose(probabilities, raw[:, ::-1], atol=1e-3)  # kept as float16

    common = ["--data", str(voted_data), "--epochs", "1", "--width", "8", "--batch-size", "8"]
    common += ["--runs-dir", str(tmp_path), "--labels", "ferplus-votes", "--classes", "8"]
    teacher_file = str(tmp_path / "teacher.keras")
    assert train.main([*common, "--teacher", teacher_file, "--teacher-weight", "0.5", "--name", "student"]) == 0
    assert "teacher" in capsys.readouterr().out
    assert json.loads((tmp_path / "student" / "hparams.json").read_text())["teacher"] == teacher_file
    (tmp_path / "teacher.keras").unlink()  # the run keeps its teacher's probabilities: resume needs no teacher
    assert train.main(["--resume", str(tmp_path / "student"), "--epochs", "2"]) == 0

    # a student trained again from the saved probabilities sees the same targets
    from training.distill import load_teacher

    saved = tmp_path / "student" / "teacher.npz"
    train_faces = load_split(str(voted_data), "train")
    kept = load_teacher(saved, train_faces.keys[:5], EMOTIONS_WITH_CONTEMPT)
    assert kept.shape == (5, 8) and np.allclose(kept.sum(1), 1, atol=1e-2)
    assert train.main([*common, "--teacher", str(saved), "--name", "again"]) == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "again" / "teacher.npz")["probabilities"], np.load(saved)["probabilities"]
    )
    with pytest.raises(ValueError, match="no probabilities for 1 images"):
        load_teacher(saved, ["angry/absent.png"], EMOTIONS_WITH_CONTEMPT)
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match="not a teacher file"):
        load_teacher(tmp_path / "other.npz", ["angry/0.png"], EMOTIONS_WITH_CONTEMPT)
    teacher.save(tmp_path / "teacher.keras")

    # a 7-class teacher cannot teach an 8-class student
    make_model(width=8).save(tmp_path / "seven.keras")
    assert train.main([*common, "--teacher", str(tmp_path / "seven.keras"), "--name", "refused"]) == 2
    assert "the student is trained on" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main([*common, "--teacher", teacher_file, "--teacher-weight", "2"])


def test_choose_ranks_every_calibrated_combination_on_val(voted_data, untrained_ferplus_models, tmp_path, capsys):
    from training import choose
    from training.calibrate import TEMPERATURES

    members = untrained_ferplus_models(3)
    report = tmp_path / "choose.json"
    args = ["--members", *members, "--data", str(voted_data), "--max-members", "2", "--match-neutral"]
    assert choose.main([*args, "--json", str(report)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split()[:3] == ["FER+", "FER2013", "clear"] and len(table) == 1 + 6  # 3 singles, 3 pairs
    rows = json.loads(report.read_text())
    ranked = [row["ferplus_majority"]["accuracy"] for row in rows]
    assert ranked == sorted(ranked, reverse=True) and {len(row["members"]) for row in rows} == {1, 2}
    assert all(row["temperature"] in TEMPERATURES and row["neutral_shift"] >= 0 for row in rows)
    assert all(
        row["neutral_share"]["model"] <= row["neutral_share"]["ferplus_majority"]
        for row in rows
        if row["neutral_shift"] < 2
    )

    assert all(row["flip_tta"] and row["passes"] == 2 * len(row["members"]) for row in rows)

    # --tta both adds each combination without the mirror image, at half the passes
    assert choose.main([*args, "--tta", "both", "--json", str(report)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split()[-3:] == ["TTA", "passes", "members"] and len(table) == 1 + 12
    rows = json.loads(report.read_text())
    forms = {(tuple(row["members"]), row["flip_tta"]): row["passes"] for row in rows}
    assert len(forms) == 12 and all(passes == len(m) * (2 if flip else 1) for (m, flip), passes in forms.items())
    with pytest.raises(SystemExit):
        choose.main([*args, "--tta", "sideways"])

    # without the flip, the mirror image's view plays no part; an ensemble member counts its networks
    from training.calibrate import calibration_labels
    from training.ensemble import make_ensemble
    from training.evaluate import with_votes
    from training.model import make_model
    from webapp.vision.layers import load_model

    val = with_votes(load_split(str(voted_data), "val"), str(voted_data), None)
    labels, _ = calibration_labels(val, EMOTIONS_WITH_CONTEMPT)
    heads = choose.member_heads(members[0], val.images)
    scrambled = heads.copy()
    scrambled[:, 1] = np.random.default_rng(0).dirichlet(np.ones(8), size=scrambled.shape[2])
    plain, other = (choose.calibrated(("m",), h, val, labels, True, flip_tta=False) for h in (heads, scrambled))
    assert plain.evaluation.to_dict() == other.evaluation.to_dict() and plain.temperature == other.temperature
    assert choose.calibrated(("m",), scrambled, val, labels, True).evaluation.to_dict() != plain.evaluation.to_dict()
    make_ensemble([load_model(path) for path in members[:2]]).save(tmp_path / "pair.keras")
    pair = choose.member_heads(str(tmp_path / "pair.keras"), val.images)
    assert choose.calibrated(("pair",), pair, val, labels, True).passes == 4

    # --neutral-share alone implies --match-neutral; --baseline compares every row with one member, face by face
    args = ["--members", *members, "--data", str(voted_data), "--neutral-share", "0.3", "--baseline", members[1]]
    assert choose.main([*args, "--json", str(report)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split()[-4:] == ["+", "-", "p", "members"]
    rows = json.loads(report.read_text())
    assert all(row["neutral_share_target"] == 0.3 for row in rows)
    assert all(row["neutral_share"]["model"] <= 0.3 or row["neutral_shift"] == 2.0 for row in rows)
    alone = next(row for row in rows if row["members"] == [members[1]] and row["flip_tta"])
    assert alone["vs_baseline"] == {"only_this_right": 0, "only_baseline_right": 0, "p": 1.0}
    for row in rows:
        faces_right = round(row["ferplus_majority"]["accuracy"] * row["ferplus_majority"]["count"])
        baseline_right = round(alone["ferplus_majority"]["accuracy"] * alone["ferplus_majority"]["count"])
        versus = row["vs_baseline"]
        assert faces_right - baseline_right == versus["only_this_right"] - versus["only_baseline_right"]
    assert choose.main([*args[:-1], str(tmp_path / "other.keras")]) == 2
    assert "--baseline must be one of --members" in capsys.readouterr().err

    assert choose.main(["--members", str(tmp_path / "absent.keras"), "--data", str(voted_data)]) == 2
    make_model(width=8).save(tmp_path / "seven.keras")
    assert choose.main(["--members", members[0], str(tmp_path / "seven.keras"), "--data", str(voted_data)]) == 2
    assert "different numbers of classes" in capsys.readouterr().err
