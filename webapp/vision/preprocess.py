"""The one definition of how a face becomes model input, shared by training and serving.

FER-2013 images are 48x48 grayscale crops that frame the face with a little forehead
and chin. Serving reproduces that framing from a detector box (`crop_box`), then both
paths call `face_to_input`, and every pixel array reaches the model via `to_model_input`.
"""

from __future__ import annotations

import cv2
import numpy as np

from webapp.vision.types import DEFAULT_FRAMING, Framing

INPUT_SIZE = 48
INPUT_SHAPE = (INPUT_SIZE, INPUT_SIZE, 1)


def to_grayscale(image: np.ndarray, order: str = "RGB") -> np.ndarray:
    """Return a 2-D uint8 grayscale view of a gray, 3- or 4-channel image.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array.
        order: channel order of colour images, "RGB" (PIL, the server) or "BGR" (cv2.imread).
    """
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        codes = {
            ("RGB", 3): cv2.COLOR_RGB2GRAY,
            ("RGB", 4): cv2.COLOR_RGBA2GRAY,
            ("BGR", 3): cv2.COLOR_BGR2GRAY,
            ("BGR", 4): cv2.COLOR_BGRA2GRAY,
        }
        return cv2.cvtColor(image, codes[order, image.shape[2]])
    raise ValueError(f"expected a gray, RGB(A) or BGR(A) image, got shape {image.shape}")


def crop_box(x: float, y: float, w: float, h: float, framing: Framing = DEFAULT_FRAMING) -> tuple[int, int, int]:
    """Square crop (left, top, side) in pixels that frames a detected face like FER-2013."""
    side = max(w, h) * framing.scale
    cx = x + w / 2
    cy = y + h / 2 + framing.shift_y * h
    return int(round(cx - side / 2)), int(round(cy - side / 2)), max(1, int(round(side)))


def face_to_input(
    gray: np.ndarray, box: tuple[float, float, float, float] | None = None, framing: Framing = DEFAULT_FRAMING
) -> np.ndarray:
    """Crop (optionally) and resize a grayscale face to the model's 48x48 uint8 form.

    Args:
        gray: 2-D uint8 image.
        box: detector box (x, y, w, h) in pixels; None when `gray` already is a face crop.
        framing: how the detector that drew `box` frames a face.

    Returns:
        uint8 array of shape (48, 48). Parts of the crop outside the image are filled by
        replicating the border, so faces at the frame edge keep their framing.
    """
    if box is not None:
        left, top, side = crop_box(*box, framing)
        height, width = gray.shape
        pad = max(0, -left, -top, left + side - width, top + side - height)
        if pad:
            gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            left += pad
            top += pad
        gray = gray[top : top + side, left : left + side]
    if gray.shape != (INPUT_SIZE, INPUT_SIZE):
        shrinking = gray.shape[0] > INPUT_SIZE
        gray = cv2.resize(
            gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return gray


def to_model_input(faces: np.ndarray) -> np.ndarray:
    """Scale uint8 faces (N, 48, 48) or (48, 48) to float32 in [0, 1] with a channel axis."""
    faces = np.asarray(faces)
    if faces.dtype != np.uint8:
        raise TypeError(f"expected uint8 faces, got {faces.dtype}")
    return (faces.astype(np.float32) * (1.0 / 255.0))[..., np.newaxis]
