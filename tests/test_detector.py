import numpy as np
import pytest

from tests.harness import GRACE_FACE
from webapp.vision.detector import (
    BLAZEFACE_VARIANTS,
    BlazeFaceDetector,
    HaarFaceDetector,
    make_detector,
    non_max_suppression,
    ssd_anchors,
)
from webapp.vision.types import Box


@pytest.mark.parametrize("variant, count", [("short", 896), ("full", 2304)])
def test_anchor_layout_matches_the_models(variant, count):
    assert ssd_anchors(BLAZEFACE_VARIANTS[variant]).shape == (count, 2)


@pytest.mark.parametrize("detector", [BlazeFaceDetector("short"), BlazeFaceDetector("full"), HaarFaceDetector()], ids=lambda d: d.name)
def test_detectors_find_the_face_in_a_real_photo(detector, grace_rgb):
    faces = detector.detect(grace_rgb)
    assert len(faces) == 1
    assert faces[0].box.iou(Box(*GRACE_FACE)) > 0.6
    assert 0.5 < faces[0].score <= 1.0


def test_blazeface_finds_nothing_in_a_blank_frame():
    assert BlazeFaceDetector().detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_blazeface_box_follows_the_face_when_the_frame_is_letterboxed(webcam_frame):
    faces = BlazeFaceDetector().detect(webcam_frame)
    assert len(faces) == 1
    box = faces[0].box
    assert 128 < box.x < 512 and 15 < box.y < 465 and box.x + box.width <= 640


def test_weighted_nms_merges_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kept = non_max_suppression(boxes, np.array([0.9, 0.8, 0.7]), 0.3)
    assert len(kept) == 2 and kept[0][1] == pytest.approx(0.9)
    assert 0 < kept[0][0][0] < 1  # averaged position


def test_make_detector_names():
    assert make_detector("haar").name == "haar"
    assert make_detector("blazeface").name == "blazeface-short"
    with pytest.raises(ValueError):
        make_detector("yolo")
