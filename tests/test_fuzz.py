"""Seeded fuzzing: 1,000 mutations of valid JPEG, PNG and WebP files against the decoder and the API,
and 1,000 of small MP4, WebM, MKV and MOV videos against the video API.

No crash, no 500, only coded errors, nothing slower than 1 s. A seeded generator instead of
Hypothesis: the same 1,000 inputs on every run, no extra dependency.
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from webapp.vision.imaging import ImageError, decode_image

SEED = 11
CASES = 1000
STATUSES = {200, 400, 413, 415, 503}


def seeds(face: np.ndarray) -> list[bytes]:
    """Valid files of each format and several modes, small enough to analyse quickly."""
    image = Image.fromarray(face).resize((96, 112))
    files = []
    for fmt, mode, options in [
        ("JPEG", "RGB", {"quality": 90}),
        ("JPEG", "RGB", {"quality": 60, "progressive": True}),
        ("JPEG", "L", {}),
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "P", {}),
        ("WEBP", "RGB", {"quality": 80}),
        ("WEBP", "RGBA", {"lossless": True}),
    ]:
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, fmt, **options)
        files.append(buffer.getvalue())
    grey16 = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    buffer = io.BytesIO()
    grey16.save(buffer, "PNG")
    return [*files, buffer.getvalue()]


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """`data` (a PNG) with its IHDR size replaced and the CRC made valid again."""
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random edits of `data`: bit flips, overwrites, cuts, inserts, repeats, header sizes."""
    buffer = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        n = len(buffer)
        if n < 2:
            break
        kind = int(rng.integers(0, 7))
        at = int(rng.integers(0, n))
        if kind == 0:
            for _ in range(int(rng.integers(1, 9))):
                buffer[int(rng.integers(0, n))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            size = int(rng.integers(1, 17))
            buffer[at : at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        elif kind == 2:
            buffer = buffer[: int(rng.integers(1, n))]
        elif kind == 3:
            buffer[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif kind == 4:
            size = int(rng.integers(1, min(n, 512) + 1))
            buffer[at:at] = buffer[at : at + size] * int(rng.integers(1, 8))
        elif kind == 5:
            buffer[at : at + int(rng.integers(1, 64))] = b""
        elif kind == 6 and bytes(buffer[:8]) == b"\x89PNG\r\n\x1a\n":
            # a large declared size over tiny data: the header checks must hold
            side = [1, 255, 4096, 8000, 65535, 2**31 - 1]
            buffer = bytearray(with_png_size(bytes(buffer), *(int(rng.choice(side)) for _ in range(2))))
    return bytes(buffer)


@pytest.fixture(scope="module")
def mutations(grace_rgb) -> list[bytes]:
    rng = np.random.default_rng(SEED)
    originals = seeds(grace_rgb[100:400, 120:420])
    return [mutate(originals[i % len(originals)], rng) for i in range(CASES)]


def test_decoder_survives_mutations(mutations):
    codes: dict[str, int] = {}
    slowest = 0.0
    for data in mutations:
        start = time.perf_counter()
        try:
            rgb = decode_image(data, 40_000_000)
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
            code = "ok"
        except ImageError as error:
            code = error.code
        codes[code] = codes.get(code, 0) + 1
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 1.0, (slowest, codes)
    assert codes.get("ok") and len(codes) >= 3, codes  # the mutations reach past the header checks


def test_api_survives_mutations(client, mutations):
    statuses: dict[int, int] = {}
    slowest = 0.0
    for data in mutations:
        start = time.perf_counter()
        reply = client.post("/api/v1/analyze", data=data, content_type="application/octet-stream")
        slowest = max(slowest, time.perf_counter() - start)
        body = reply.get_json()
        assert reply.status_code in STATUSES, (reply.status_code, body)
        assert body is not None and (reply.status_code == 200) == ("error" not in body), body
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
    assert slowest < 1.0, (slowest, statuses)
    assert statuses.get(200), statuses


VIDEO_CASES = 1000
VIDEO_STATUSES = {200, 400, 413, 415}


@pytest.fixture(scope="module")
def video_mutations(grace_rgb) -> list[bytes]:
    from tests.harness import video_bytes

    face = grace_rgb[100:400, 120:420]
    originals = [
        video_bytes(face, seconds=0.5, fps=10, codec=codec, container=container, size=(160, 120))
        for codec, container in (("libx264", "mp4"), ("libvpx-vp9", "webm"), ("libx264", "matroska"), ("mpeg4", "mov"))
    ]
    rng = np.random.default_rng(SEED)
    return [mutate(originals[i % len(originals)], rng) for i in range(VIDEO_CASES)]


def test_video_api_survives_mutations(client, video_mutations):
    statuses: dict[int, int] = {}
    codes: dict[str, int] = {}
    for data in video_mutations:
        reply = client.post("/api/v1/analyze-video", data=data, content_type="application/octet-stream")
        body = reply.get_json()
        assert reply.status_code in VIDEO_STATUSES, (reply.status_code, body)
        assert body is not None and (reply.status_code == 200) == ("error" not in body), body
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        if "error" in body:
            codes[body["error"]["code"]] = codes.get(body["error"]["code"], 0) + 1
    assert statuses.get(200) and len(codes) >= 2, (statuses, codes)  # the mutations reach past the headers
