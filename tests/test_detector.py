import itertools

import cv2
import numpy as np
import pytest

from tests.harness import GRACE_FACE
from tests.scenes import SCENES, crowd, letterbox, load_scenes, match, place_face, six_face_frame
from webapp.vision.detector import (
    BLAZEFACE_VARIANTS,
    DETECTOR_NAMES,
    BlazeFaceDetector,
    HaarFaceDetector,
    KeptFaces,
    make_detector,
    non_max_suppression,
    ssd_anchors,
)
from webapp.vision.preprocess import crop_box
from webapp.vision.tiles import tile_origins
from webapp.vision.types import Box, FaceDetection


@pytest.mark.parametrize("variant, count", [("short", 896), ("full", 2304)])
def test_anchor_layout_matches_the_models(variant, count):
    assert ssd_anchors(BLAZEFACE_VARIANTS[variant]).shape == (count, 2)


@pytest.mark.parametrize(
    "detector", [BlazeFaceDetector("short"), BlazeFaceDetector("full"), HaarFaceDetector()], ids=lambda d: d.name
)
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


def test_blazeface_gives_the_eyes_in_image_pixels(grace_rgb):
    for variant in ("short", "full"):
        (right_eye, left_eye), box = BlazeFaceDetector(variant).detect(grace_rgb)[0].eyes, Box(*GRACE_FACE)
        # the person's right eye is on the image's left; both sit in the upper half of the face
        assert box.x < right_eye[0] < left_eye[0] < box.x + box.width
        assert box.y < right_eye[1] < box.y + box.height / 2 and abs(right_eye[1] - left_eye[1]) < 10


def test_make_detector_knows_every_documented_name():
    for name in DETECTOR_NAMES:
        assert make_detector(name).name == {"blazeface": "blazeface-short"}.get(name, name)


def test_range_detector_runs_short_range_only_for_close_ups(monkeypatch, webcam_frame):
    detector = make_detector("blazeface-auto")
    calls = []
    short_detect = detector.short.detect
    monkeypatch.setattr(detector.short, "detect", lambda rgb: calls.append(1) or short_detect(rgb))
    small = cv2.resize(webcam_frame, (160, 120))
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[180:300, 240:400] = small  # one face about 10% of the frame's height
    assert len(detector.detect(canvas)) == 1 and calls == []
    close, _ = place_face(0.9 * 480)
    assert len(detector.detect(close)) == 1 and calls == [1]


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("centre", [(0.5, 0.5), (0.3, 0.65), (0.7, 0.35)])
def test_range_detector_finds_close_ups_up_to_the_full_frame(fraction, centre):
    frame, truth = place_face(fraction * 480, centre=centre)
    found = make_detector("blazeface-auto").detect(frame)
    assert match([d.box for d in found], [truth]) == (1, 0)


def test_range_detector_finds_the_faces_across_the_room():
    scenes = load_scenes()
    if not scenes:
        pytest.skip(f"faces-in-scenes not found at {SCENES}")
    detector = make_detector("blazeface-auto")
    found = false = total = 0
    for _, image, boxes in scenes:
        frame, boxes = letterbox(image, boxes)
        hits, misses = match([d.box for d in detector.detect(frame)], boxes)
        found, false, total = found + hits, false + misses, total + len(boxes)
    assert found / total >= 0.97 and false <= 3


def test_short_range_alone_misses_the_small_faces_of_a_group():
    frame, boxes = six_face_frame()
    short = match([d.box for d in make_detector("blazeface").detect(frame)], boxes)[0]
    auto = match([d.box for d in make_detector("blazeface-auto").detect(frame)], boxes)[0]
    assert auto >= 5 and auto > short


def test_every_detector_crops_the_face_as_fer2013_frames_it(grace_rgb):
    # the detectors draw different boxes (Haar's larger, full range's higher); each one's framing
    # turns its box into about the same crop, the one the model was trained on
    crops = {}
    for detector in (BlazeFaceDetector("short"), BlazeFaceDetector("full"), HaarFaceDetector()):
        (face,) = detector.detect(grace_rgb)
        crops[detector.name] = crop_box(face.box.x, face.box.y, face.box.width, face.box.height, face.framing)
    left, top, side = crops["blazeface-short"]
    for other_left, other_top, other_side in crops.values():
        assert abs(other_side - side) < 0.08 * side
        assert abs(other_top - top) < 0.1 * side and abs(other_left - left) < 0.1 * side


def test_the_pipeline_crops_with_the_framing_of_the_detector_that_found_the_face(grace_rgb, model_path):
    from webapp.vision.pipeline import build_pipeline
    from webapp.vision.preprocess import DEFAULT_FRAMING, face_to_input, to_grayscale

    pipeline = build_pipeline(model_path, detector="haar")
    seen, classify = [], pipeline.classifier.classify
    pipeline.classifier.classify = lambda crops: seen.append(crops) or classify(crops)
    (face,) = pipeline.find_faces(grace_rgb)
    pipeline.analyze(grace_rgb)
    box = (face.box.x, face.box.y, face.box.width, face.box.height)
    gray = to_grayscale(grace_rgb)
    assert np.array_equal(seen[0][0], face_to_input(gray, box, HaarFaceDetector.framing))
    assert not np.array_equal(seen[0][0], face_to_input(gray, box, DEFAULT_FRAMING))


