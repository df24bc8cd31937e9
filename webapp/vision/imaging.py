"""Decode untrusted image bytes safely: format allow-list, pixel limit, EXIF orientation."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP"}


class ImageError(ValueError):
    """An input that is not a usable image. `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode JPEG, PNG, WebP or BMP bytes into an upright RGB uint8 array.

    The header is checked before any pixel is decoded, so a decompression bomb costs
    nothing. EXIF orientation is applied, as browsers do when they show the image.

    Raises:
        ImageError: code "empty", "not_an_image", "unsupported_format", "too_large"
            or "corrupt_image".
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("bad_payload", f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError("empty", "the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too_large", "the image has too many pixels") from None
    except Exception:
        raise ImageError("not_an_image", "the data is not a readable image (JPEG, PNG, WebP or BMP expected)") from None
    if image.format not in ALLOWED_FORMATS:
        raise ImageError("unsupported_format", f"{image.format} images are not supported; send JPEG, PNG, WebP or BMP")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError("too_large", f"the image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = image.convert("RGB")
    except Exception:
        raise ImageError("corrupt_image", "the image data is truncated or corrupt") from None
    return np.asarray(rgb)
