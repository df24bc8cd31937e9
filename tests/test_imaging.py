import io

import numpy as np
import pytest
from PIL import Image

from tests.harness import png_claiming, png_with_text
from webapp.vision.budget import DecodeLimits
from webapp.vision.imaging import ImageError, decode_image, decode_opened, open_image

LIMIT = 20_000_000


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_supported_formats_decode_to_rgb(fmt):
    rgb = decode_image(encode(Image.new("RGB", (64, 32), (10, 200, 30)), fmt), LIMIT)
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert abs(int(rgb[16, 32, 1]) - 200) < 8


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.new("RGB", (64, 32)), "JPEG", exif=exif.tobytes())
    assert decode_image(data, LIMIT).shape == (64, 32, 3)


def _stored_sideways(mode: str) -> Image.Image:
    """64x32 as stored, bright on its left column: upright (orientation 6) the bright side is the top row."""
    samples = np.zeros((32, 64), np.uint16 if mode == "I;16" else np.uint8)
    samples[:, 0] = 64000 if mode == "I;16" else 250
    image = Image.fromarray(samples)
    return image.convert("RGB") if mode == "RGB" else image


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("RGB", "PNG"), ("L", "PNG"), ("I;16", "PNG")])
def test_exif_orientation_turns_every_format_upright_and_reports_the_upright_size(mode, fmt):
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_opened(open_image(encode(_stored_sideways(mode), fmt, exif=exif.tobytes()), DecodeLimits()))
    assert decoded.rgb.shape == (64, 32, 3)
    assert (decoded.width, decoded.height) == (32, 64)  # boxes are scaled to this: it must match the pixels
    assert decoded.rgb[0].mean() > 200 and decoded.rgb[-1].mean() < 20


XMP_ORIENTATION_6 = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def _raw_profile_png(image: Image.Image, exif: bytes) -> bytes:
    """A PNG with its EXIF in an ImageMagick "Raw profile type exif" text chunk, not an eXIf chunk."""
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Raw profile type exif", f"\nexif\n{len(exif):8d}\n{exif.hex()}\n")
    return encode(image, "PNG", pnginfo=text)


@pytest.mark.parametrize(
    "where",
    ["WebP EXIF", "JPEG XMP", "PNG raw profile"],
)
def test_an_orientation_browsers_ignore_is_ignored(where):
    # the upload page draws the boxes over the browser's rendering: Chromium shows these files as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = _stored_sideways("RGB")
    data = {
        "WebP EXIF": lambda: encode(stored, "WEBP", exif=exif.tobytes(), lossless=True),
        "JPEG XMP": lambda: encode(stored, "JPEG", xmp=XMP_ORIENTATION_6),
        "PNG raw profile": lambda: _raw_profile_png(stored, b"Exif\x00\x00" + exif.tobytes()),
    }[where]()
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == 6  # Pillow alone would turn it
    decoded = decode_opened(open_image(data, DecodeLimits()))
    assert decoded.rgb.shape == (32, 64, 3) and (decoded.width, decoded.height) == (64, 32)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_turns_the_stored_pixels_as_browsers_do(orientation):
    # one bright pixel at the stored top-left corner of a 6x4 PNG; where a browser shows it (EXIF 2.32, table 4)
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = decode_image(encode(Image.fromarray(stored), "PNG", exif=exif.tobytes()), LIMIT)
    shown_at = {1: (0, 0), 2: (0, 5), 3: (3, 5), 4: (3, 0), 5: (0, 0), 6: (0, 3), 7: (5, 3), 8: (5, 0)}
    assert rgb.shape[:2] == ((4, 6) if orientation < 5 else (6, 4))
    assert tuple(np.argwhere(rgb[..., 0] > 128)[0]) == shown_at[orientation]


def test_a_png_is_not_decoded_before_its_budget_is_taken():
    # the pipeline takes a heavy-image slot between open_image and decode_opened; a PNG with no
    # EXIF in its header (most of them) is decoded whole by Pillow to look for one further on
    opened = open_image(encode(_stored_sideways("RGB"), "PNG"), DecodeLimits())
    assert opened.image.tile  # Pillow empties it once the pixels are decoded


def test_twelve_bit_samples_in_a_16_bit_png_keep_their_contrast():
    grey = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))
    rgb = decode_image(encode(Image.fromarray(grey), "PNG"), LIMIT)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty"),
        (b"\x00\x01garbage" * 50, "not_an_image"),
        (encode(Image.new("RGB", (8, 8)), "GIF"), "unsupported_format"),
        (png_claiming(60_000, 60_000), "too_large"),
        ("a string", "bad_payload"),
    ],
)
def test_bad_input_raises_a_coded_error(data, code):
    with pytest.raises(ImageError) as caught:
        decode_image(data, LIMIT)
    assert caught.value.code == code and caught.value.message


def test_truncated_jpeg_is_refused():
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError) as caught:
        decode_image(data[: len(data) // 2], LIMIT)
    assert caught.value.code == "corrupt_image"


def test_a_phone_jpeg_with_more_pictures_decodes_its_first():
    # MPO: a JPEG followed by more pictures (depth map, HDR gain map), as many phones save photos
    data = encode(
        Image.new("RGB", (64, 32), (200, 20, 20)), "MPO", save_all=True, append_images=[Image.new("RGB", (16, 16))]
    )
    assert Image.open(io.BytesIO(data)).format == "MPO"
    rgb = decode_image(data, LIMIT)
    assert rgb.shape == (32, 64, 3) and abs(int(rgb[16, 32, 0]) - 200) < 8


def test_a_progressive_jpeg_is_charged_for_its_full_size_coefficients():
    # a progressive JPEG decodes through every DCT coefficient of the full image, even when its pixels
    # come out at reduced scale: a small file that would pass as light if only the pixels counted
    image = Image.new("RGB", (6000, 2000), (120, 90, 60))
    limits = DecodeLimits(max_pixels=LIMIT, max_bytes=50 * 2**20)
    light = open_image(encode(image, "JPEG", subsampling=0), limits).decoded_bytes
    assert light == 3000 * 1000 * 3  # the baseline file: its pixels at 1/2 scale, 9 MB
    # 4:2:0 chroma: 1.5 samples a pixel at 2 bytes, 34 MB more, 43 MB in all: under the 50 MB limit
    halved = open_image(encode(image, "JPEG", progressive=True, subsampling=2), limits)
    assert halved.decoded_bytes == light + 6000 * 2000 * 3
    # 4:4:4: 3 samples a pixel, 69 MB more: refused before decoding
    with pytest.raises(ImageError) as caught:
        open_image(encode(image, "JPEG", progressive=True, subsampling=0), limits)
    assert caught.value.code == "too_large" and "MB to decode" in caught.value.message


@pytest.mark.parametrize("after_pixels", [False, True])
def test_png_text_chunks_past_their_budget_are_too_large(after_pixels):
    # 3 MB of zTXt in a file of a few KB: inflated while reading, before any pixel limit sees it
    bomb = png_with_text(3, 1_000_000, after_pixels)
    assert len(bomb) < 20_000
    with pytest.raises(ImageError) as caught:
        decode_opened(open_image(bomb, DecodeLimits(max_pixels=LIMIT)))
    assert caught.value.code == "too_large" and "text chunks" in caught.value.message


def test_png_metadata_of_a_real_size_still_decodes():
    assert decode_image(png_with_text(2, 300_000), LIMIT).shape == (64, 64, 3)  # e.g. a large XMP packet
