"""Shared fixtures: the shipped model, a real face photo, the data in ../shared, the app and its clients."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.harness import FER2013, grace_hopper_rgb, jpeg_bytes
from tests.harness import webcam_frame as make_webcam_frame
from webapp.config import DEFAULT_MODEL

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHIPPED_MODEL = DEFAULT_MODEL


@pytest.fixture(scope="session")
def fer2013():
    """FER-2013 in ../shared (or $MOODLENS_SHARED); tests that need it are skipped, saying so, without it."""
    if not (FER2013 / "val").is_dir():
        pytest.skip(f"FER-2013 not found at {FER2013} (../shared/datasets/fer2013, or set MOODLENS_SHARED)")
    return FER2013


@pytest.fixture()
def fer_folders(tmp_path):
    """A tiny FER-2013 in the folder layout, with test/ as the held-out split."""
    import cv2

    from webapp.vision.labels import EMOTIONS

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("test", 2)):
        for emotion in EMOTIONS:
            folder = tmp_path / "fer" / split / emotion
            folder.mkdir(parents=True)
            for i in range(per_class):
                cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return tmp_path / "fer"


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

    return create_app(
        {"TESTING": True, "ASYNC_MODE": "threading", "MAX_UPLOAD_MB": 2, "MAX_FRAME_KB": 256, "MAX_PIXELS": 20_000_000}
    )


@pytest.fixture(scope="session")
def fer_plus_models(tmp_path_factory):
    """A tiny untrained 8-class model (FER-2013's 7 and FER+'s contempt): `model.keras` and, written by
    `training.export` with their class list, `emotion_float32.tflite` and `emotion_int8.tflite`."""
    from tests.harness import tiny_emotion_model
    from training import export
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT

    folder = tmp_path_factory.mktemp("fer_plus")
    tiny_emotion_model(8, EMOTIONS_WITH_CONTEMPT).save(folder / "model.keras")
    argv = ["--model", str(folder / "model.keras"), "--out", str(folder), "--forms", "float32", "int8"]
    assert export.main([*argv, "--calibration-size", "8", "--latency-repeats", "1"]) == 0
    return folder


@pytest.fixture(scope="session")
def plain_eight(tmp_path_factory):
    """A tiny untrained 8-output .tflite without metadata (no class list, no flip TTA record), as files were before them."""
    from tests.harness import plain_tflite, tiny_emotion_model

    path = tmp_path_factory.mktemp("plain") / "plain8.tflite"
    path.write_bytes(plain_tflite(tiny_emotion_model(8)))
    return path


@pytest.fixture(scope="session")
def fer_plus_app(fer_plus_models):
    """The app serving the tiny 8-class model (int8, as the shipped model is served)."""
    from webapp import create_app

    return create_app(
        {
            "TESTING": True,
            "ASYNC_MODE": "threading",
            "MODEL_PATH": str(fer_plus_models / "emotion_int8.tflite"),
            "MAX_UPLOAD_MB": 2,
            "MAX_FRAME_KB": 256,
        }
    )


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def socket_client(app):
    from webapp import socketio_of

    client = socketio_of(app).test_client(app)
    yield client
    if client.is_connected():
        client.disconnect()


@pytest.fixture(scope="module")
def server():
    """The Procfile's server (gunicorn, one eventlet worker) on a loopback port, for one test module."""
    from tests.harness import start_production_server, stop_production_server

    try:
        process, url = start_production_server()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop_production_server(process)


@pytest.fixture(scope="session")
def voted_data(tmp_path_factory):
    """A tiny FER-2013 in folders with a FER+ vote table beside it, some of whose faces it calls contempt."""
    import cv2

    from training.ferplus import VOTE_COLUMNS
    from webapp.vision.labels import EMOTIONS

    header = "file,fer2013_row," + ",".join(VOTE_COLUMNS)
    root = tmp_path_factory.mktemp("ferplus") / "fer"
    rng = np.random.default_rng(1)
    votes = {}
    for split, per_class in (("train", 4), ("val", 2)):
        for label, emotion in enumerate(EMOTIONS):
            (root / split / emotion).mkdir(parents=True)
            for i in range(per_class):
                cv2.imwrite(str(root / split / emotion / f"{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
                counts = np.zeros(10, int)
                counts[(label + i) % 8] = 6  # every other face's majority is another class, contempt included
                counts[rng.integers(0, 8)] += 4
                votes[f"{split}/{emotion}/{i}.png"] = counts
    lines = [header] + [f"{key},{n},{','.join(map(str, c))}" for n, (key, c) in enumerate(votes.items())]
    (root / "ferplus_votes.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def untrained_ferplus_models(tmp_path):
    """`make(n)`: paths of n untrained 8-class (FER+) compact CNNs of width 8, saved as .keras."""
    from training.model import make_model
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT

    def make(count: int) -> list[str]:
        paths = [tmp_path / f"m{index}.keras" for index in range(count)]
        for path in paths:
            make_model(width=8, classes=EMOTIONS_WITH_CONTEMPT).save(path)
        return list(map(str, paths))

    return make
