"""The server turns an uploaded photo upright exactly as Chromium shows it: the upload page draws the
server's boxes over the browser's own rendering of the file."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.harness import CHROMIUM, CHROMIUM_ARGS, png_chunk, png_with_chunks
from webapp.vision.imaging import decode_image

pytestmark = pytest.mark.browser

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")

XMP_ORIENTATION_6 = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def _marked() -> Image.Image:
    """24x16, black, with a white 4x4 block in its stored top-left corner."""
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:4, :4] = 255
    return Image.fromarray(pixels)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    _marked().save(buffer, fmt, **options)
    return buffer.getvalue()


def _raw_profile_png() -> bytes:
    text = PngImagePlugin.PngInfo()
    exif = b"Exif\x00\x00" + _exif(6)
    text.add_text("Raw profile type exif", f"\nexif\n{len(exif):8d}\n{exif.hex()}\n")
    return _encoded("PNG", pnginfo=text)


def _exif_after_image_data() -> bytes:
    """A PNG whose eXIf chunk (orientation 6) follows its image data, just before IEND."""
    exif = _exif(6).removeprefix(b"Exif\x00\x00")
    return png_with_chunks(_encoded("PNG"), png_chunk(b"eXIf", exif), after_pixels=True)


FILES = {
    **{f"JPEG EXIF {n}": lambda n=n: _encoded("JPEG", exif=_exif(n), quality=95) for n in range(1, 9)},
    "PNG eXIf 6": lambda: _encoded("PNG", exif=_exif(6)),
    "WebP EXIF 6": lambda: _encoded("WEBP", exif=_exif(6), lossless=True),
    "JPEG XMP 6": lambda: _encoded("JPEG", xmp=XMP_ORIENTATION_6, quality=95),
    "PNG raw profile 6": _raw_profile_png,
    "PNG eXIf 6 after the image data": _exif_after_image_data,
}

SHOWN_BY_CHROMIUM = """async (encoded) => {
    const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes]), { imageOrientation: "from-image" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d");
    context.drawImage(bitmap, 0, 0);
    const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height);
    return { width: bitmap.width, height: bitmap.height, red: Array.from(data.filter((_, i) => i % 4 === 0)) };
}"""


def _bright_corner(red: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(red > 128)
    return int(rows.mean() > red.shape[0] / 2), int(cols.mean() > red.shape[1] / 2)


def test_every_orientation_source_is_applied_as_chromium_applies_it():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto("about:blank")
            for name, make in FILES.items():
                data = make()
                shown = page.evaluate(SHOWN_BY_CHROMIUM, base64.b64encode(data).decode())
                red = np.array(shown["red"], np.uint8).reshape(shown["height"], shown["width"])
                decoded = decode_image(data, 10_000)[..., 0]
                assert decoded.shape == red.shape, name
                assert _bright_corner(decoded) == _bright_corner(red), name
        finally:
            browser.close()
