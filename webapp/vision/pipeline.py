"""The detector -> crop -> preprocess -> classifier pipeline, with per-stage timings."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

import numpy as np

from webapp.vision.align import MIN_TILT_DEGREES, upright_face_input
from webapp.vision.budget import BusyError, DecodeLimits, HeavySlots
from webapp.vision.imaging import ImageError, decode_opened, open_image
from webapp.vision.margin import detect_with_margin
from webapp.vision.preprocess import face_to_input, to_grayscale
from webapp.vision.types import Analysis, Box, FaceDetection, FaceResult, rescaled

# detections shorter than this, in the image's pixels, are not faces (see `_big_enough`)
MIN_FACE_PX = 16


class EmotionPipeline:
    """Find every face in an image and classify its emotion.

    Args:
        detector: object with `detect(rgb) -> list[FaceDetection]` and a `name`.
        classifier: `EmotionClassifier` (or anything with `classify(faces)`, `classes` and `name`).
        max_faces: classify at most this many faces, the largest first.
        max_pixels: decode limit used by `analyze_bytes` (when `limits` is not given).
        limits: what one image may cost to decode (`DecodeLimits`).
        heavy_slots: caps how many large images are analysed at once (`HeavySlots`); None: no cap.
        padded_retry: retry an image with no face on a padded canvas (face crops).
        align_min_tilt: rotate faces tilted at least this many degrees upright by their
            eye keypoints before classifying; None never rotates.
    """

    def __init__(
        self,
        detector,
        classifier,
        max_faces: int = 10,
        max_pixels: int = 40_000_000,
        padded_retry: bool = True,
        align_min_tilt: float | None = MIN_TILT_DEGREES,
        limits: DecodeLimits | None = None,
        heavy_slots: HeavySlots | None = None,
    ):
        self.detector = detector
        self.padded_retry = padded_retry
        self.align_min_tilt = align_min_tilt
        self.classifier = classifier
        self.max_faces = max_faces
        self.limits = limits or DecodeLimits(max_pixels=max_pixels)
        self.heavy_slots = heavy_slots

    @property
    def classes(self) -> tuple[str, ...]:
        """The emotions the classifier outputs, in its order: every face's `probabilities` has these keys."""
        return tuple(self.classifier.classes)

    def describe(self) -> dict:
        """Names of the models in use and the classifier's classes, for /healthz."""
        return {
            "detector": self.detector.name,
            "classifier": self.classifier.name,
            "flip_tta": getattr(self.classifier, "flip_tta", None),
            "classes": list(self.classes),
        }

    def analyze_bytes(self, data: bytes, whole: bool = False) -> Analysis:
        """Decode an encoded image and analyse it; decoding time is reported as `decode`.

        A large JPEG is decoded at reduced scale; boxes and size are reported in its full-size pixels.

        Args:
            data: the encoded image.
            whole: see `analyze`.

        Raises:
            ImageError: the bytes are not a usable image, or (code "busy") too many large
                images are being analysed at once.
        """
        start = time.perf_counter()
        opened = open_image(data, self.limits)
        try:
            # held for the analysis too: the decoded pixels live until it ends
            with self.heavy_slots.hold(opened.decoded_bytes) if self.heavy_slots else nullcontext():
                decoded = decode_opened(opened)
                del opened
                decoded_at = time.perf_counter()
                analysis = self.analyze(decoded.rgb, whole)
                faces = rescaled(analysis.faces, decoded.rgb.shape, decoded.width, decoded.height)
                width, height = decoded.width, decoded.height
                del decoded  # before the slot is released (and the heap trimmed)
        except BusyError as busy:
            raise ImageError("busy", str(busy)) from None
        timings = {"decode": (decoded_at - start) * 1000, **analysis.timings_ms}
        timings["total"] = (time.perf_counter() - start) * 1000
        return Analysis(width, height, faces, timings, analysis.faces_found)

    def find_faces(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Detect every face, largest first; an image with none is tried once more with a margin.

        A tightly cropped face has no margin around it, and detectors are trained on faces
        with context, so a crop usually answers nothing; on a padded canvas it is found.
        """
        detections = _big_enough(self.detector.detect(rgb))
        if not detections and self.padded_retry:
            detections = _big_enough(detect_with_margin(self.detector, rgb))
        return sorted(detections, key=lambda d: d.box.width * d.box.height, reverse=True)

    def analyze(self, rgb: np.ndarray, whole: bool = False) -> Analysis:
        """Analyse an RGB uint8 image (H, W, 3).

        Args:
            rgb: the image.
            whole: the image is one face crop: classify it as is, box = the image, no detection.
        """
        start = time.perf_counter()
        if whole:
            height, width = rgb.shape[:2]
            detections = [FaceDetection(Box(0.0, 0.0, float(width), float(height)), 1.0)]
        else:
            detections = self.find_faces(rgb)
        found = len(detections)
        detections = detections[: self.max_faces]
        detected = time.perf_counter()
        faces: tuple[FaceResult, ...] = ()
        if detections:
            gray = to_grayscale(rgb)
            crops = np.stack([self._model_input(gray, d, whole) for d in detections])
            emotions = self.classifier.classify(crops)
            faces = tuple(FaceResult(d.box, d.score, emotion) for d, emotion in zip(detections, emotions, strict=True))
        done = time.perf_counter()
        timings = {
            "detect": (detected - start) * 1000,
            "classify": (done - detected) * 1000,
            "total": (done - start) * 1000,
        }
        return Analysis(int(rgb.shape[1]), int(rgb.shape[0]), faces, timings, found)

    def _model_input(self, gray: np.ndarray, detection: FaceDetection, whole: bool) -> np.ndarray:
        if whole:
            return face_to_input(gray)
        if self.align_min_tilt is not None:
            return upright_face_input(gray, detection, self.align_min_tilt)
        box = detection.box
        return face_to_input(gray, (box.x, box.y, box.width, box.height), detection.framing)


def _big_enough(detections: list[FaceDetection]) -> list[FaceDetection]:
    """Detections at least `MIN_FACE_PX` tall: smaller boxes in a small image are parts of a face.

    On 48x48 face crops the detectors drew an eye, an ear or the chin as a second face of 8-11 px beside
    the face (5 of 1,795 FER-2013 val crops), each just outside the face's box so `without_parts` kept it.
    No real face that small is found in a photo (tiles find them down to ~36 px), nor has 48x48's detail.
    """
    return [face for face in detections if face.box.height >= MIN_FACE_PX]


def build_pipeline(
    model_path: str = "",
    *,
    detector: str = "blazeface-auto",
    classifier=None,
    flip_tta: bool | None = None,
    max_faces: int = 10,
    max_pixels: int = 40_000_000,
    padded_retry: bool = True,
    new_lock=None,
    limits: DecodeLimits | None = None,
    heavy_slots: HeavySlots | None = None,
) -> EmotionPipeline:
    """Load a detector and the emotion model into a warmed-up pipeline.

    Args:
        model_path: the emotion model (.tflite or .keras); ignored when `classifier` is given.
        detector: a `make_detector` name: "blazeface-auto" (full range + short range for
            close-ups), "blazeface" (short range), "blazeface-full" or "haar".
        classifier: an already loaded `EmotionClassifier`, e.g. one shared between pipelines.
        flip_tta: average each face with its mirror image (when loading the classifier here);
            None: as the model file says.
        max_faces: classify at most this many faces per image, the largest first.
        max_pixels: images with more pixels are refused before decoding.
        padded_retry: retry images with no face on a padded canvas (uploads: face crops;
            off for the stream, where it would double the cost of every empty frame).
        new_lock: makes the locks that guard model calls (default: `threading.Lock`).
        limits: decode limits (default: `max_pixels` and `DecodeLimits`' other defaults).
        heavy_slots: shared cap on large analyses at once (None: no cap).
    """
    from webapp.vision.classifier import EmotionClassifier
    from webapp.vision.detector import make_detector

    new_lock = new_lock or threading.Lock
    classifier = classifier or EmotionClassifier(model_path, flip_tta=flip_tta, lock=new_lock())
    detector = make_detector(detector, lock=new_lock())
    pipeline = EmotionPipeline(
        detector,
        classifier,
        max_faces=max_faces,
        max_pixels=max_pixels,
        padded_retry=padded_retry,
        limits=limits,
        heavy_slots=heavy_slots,
    )
    pipeline.analyze(np.zeros((480, 640, 3), np.uint8))  # warm-up: the first call allocates
    return pipeline
