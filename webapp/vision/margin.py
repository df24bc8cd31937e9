"""Detection on a padded canvas, for images that are already a tight face crop."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from webapp.vision.types import Box, FaceDetection

# Margin on each side, as a fraction of the image's longer side; measured by
# `python -m bench.detection_bench` (crop sweep).
MARGIN = 0.5
# The padded canvas is made from the image scaled down to at most this side: the detectors
# see 128-192 px anyway, and at full size a 40 MP image padded this way took 600 MB (and a
# 1 x 65535 one, 25 GB).
WORK_SIDE = 640


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
    height, width = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(height, width))
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    padded, pad = pad_image(rgb, margin)
    found = []
    for face in detector.detect(padded):
        face = face.moved(-pad, -pad, 1 / scale, 1 / scale)
        box = face.box
        left, top = max(0.0, box.x), max(0.0, box.y)
        right, bottom = min(float(width), box.x + box.width), min(float(height), box.y + box.height)
        if right - left < 2 or bottom - top < 2:
            continue  # a "face" in the border
        found.append(replace(face, box=Box(left, top, right - left, bottom - top)))
    return found
