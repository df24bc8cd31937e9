"""Flip TTA travels with the model: `training.export --flip-tta off` records it in the file, and the
classifier, the app (/healthz) and the evaluation follow the record unless FLIP_TTA says otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from training.export import with_metadata
from webapp.vision.classifier import EmotionClassifier
from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT
from webapp.vision.litert import CLASSES_METADATA, FLIP_TTA_METADATA, read_flip_tta


def recorded(plain_eight, tmp_path, flip_tta) -> str:
    path = tmp_path / f"flip-{flip_tta}.tflite"
    entries = {CLASSES_METADATA: list(EMOTIONS_WITH_CONTEMPT), FLIP_TTA_METADATA: flip_tta}
    path.write_bytes(with_metadata(plain_eight.read_bytes(), entries))
    return str(path)


def test_export_records_the_choice(fer_plus_models, tmp_path):
    import json

    from training import export

    for form in ("float32", "int8"):  # exported by the fixture with the default, --flip-tta on
        assert read_flip_tta(fer_plus_models / f"emotion_{form}.tflite") is True
    argv = ["--model", str(fer_plus_models / "model.keras"), "--out", str(tmp_path), "--forms", "float32"]
    assert export.main([*argv, "--latency-repeats", "1", "--flip-tta", "off"]) == 0
    without = tmp_path / "emotion_float32.tflite"
    assert read_flip_tta(without) is False
    assert json.loads((tmp_path / "export.json").read_text())["flip_tta"] is False
    classifier = EmotionClassifier(without)
    assert classifier.flip_tta is False and classifier.classes == EMOTIONS_WITH_CONTEMPT


def test_the_classifier_follows_the_record_unless_told(plain_eight, tmp_path, fer_plus_models):
    faces = np.random.default_rng(2).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    off = recorded(plain_eight, tmp_path, False)
    assert read_flip_tta(plain_eight) is None and EmotionClassifier(plain_eight).flip_tta is True
    assert EmotionClassifier(recorded(plain_eight, tmp_path, True)).flip_tta is True
    assert EmotionClassifier(off).flip_tta is False
    assert EmotionClassifier(off, flip_tta=True).flip_tta is True
    assert EmotionClassifier(plain_eight, flip_tta=False).flip_tta is False
    assert EmotionClassifier(fer_plus_models / "model.keras").flip_tta is True  # .keras files carry no record
    # the record changes how the model is run, not the model: same answers as the plain file told the same
    np.testing.assert_array_equal(
        EmotionClassifier(off, threads=1).predict_probabilities(faces),
        EmotionClassifier(plain_eight, flip_tta=False, threads=1).predict_probabilities(faces),
    )


def test_a_file_that_is_not_tflite_is_refused_clearly(tmp_path):
    junk = tmp_path / "model.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="not a TFLite model file"):
        read_flip_tta(junk)


def test_a_record_that_is_not_true_or_false_is_refused(plain_eight, tmp_path):
    path = tmp_path / "odd.tflite"
    path.write_bytes(with_metadata(plain_eight.read_bytes(), {FLIP_TTA_METADATA: "yes"}))
    with pytest.raises(ValueError, match="not true or false"):
        EmotionClassifier(path)
    path.write_bytes(with_metadata(plain_eight.read_bytes(), {FLIP_TTA_METADATA: False}))
    again = with_metadata(path.read_bytes(), {FLIP_TTA_METADATA: True})  # replaced, not duplicated
    assert again.count(FLIP_TTA_METADATA.encode()) == 1
    path.write_bytes(again)
    assert read_flip_tta(path) is True


@pytest.mark.parametrize(
    ("env", "record", "expected"),
    [(None, False, False), ("auto", False, False), ("1", False, True), (None, None, True), ("0", None, False)],
)
def test_the_app_serves_as_recorded_and_flip_tta_overrides(plain_eight, tmp_path, monkeypatch, env, record, expected):
    from webapp import create_app

    if env is None:
        monkeypatch.delenv("FLIP_TTA", raising=False)
    else:
        monkeypatch.setenv("FLIP_TTA", env)
    model = str(plain_eight) if record is None else recorded(plain_eight, tmp_path, record)
    app = create_app({"TESTING": True, "ASYNC_MODE": "threading", "MODEL_PATH": model})
    models = app.test_client().get("/healthz").json["models"]
    assert models and all(model["flip_tta"] is expected for model in models.values())


def test_a_flip_tta_setting_that_is_not_a_switch_is_refused(monkeypatch):
    from webapp.config import from_env

    monkeypatch.setenv("FLIP_TTA", "ture")
    with pytest.raises(ValueError, match="FLIP_TTA must be 1, true, yes, on, 0"):
        from_env()


def test_evaluate_reports_the_tta_it_ran(plain_eight, tmp_path, voted_data):
    import json

    from training.evaluate import main as evaluate

    report = tmp_path / "report.json"
    argv = ["--data", str(voted_data / "val"), "--model", recorded(plain_eight, tmp_path, False), "--json", str(report)]
    assert evaluate(argv) == 0
    assert json.loads(report.read_text())["flip_tta"] is False
    assert evaluate([*argv, "--flip-tta", "on"]) == 0
    assert json.loads(report.read_text())["flip_tta"] is True
    assert evaluate([*argv[:2], "--model", str(plain_eight), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["flip_tta"] is True
    assert evaluate([*argv[:2], "--model", str(plain_eight), "--json", str(report), "--no-tta"]) == 0
    assert json.loads(report.read_text())["flip_tta"] is False
    with pytest.raises(SystemExit):  # contradictory options are refused, not silently ranked
        evaluate([*argv, "--no-tta", "--flip-tta", "on"])
