import io

import numpy as np
import pytest
from PIL import Image

from tests.harness import png_claiming
from webapp.vision.imaging import ImageError, decode_image

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
