"""The class list travels with the model: 7 FER-2013 classes, or 8 with FER+'s contempt, from the model file
(TFLite metadata or the Keras `EmotionClasses` layer) to the API, the Socket.IO ack, the pages and /healthz."""

from __future__ import annotations

import csv
import io
import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from tests.harness import jpeg_bytes, plain_tflite, tiny_emotion_model, video_bytes
from training.export import with_metadata
from webapp.vision.classifier import EmotionClassifier
from webapp.vision.labels import EMOTIONS, EMOTIONS_WITH_CONTEMPT
from webapp.vision.litert import CLASSES_METADATA, read_classes


def named_classes(tflite: bytes, classes) -> bytes:
    return with_metadata(tflite, {CLASSES_METADATA: list(classes)})


# Flask's JSON sorts object keys: compare the keys, not their order
EIGHT = sorted(EMOTIONS_WITH_CONTEMPT)


def page_emotions(html: str) -> list[str]:
    return json.loads(unescape(re.search(r"data-emotions='([^']*)'", html).group(1)))


def test_export_writes_the_class_list_into_every_form(fer_plus_models):
    from webapp.vision.layers import load_model, model_classes

    assert model_classes(load_model(fer_plus_models / "model.keras")) == EMOTIONS_WITH_CONTEMPT
    for form in ("float32", "int8"):
        path = fer_plus_models / f"emotion_{form}.tflite"
        assert read_classes(path) == EMOTIONS_WITH_CONTEMPT
        assert EmotionClassifier(path).classes == EMOTIONS_WITH_CONTEMPT
    keras_classifier = EmotionClassifier(fer_plus_models / "model.keras")
    assert keras_classifier.classes == EMOTIONS_WITH_CONTEMPT
    emotion = keras_classifier.classify(np.zeros((1, 48, 48), np.uint8))[0]
    assert list(emotion.probabilities) == list(EMOTIONS_WITH_CONTEMPT)


def test_the_class_list_changes_no_answer(plain_eight, tmp_path):
    named = tmp_path / "named8.tflite"
    named.write_bytes(named_classes(plain_eight.read_bytes(), EMOTIONS_WITH_CONTEMPT))
    assert read_classes(plain_eight) is None and read_classes(named) == EMOTIONS_WITH_CONTEMPT
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    before, after = (EmotionClassifier(path, threads=1).predict_probabilities(faces) for path in (plain_eight, named))
    np.testing.assert_array_equal(before, after)
    # written twice, the list is replaced, not duplicated
    again = named_classes(named.read_bytes(), EMOTIONS_WITH_CONTEMPT)
    assert again.count(b'"contempt"') == 1


def test_files_without_a_class_list_are_named_by_their_outputs(plain_eight, tmp_path, model_path):
    assert EmotionClassifier(plain_eight).classes == EMOTIONS_WITH_CONTEMPT
    old = tiny_emotion_model(7)  # no EmotionClasses layer: a model made before it
    old.save(tmp_path / "old.keras")
    (tmp_path / "old.tflite").write_bytes(plain_tflite(old))
    for path in (tmp_path / "old.keras", tmp_path / "old.tflite"):
        classifier = EmotionClassifier(path)
        assert classifier.classes == EMOTIONS
        assert list(classifier.classify(np.zeros((1, 48, 48), np.uint8))[0].probabilities) == list(EMOTIONS)
    previous = Path(model_path).parent / "fer2013" / "emotion_int8.tflite"  # shipped before class lists existed
    assert read_classes(previous) is None and EmotionClassifier(previous).classes == EMOTIONS


def test_a_class_list_that_does_not_fit_the_outputs_is_refused(plain_eight, tmp_path):
    path = tmp_path / "wrong.tflite"
    path.write_bytes(named_classes(plain_eight.read_bytes(), EMOTIONS))
    with pytest.raises(ValueError, match="8 outputs, but the file names the classes"):
        EmotionClassifier(path)
    path.write_bytes(named_classes(plain_eight.read_bytes(), range(8)))
    with pytest.raises(ValueError, match="not a JSON list of class names"):
        read_classes(path)


@pytest.mark.parametrize("odd", ["sad<img src=x>", "fear, panic", "Happy", "", "x" * 33])
def test_class_names_that_pages_and_csv_files_cannot_carry_are_refused(plain_eight, tmp_path, odd):
    path = tmp_path / "odd.tflite"
    path.write_bytes(named_classes(plain_eight.read_bytes(), (*EMOTIONS_WITH_CONTEMPT[:7], odd)))
    with pytest.raises(ValueError, match="class names must be"):
        EmotionClassifier(path)


def test_the_api_answers_with_the_models_eight_classes(fer_plus_app, grace_jpeg):
    client = fer_plus_app.test_client()
    for query in ("", "?faces=whole"):
        reply = client.post(f"/api/v1/analyze{query}", data=grace_jpeg, content_type="image/jpeg")
        assert reply.status_code == 200, reply.json
        (face,) = reply.json["faces"]
        assert sorted(face["probabilities"]) == EIGHT
        assert sum(face["probabilities"].values()) == pytest.approx(1, abs=2e-3)
        assert face["emotion"] in EMOTIONS_WITH_CONTEMPT


def test_the_socketio_ack_carries_eight_probabilities(fer_plus_app, webcam_frame):
    from webapp import socketio_of

    client = socketio_of(fer_plus_app).test_client(fer_plus_app)
    try:
        for _ in range(2):  # the second reply is smoothed by the tracker
            ack = client.emit("frame", jpeg_bytes(webcam_frame), callback=True)
            assert "error" not in ack, ack
            (face,) = ack["faces"]
            assert face["id"] == 1 and sorted(face["probabilities"]) == EIGHT
    finally:
        client.disconnect()


def test_healthz_and_the_pages_list_the_eight_classes(fer_plus_app):
    client = fer_plus_app.test_client()
    health = client.get("/healthz").json
    assert health["emotions"] == list(EMOTIONS_WITH_CONTEMPT)
    assert all(model["classes"] == list(EMOTIONS_WITH_CONTEMPT) for model in health["models"].values())
    for path in ("/", "/upload", "/video"):
        html = client.get(path).get_data(as_text=True)
        assert page_emotions(html) == list(EMOTIONS_WITH_CONTEMPT), path
    assert "<th>contempt</th>" in client.get("/upload").get_data(as_text=True)


def test_the_shipped_model_names_its_eight_classes(client, model_path):
    assert read_classes(model_path) == EMOTIONS_WITH_CONTEMPT
    assert client.get("/healthz").json["emotions"] == list(EMOTIONS_WITH_CONTEMPT)
    assert page_emotions(client.get("/").get_data(as_text=True)) == list(EMOTIONS_WITH_CONTEMPT)


def test_the_video_api_follows_the_model(fer_plus_app, grace_rgb):
    pytest.importorskip("av", reason="PyAV not installed (requirements-live.txt): no video files")
    client = fer_plus_app.test_client()
    video = video_bytes(grace_rgb, seconds=1.0)
    reply = client.post("/api/v1/analyze-video?fps=2", data=video, content_type="video/mp4")
    assert reply.status_code == 200, reply.json
    assert sorted(reply.json["frames"][0]["faces"][0]["probabilities"]) == EIGHT
    assert sorted(reply.json["summary"]["emotions"]) == EIGHT
    reply = client.post("/api/v1/analyze-video?fps=2&format=csv", data=video, content_type="video/mp4")
    header, *rows = csv.reader(io.StringIO(reply.get_data(as_text=True)))
    assert header[-8:] == list(EMOTIONS_WITH_CONTEMPT) and all(len(row) == len(header) for row in rows)
