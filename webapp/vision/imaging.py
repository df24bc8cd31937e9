"""Decode untrusted image bytes safely: format allow-list, pixel and memory limits, EXIF orientation."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin

from webapp.vision.budget import DecodeLimits

# A PNG's text chunks (tEXt, zTXt, iTXt: comments, XMP) are inflated while its header is read, before any
# limit here sees them: Pillow allows 64 MB of them, so twenty 64 KB uploads held over 1 GB. Real metadata,
# XMP included, is far below 2 MB.
PngImagePlugin.MAX_TEXT_MEMORY = 2 * 2**20
TEXT_TOO_LARGE = ("MAX_TEXT_CHUNK", "MAX_TEXT_MEMORY")  # in the messages of Pillow's refusals

# MPO is a JPEG with more pictures after the first (phone photos with a depth map or an HDR gain map):
# Pillow decodes the first picture, the one any viewer shows
ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP"}
JPEG_FORMATS = {"JPEG", "MPO"}
# Pillow modes that hold more than 8 bits per sample
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
BROWSER_EXIF_FORMATS = JPEG_FORMATS | {"PNG"}
EXIF_ORIENTATION = 0x0112
# what turns a stored image upright, per EXIF orientation
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """An input that is not a usable image. `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class OpenedImage:
    """An image whose header passed the limits, not yet decoded.

    `decoded_bytes` is what decoding will take; `width` and `height` are the full size
    (before any reduced-scale decoding), as stored: EXIF orientation is applied by `decode_opened`.
    """

    image: Image.Image
    decoded_bytes: int
    width: int
    height: int
    max_side: int = 2048


@dataclass(frozen=True)
class DecodedImage:
    """Upright RGB pixels, possibly at reduced scale; `width` x `height` is the full size."""

    rgb: np.ndarray
    width: int
    height: int


def decoded_bytes(image: Image.Image) -> int:
    """Width x height x channels x bytes per sample, as the header declares them (at least RGB)."""
    rawmode = image.tile[0][3] if image.tile and len(image.tile[0]) > 3 else ""
    rawmode = rawmode if isinstance(rawmode, str) else ""
    wide = ";16" in rawmode or image.mode in WIDE_MODES
    channels = max(len(image.getbands()), 3)
    return image.width * image.height * channels * (2 if wide else 1)


def coefficient_bytes(image: Image.Image, width: int, height: int) -> int:
    """What libjpeg holds besides the pixels for a progressive JPEG of `width` x `height`: every DCT
    coefficient of the full image, 2 bytes a sample of each component at its own sampling, whatever
    reduced scale the pixels come out at (16000x2500 in colour: 120 MB with 4:2:0 chroma, 240 MB with
    4:4:4, for a file of a few hundred KB). 0 for every other image."""
    if image.format not in JPEG_FORMATS or not image.info.get("progressive"):
        return 0
    # (component id, horizontal sampling, vertical sampling, quantisation table) per component
    components = getattr(image, "layer", None) or [("", 1, 1, 0)] * 3
    most = max(h * v for _, h, v, _ in components)
    samples_per_pixel = sum(h * v for _, h, v, _ in components) / most
    return math.ceil(width * height * samples_per_pixel * 2)


def open_image(data: bytes, limits: DecodeLimits, formats: set[str] = ALLOWED_FORMATS) -> OpenedImage:
    """Read the header and check it against `limits`; large JPEGs are set to decode at reduced scale.
    `formats`: Pillow's names of the formats accepted (training's own files may also be PGM).

    Raises:
        ImageError: code "bad_payload", "empty", "not_an_image", "unsupported_format" or "too_large".
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
    except Exception as error:
        _refuse_large_text(error)
        raise ImageError("not_an_image", "the data is not a readable image (JPEG, PNG, WebP or BMP expected)") from None
    if image.format not in formats:
        raise ImageError("unsupported_format", f"{image.format} images are not supported; send JPEG, PNG, WebP or BMP")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageError(
            "too_large", f"the image is {width}x{height} pixels; the limit is {limits.max_pixels:,} pixels"
        )
    if image.format in JPEG_FORMATS and max(width, height) > limits.draft_side:
        scale = limits.draft_side / max(width, height)
        try:
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        except Exception:
            raise ImageError("corrupt_image", "the image data is truncated or corrupt") from None
    needed = decoded_bytes(image) + coefficient_bytes(image, width, height)
    if needed > limits.max_bytes:
        raise ImageError(
            "too_large",
            f"the image would take {needed / 2**20:.0f} MB to decode ({width}x{height}, {image.mode}); "
            f"the limit is {limits.max_bytes / 2**20:.0f} MB",
        )
    # nothing here asks Pillow for the EXIF: its getexif() decodes a whole PNG to look for one
    return OpenedImage(image, needed, width, height, limits.draft_side)


def decode_opened(opened: OpenedImage) -> DecodedImage:
    """Decode an `open_image` result into upright RGB uint8 pixels.

    Raises:
        ImageError: code "corrupt_image".
    """
    image = opened.image
    width, height = opened.width, opened.height
    try:
        # before the pixels: an eXIf chunk after a PNG's image data, which Pillow reads with them, is one
        # Chromium ignores
        orientation = _orientation(image)
        image.load()
        if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
            width, height = height, width
        if image.mode in WIDE_MODES:  # to 8 bits at once: Pillow would clip to white, at 4 bytes a sample
            image = _to_8bit(image)
        image = _reduced(image, opened.max_side)
        if orientation in UPRIGHT:
            image = image.transpose(UPRIGHT[orientation])
        rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except Exception as error:
        _refuse_large_text(error)  # text chunks after the pixels are read with them
        raise ImageError("corrupt_image", "the image data is truncated or corrupt") from None
    return DecodedImage(rgb, width, height)


def _refuse_large_text(error: Exception) -> None:
    """Raise "too_large" when `error` is Pillow refusing a PNG's text chunks for their size."""
    if isinstance(error, ValueError) and any(limit in str(error) for limit in TEXT_TOO_LARGE):
        limit = PngImagePlugin.MAX_TEXT_MEMORY / 2**20
        raise ImageError(
            "too_large", f"the PNG's text chunks (metadata) hold more than {limit:g} MB; strip its metadata"
        ) from None


def decode_image(data: bytes, max_pixels: int, limits: DecodeLimits | None = None) -> np.ndarray:
    """Decode JPEG, PNG, WebP or BMP bytes into an upright RGB uint8 array.

    The header is checked before any pixel is decoded, so a decompression bomb costs
    nothing. EXIF orientation is applied, as browsers do when they show the image.
    JPEGs larger than `limits.draft_side` come back at reduced scale.

    Raises:
        ImageError: code "empty", "not_an_image", "unsupported_format", "too_large"
            or "corrupt_image".
    """
    limits = limits or DecodeLimits(max_pixels=max_pixels)
    return decode_opened(open_image(data, limits)).rgb


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) a browser applies when it shows `image`: that of the EXIF block of a
    JPEG or of a PNG's eXIf chunk. The upload page draws the boxes over the browser's own rendering
    of the photo, so the server must turn it exactly as browsers do. Pillow's `getexif` also finds an
    orientation in a WebP's EXIF, a JPEG's XMP and an ImageMagick "Raw profile" PNG text chunk,
    which Chromium ignores: a photo turned by it came back under boxes that missed its faces."""
    exif_block = image.info.get("exif")
    if image.format not in BROWSER_EXIF_FORMATS or not isinstance(exif_block, bytes):
        return 1
    try:
        exif = Image.Exif()
        exif.load(exif_block)
        return int(exif.get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def _reduced(image: Image.Image, max_side: int) -> Image.Image:
    """`image` shrunk by a whole factor to no less than `max_side` on its longer side.

    The detectors see 128-192 px and the classifier 48: a 40 MP image analysed at full
    size took over 1 GB in float copies. JPEGs arrive here already reduced (draft mode).
    """
    factor = max(image.size) // max_side
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not take (e.g. palette)
        return image.convert("RGB").reduce(factor)


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16- or 32-bit gray image as 8 bits, keeping its metadata (EXIF orientation among it).

    The top 8 of the bits its brightest sample uses are kept: 10- or 12-bit data in a 16-bit
    file would be near black if cut to its top byte.
    """
    samples = np.asarray(image)
    shift = max(0, int(samples.max(initial=0)).bit_length() - 8)
    eight_bit = Image.fromarray((samples >> shift).clip(0, 255).astype(np.uint8), "L")
    eight_bit.info.update(image.info)
    return eight_bit
