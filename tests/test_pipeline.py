"""The vision core end to end, with the shipped model (the golden test)."""
import numpy as np
import pytest

from tests.harness import GRACE_FACE
from webapp.vision.classifier import EmotionClassifier
from webapp.vision.labels import EMOTIONS
from webapp.vision.pipeline import build_pipeline
from webapp.vision.types import Box


@pytest.fixture(scope="module")
def pipeline(model_path):
    return build_pipeline(model_path)


def test_golden_real_face_photo(pipeline, grace_jpeg):
    analysis = pipeline.analyze_bytes(grace_jpeg)
    assert (analysis.width, analysis.height) == (512, 600)
    assert len(analysis.faces) == 1
    face = analysis.faces[0]
    assert face.box.iou(Box(*GRACE_FACE)) > 0.6
    assert set(face.emotion.probabilities) == set(EMOTIONS)
    assert sum(face.emotion.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert face.emotion.label == max(face.emotion.probabilities, key=face.emotion.probabilities.get)
    # a composed portrait: neutral, well ahead of the rest (0.49 with the shipped ensemble, angry next at 0.28)
    assert face.emotion.label == "neutral" and face.emotion.score > 0.4
    assert set(analysis.timings_ms) == {"decode", "detect", "classify", "total"}


def test_no_face_is_a_normal_answer(pipeline):
    analysis = pipeline.analyze(np.full((240, 320, 3), 30, np.uint8))
    assert analysis.faces == () and analysis.to_dict()["faces"] == []


def test_wire_format(pipeline, grace_rgb):
    wire = pipeline.analyze(grace_rgb).to_dict()
    assert set(wire) == {"width", "height", "faces", "timings_ms"}
    assert set(wire["faces"][0]) == {"id", "box", "detection_score", "emotion", "score", "probabilities"}
    assert set(wire["faces"][0]["box"]) == {"x", "y", "width", "height"}


def test_max_faces_keeps_the_largest(model_path, grace_rgb):
    two = np.concatenate([grace_rgb, np.asarray(grace_rgb[::2, ::2].repeat(2, 0).repeat(2, 1))], axis=1)
    analysis = build_pipeline(model_path, max_faces=1).analyze(np.ascontiguousarray(two))
    assert len(analysis.faces) == 1


def test_flip_tta_is_symmetric(model_path):
    classifier = EmotionClassifier(model_path, flip_tta=True)
    face = np.random.default_rng(1).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(classifier.predict_probabilities(face), classifier.predict_probabilities(face[:, :, ::-1]), atol=1e-5)


def test_classifier_reports_a_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        EmotionClassifier(tmp_path / "missing.tflite")


@pytest.mark.parametrize("input_shape, classes", [((48, 48, 1), 3), ((32, 32, 1), 7)], ids=["3-classes", "32x32-input"])
def test_classifier_rejects_a_model_with_the_wrong_shape(tmp_path, input_shape, classes):
    import keras
    import tensorflow as tf

    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(inputs)))
    path = tmp_path / "wrong.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    with pytest.raises(ValueError, match="expected input"):
        EmotionClassifier(path)