# --- large photos: tiles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiled():
    return make_detector("blazeface-tiled")


def test_tiles_find_the_small_faces_of_a_large_group_photo(tiled):
    photo, truth = crowd(3, 5, 60, 3000, 2000)  # faces 2% of the photo's width
    assert match([d.box for d in make_detector("blazeface-auto").detect(photo)], truth)[0] < 5
    assert match([d.box for d in tiled.detect(photo)], truth) == (15, 0)


def test_tiles_find_small_faces_in_a_phone_photo_at_its_full_size(tiled):
    photo, truth = crowd(4, 6, 45, 4000, 3000)  # 12 MP: a level capped at 3.1 MP shrank these faces to 23 px
    assert match([d.box for d in tiled.detect(photo)], truth) == (24, 0)


def test_second_looks_are_bounded_and_faces_past_the_bound_are_kept(tiled, monkeypatch):
    from webapp.vision import tiles

    looks = []
    seen_again = tiled._seen_again
    monkeypatch.setattr(tiles, "MAX_SECOND_LOOKS", 5)
    monkeypatch.setattr(tiled, "_seen_again", lambda image, box: looks.append(box) or seen_again(image, box))
    photo, truth = crowd(3, 5, 40, 2000, 1400)  # a crowd of 1,600 small faces took 6.5 s with a look each
    assert match([d.box for d in tiled.detect(photo)], truth) == (15, 0)
    assert len(looks) == 5


@pytest.mark.parametrize("centre", [(0.006, 0.008), (0.994, 0.992), (0.5, 0.992)])
def test_a_small_face_at_a_photos_edge_survives_the_second_look(tiled, centre):
    photo, box = place_face(45, 4000, 3000, centre)  # its second look's square runs off the photo
    (found,) = tiled.detect(photo)
    assert found.box.iou(box) > 0.5


@pytest.mark.parametrize("x", [512, 896, 1000])  # on a tile's edge, in two tiles' overlap, inside one
def test_a_face_across_tiles_is_found_once(tiled, x):
    photo, box = place_face(70, 2048, 1200, (x / 2048, 0.5))  # too small for the whole-image pass
    (found,) = tiled.detect(photo)
    assert found.box.iou(box) > 0.5
    assert found.framing == BLAZEFACE_VARIANTS["full"].framing
    assert found.eyes[0][0] < found.eyes[1][0] and box.x < found.eyes[0][0] < box.x + box.width


def test_tiles_add_nothing_to_a_close_up(tiled, grace_rgb):
    # enlarged 5x, the photo's dark jacket passed for a 94 px face in a tile, until the second look
    assert len(tiled.detect(cv2.resize(grace_rgb, (2560, 3000)))) == 1


def test_a_photo_of_512_px_or_less_gets_no_tiles(tiled, grace_rgb, monkeypatch):
    calls = []
    monkeypatch.setattr(tiled, "_tiled", lambda image: calls.append(image.shape) or [])
    small = cv2.resize(grace_rgb, (437, 512))
    assert len(tiled.detect(small)) == 1 and calls == []
    tiled.detect(cv2.resize(grace_rgb, (437, 513)))
    assert calls  # one pixel more: tiles


@pytest.mark.parametrize("shape", [(1, 4095), (4095, 1), (2, 2100), (1, 3000), (40, 4095)])
def test_a_thin_photo_is_no_error(tiled, shape):
    assert tiled.detect(np.full((*shape, 3), 128, np.uint8)) == []


@pytest.mark.parametrize("length", [513, 700, 1024, 2048, 3001])
def test_tiles_cover_each_side_with_a_quarter_overlap(length):
    starts = tile_origins(length, 512)
    assert starts[0] == 0 and starts[-1] + 512 == length
    assert all(0 < b - a <= 384 for a, b in itertools.pairwise(starts))


def test_a_box_inside_a_face_is_the_same_face():
    face = KeptFaces([FaceDetection(Box(100, 100, 300, 300), 1.0)])
    assert face.covers(Box(200, 200, 80, 80))  # IoU 0.07, but wholly inside
    assert not face.covers(Box(380, 100, 300, 300))  # a neighbour overlapping its edge


def test_a_part_of_a_face_found_as_a_face_of_its_own_is_dropped():
    from webapp.vision.detector import without_parts
    from webapp.vision.types import Box, FaceDetection

    face = FaceDetection(Box(3, 16, 88, 80), 0.75)
    eye = FaceDetection(Box(51, 28, 34, 34), 0.53)  # inside the face: NMS kept it (IoU 0.16)
    neighbour = FaceDetection(Box(95, 16, 80, 80), 0.6)  # beside it: another face
    assert without_parts([face, eye, neighbour]) == [face, neighbour]
    # the better box stays, whichever is larger
    assert without_parts([eye, face]) == [eye]


def test_a_close_up_crop_is_one_face(grace_rgb):
    import cv2

    from webapp.vision.detector import make_detector

    # a 96 px crop of the face: full range also drew a box on one eye (score 0.53)
    crop = cv2.resize(grace_rgb[100:320, 160:380], (96, 96))
    assert len(make_detector("blazeface-auto").detect(crop)) == 1
