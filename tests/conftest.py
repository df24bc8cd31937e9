"""Shared fixtures: the shipped model, a real face photo, the app and its clients."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from tests.harness import GRACE_FACE, ROOT, grace_hopper_rgb  # noqa: F401  (GRACE_FACE is re-exported to tests)
from tests.harness import webcam_frame as make_webcam_frame

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_FER = ROOT.parent / "shared" / "datasets" / "fer2013"
SHIPPED_MODEL = ROOT / "models" / "emotion_float16.tflite"

needs_fer2013 = pytest.mark.skipif(not (SHARED_FER / "val").is_dir(), reason=f"FER-2013 not found at {SHARED_FER} (../shared/datasets/fer2013)")


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def grace_rgb() -> np.ndarray:
    """A real face photo that ships in matplotlib's wheel."""
    return grace_hopper_rgb()


@pytest.fixture(scope="session")
def grace_jpeg(grace_rgb) -> bytes:
    return jpeg_bytes(grace_rgb)


@pytest.fixture(scope="session")
def webcam_frame() -> np.ndarray:
    """A 640x480 frame with the face, as a webcam sends it."""
    return make_webcam_frame()


@pytest.fixture(scope="session")
def model_path() -> str:
    if not SHIPPED_MODEL.is_file():
        pytest.fail(f"shipped model {SHIPPED_MODEL} is missing")
    return str(SHIPPED_MODEL)


@pytest.fixture(scope="session")
def app(model_path):
    from webapp import create_app

    return create_app({"TESTING": True, "ASYNC_MODE": "threading", "MAX_UPLOAD_MB": 2, "MAX_FRAME_KB": 256, "MAX_PIXELS": 20_000_000})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def socket_client(app):
    from webapp import socketio

    client = socketio.test_client(app)
    yield client
    if client.is_connected():
        client.disconnect()
