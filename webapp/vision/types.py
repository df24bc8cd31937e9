"""Typed results of the pipeline, and their one wire format (`to_dict`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in image pixels; (x, y) is the top-left corner."""

    x: float
    y: float
    width: float
    height: float

    def intersection(self, other: Box) -> float:
        """Area shared with another box (0 when they do not overlap)."""
        left, top = max(self.x, other.x), max(self.y, other.y)
        right = min(self.x + self.width, other.x + other.width)
        bottom = min(self.y + self.height, other.y + other.height)
        return max(0.0, right - left) * max(0.0, bottom - top)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box."""
        inter = self.intersection(other)
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def moved(self, dx: float = 0.0, dy: float = 0.0, fx: float = 1.0, fy: float = 1.0) -> Box:
        """The box in other pixels: each point (x, y) goes to ((x + dx) * fx, (y + dy) * fy)."""
        return Box((self.x + dx) * fx, (self.y + dy) * fy, self.width * fx, self.height * fy)

    def to_dict(self) -> dict:
        return {
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "width": round(self.width, 1),
            "height": round(self.height, 1),
        }


@dataclass(frozen=True)
class Framing:
    """How FER-2013 frames a face relative to one detector's box.

    Each detector draws its box a little differently (full-range BlazeFace's is larger than
    short range's, Haar's larger again), so each has its own, measured on val by
    `python -m bench.crop_calibration` (medians).

    Attributes:
        scale: the crop's side over the box's longer side.
        shift_y: the crop centre's offset from the box centre, in box heights (negative: higher, more forehead).
    """

    scale: float
    shift_y: float


# short-range BlazeFace's: the crop is 1.19x the box's side, centred 0.07 box heights higher;
# used for boxes that come with no framing of their own
DEFAULT_FRAMING = Framing(1.19, -0.07)


@dataclass(frozen=True)
class FaceDetection:
    """A face found by a detector: its box, the detector's confidence, when the detector
    gives them the eye centres ((x, y) of the person's right eye, then left eye, in image
    pixels) used to turn a tilted head upright, and how a crop frames a face in that
    detector's box."""

    box: Box
    score: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None
    framing: Framing = DEFAULT_FRAMING

    def moved(self, dx: float = 0.0, dy: float = 0.0, fx: float = 1.0, fy: float = 1.0) -> FaceDetection:
        """The detection in other pixels (a tile's in the photo's, a shrunk image's at full size), eyes too."""
        eyes = None if self.eyes is None else tuple(((x + dx) * fx, (y + dy) * fy) for x, y in self.eyes)
        return replace(self, box=self.box.moved(dx, dy, fx, fy), eyes=eyes)


@dataclass(frozen=True)
class Emotion:
    """The classifier's answer for one face: top label, its probability, and one per class of the model (7 or 8)."""

    label: str
    score: float
    probabilities: dict[str, float]

    @classmethod
    def from_probabilities(cls, probabilities: dict[str, float]) -> Emotion:
        """Build the answer from a {label: probability} mapping, taking the argmax as the label."""
        label = max(probabilities, key=probabilities.__getitem__)
        return cls(label, probabilities[label], probabilities)


@dataclass(frozen=True)
class FaceResult:
    """One analysed face. `track_id` is set when a tracker follows faces across frames."""

    box: Box
    detection_score: float
    emotion: Emotion
    track_id: int | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.track_id,
            "box": self.box.to_dict(),
            "detection_score": round(self.detection_score, 4),
            "emotion": self.emotion.label,
            "score": round(self.emotion.score, 4),
            "probabilities": {label: round(p, 4) for label, p in self.emotion.probabilities.items()},
        }


def rescaled(faces: tuple[FaceResult, ...], shape: tuple[int, ...], width: int, height: int) -> tuple[FaceResult, ...]:
    """Faces found in an image analysed as an array of `shape` (rows, columns, ...), in the pixels of
    the same image at `width` x `height`: a large photo or video frame is analysed shrunk, and its boxes
    are reported at full size."""
    sx, sy = width / shape[1], height / shape[0]
    if (sx, sy) == (1, 1):
        return faces
    return tuple(replace(face, box=face.box.moved(fx=sx, fy=sy)) for face in faces)


@dataclass(frozen=True)
class Analysis:
    """Everything found in one image, with per-stage timings in milliseconds."""

    width: int
    height: int
    faces: tuple[FaceResult, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # faces detected, of which `faces` holds the largest, up to the pipeline's `max_faces`;
    # None: as many as `faces` holds
    faces_found: int | None = None

    def to_dict(self) -> dict:
        """The documented wire format shared by the JSON API and the Socket.IO ack."""
        return {
            "width": self.width,
            "height": self.height,
            "faces": [face.to_dict() for face in self.faces],
            "faces_found": len(self.faces) if self.faces_found is None else self.faces_found,
            "timings_ms": {stage: round(ms, 2) for stage, ms in self.timings_ms.items()},
        }
