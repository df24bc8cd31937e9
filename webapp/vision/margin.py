"""Detection on a padded canvas, for images that are already a tight face crop."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from webapp.vision.types import Box, FaceDetection

# Margin on each side, as a fraction of the image's longer side; measured by
# `python -m bench.detection_bench` (crop sweep).
MARGIN = 0.5


def pad_image(rgb: np.ndarray, margin: float = MARGIN) -> tuple[np.ndarray, int]:
    """Surround an image with a flat border of its own mean colour.

    A flat border rather than a replicated one: replicated edge pixels smear into
    streaks that the detector reads as more face.

    Returns:
        the padded image and the border width in pixels.
    """
    pad = max(1, int(round(margin * max(rgb.shape[:2]))))
    colour = [float(c) for c in np.asarray(rgb, np.float32).reshape(-1, rgb.shape[2]).mean(axis=0)]
    return cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=colour), pad


def detect_with_margin(detector, rgb: np.ndarray, margin: float = MARGIN) -> list[FaceDetection]:
    """Run `detector` on the padded image; boxes and eyes come back in `rgb`'s pixels, clipped to it."""
    padded, pad = pad_image(rgb, margin)
    height, width = rgb.shape[:2]
    found = []
    for face in detector.detect(padded):
        left, top = max(0.0, face.box.x - pad), max(0.0, face.box.y - pad)
        right = min(float(width), face.box.x + face.box.width - pad)
        bottom = min(float(height), face.box.y + face.box.height - pad)
        if right - left < 2 or bottom - top < 2:
            continue  # a "face" in the border
        eyes = None if face.eyes is None else tuple((x - pad, y - pad) for x, y in face.eyes)
        found.append(replace(face, box=Box(left, top, right - left, bottom - top), eyes=eyes))
    return found
