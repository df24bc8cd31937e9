"""Turn a tilted face upright with the detector's eye keypoints, straight into model input."""

from __future__ import annotations

import math

import cv2
import numpy as np

from webapp.vision.preprocess import INPUT_SIZE, face_to_input
from webapp.vision.types import FaceDetection

# Below this tilt the face is classified as cropped. FER-2013's own faces lean up to
# ~20 degrees either way and the model learned them so: levelling those costs accuracy,
# levelling steeper ones pays (bench/detection_bench.py --only align, bench/RESULTS.md).
MIN_TILT_DEGREES = 20.0


def eye_tilt(detection: FaceDetection) -> float | None:
    """Tilt of the line between the eyes in degrees (positive: the head leans clockwise on screen); None without eyes."""
    if detection.eyes is None:
        return None
    (rx, ry), (lx, ly) = detection.eyes
    return math.degrees(math.atan2(ly - ry, lx - rx))


def upright_face_input(gray: np.ndarray, detection: FaceDetection, min_tilt: float = MIN_TILT_DEGREES) -> np.ndarray:
    """The 48x48 model input for a detected face, rotated so its eyes are level.

    Frames the face as `face_to_input` does (same scale and forehead shift, measured in the
    upright face), in one warp from the image so nothing is resampled twice.

    Args:
        gray: 2-D uint8 image.
        detection: the face; without eye keypoints, or tilted less than `min_tilt`, the
            plain crop is returned.
        min_tilt: degrees of tilt below which the face is not rotated.
    """
    box, framing = detection.box, detection.framing
    tilt = eye_tilt(detection)
    if tilt is None or abs(tilt) < min_tilt:
        return face_to_input(gray, (box.x, box.y, box.width, box.height), framing)
    side = max(box.width, box.height) * framing.scale
    # first an area-resized square around the face, big enough for any rotation of the
    # crop, at about the output's resolution: warping straight from a large face would alias
    half = int(math.ceil(0.75 * side))
    cx, cy = int(round(box.x + box.width / 2)), int(round(box.y + box.height / 2))
    region = _window(gray, cx - half, cy - half, 2 * half)
    size = max(INPUT_SIZE, int(round(INPUT_SIZE * 2 * half / side)))
    region = cv2.resize(
        region, (size, size), interpolation=cv2.INTER_AREA if region.shape[0] > size else cv2.INTER_LINEAR
    )
    scale = INPUT_SIZE / (side * size / (2 * half))
    centre = (
        size / 2 + (box.x + box.width / 2 - cx) * size / (2 * half),
        size / 2 + (box.y + box.height / 2 - cy) * size / (2 * half),
    )
    matrix = cv2.getRotationMatrix2D(centre, tilt, scale)
    # the box centre lands above the output's centre by the crop's forehead shift, which `crop_box` takes
    # from the box's height: for a box cut flat by the image's edge that is not its longer side
    target = (INPUT_SIZE / 2, INPUT_SIZE / 2 - framing.shift_y * box.height * INPUT_SIZE / side)
    matrix[:, 2] += np.array(target) - np.array(centre)
    return cv2.warpAffine(
        region, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _window(gray: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The `side`-pixel square at (left, top), its parts outside the image filled by replicating the border.

    Only the window is built, not a padded image: a large photo's many faces would each copy all of it.
    """
    rows = np.clip(np.arange(top, top + side), 0, gray.shape[0] - 1)
    columns = np.clip(np.arange(left, left + side), 0, gray.shape[1] - 1)
    return gray[np.ix_(rows, columns)]
