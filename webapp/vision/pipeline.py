"""The detector -> crop -> preprocess -> classifier pipeline, with per-stage timings."""
from __future__ import annotations

import threading
import time

import numpy as np

from webapp.vision.imaging import decode_image
from webapp.vision.preprocess import face_to_input, to_grayscale
from webapp.vision.types import Analysis, FaceResult


class EmotionPipeline:
    """Find every face in an image and classify its emotion.

    Args:
        detector: object with `detect(rgb) -> list[FaceDetection]` and a `name`.
        classifier: `EmotionClassifier` (or anything with `classify(faces)` and `name`).
        max_faces: classify at most this many faces, the largest first.
        max_pixels: decode limit used by `analyze_bytes`.
    """

    def __init__(self, detector, classifier, max_faces: int = 10, max_pixels: int = 40_000_000):
        self.detector = detector
        self.classifier = classifier
        self.max_faces = max_faces
        self.max_pixels = max_pixels

    def describe(self) -> dict:
        """Names of the models in use, for /healthz."""
        return {"detector": self.detector.name, "classifier": self.classifier.name, "flip_tta": getattr(self.classifier, "flip_tta", None)}

    def analyze_bytes(self, data: bytes) -> Analysis:
        """Decode an encoded image and analyse it; decoding time is reported as `decode`.

        Raises:
            ImageError: the bytes are not a usable image.
        """
        start = time.perf_counter()
        rgb = decode_image(data, self.max_pixels)
        decoded = time.perf_counter()
        analysis = self.analyze(rgb)
        timings = {"decode": (decoded - start) * 1000, **analysis.timings_ms}
        timings["total"] = (time.perf_counter() - start) * 1000
        return Analysis(analysis.width, analysis.height, analysis.faces, timings)

    def analyze(self, rgb: np.ndarray) -> Analysis:
        """Analyse an RGB uint8 image (H, W, 3)."""
        start = time.perf_counter()
        detections = sorted(self.detector.detect(rgb), key=lambda d: d.box.width * d.box.height, reverse=True)[: self.max_faces]
        detected = time.perf_counter()
        faces: tuple[FaceResult, ...] = ()
        if detections:
            gray = to_grayscale(rgb)
            crops = np.stack([face_to_input(gray, (d.box.x, d.box.y, d.box.width, d.box.height)) for d in detections])
            emotions = self.classifier.classify(crops)
            faces = tuple(FaceResult(d.box, d.score, emotion) for d, emotion in zip(detections, emotions, strict=True))
        done = time.perf_counter()
        timings = {"detect": (detected - start) * 1000, "classify": (done - detected) * 1000, "total": (done - start) * 1000}
        return Analysis(int(rgb.shape[1]), int(rgb.shape[0]), faces, timings)


def build_pipeline(model_path: str = "", *, detector: str = "blazeface", classifier=None, flip_tta: bool = True, max_faces: int = 10, max_pixels: int = 40_000_000, new_lock=None) -> EmotionPipeline:
    """Load a detector and the emotion model into a warmed-up pipeline.

    Args:
        model_path: the emotion model (.tflite or .keras); ignored when `classifier` is given.
        detector: "blazeface" (short range, webcam), "blazeface-full" (faces further away) or "haar".
        classifier: an already loaded `EmotionClassifier`, e.g. one shared between pipelines.
        flip_tta: average each face with its mirror image (when loading the classifier here).
        max_faces: classify at most this many faces per image, the largest first.
        max_pixels: images with more pixels are refused before decoding.
        new_lock: makes the locks that guard model calls (default: `threading.Lock`).
    """
    from webapp.vision.classifier import EmotionClassifier
    from webapp.vision.detector import make_detector

    new_lock = new_lock or threading.Lock
    classifier = classifier or EmotionClassifier(model_path, flip_tta=flip_tta, lock=new_lock())
    pipeline = EmotionPipeline(make_detector(detector, lock=new_lock()), classifier, max_faces=max_faces, max_pixels=max_pixels)
    pipeline.analyze(np.zeros((480, 640, 3), np.uint8))  # warm-up: the first call allocates
    return pipeline
