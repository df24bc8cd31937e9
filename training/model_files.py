"""Model files named on a command line: one that cannot be read is one clear error line, not a traceback."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Loaded = TypeVar("Loaded")

# what Keras and TFLite raise for a file that is not a model: a cut .keras zip even reads as "File not found"
UNREADABLE_MODEL_ERRORS = (OSError, ValueError, zipfile.BadZipFile)


class ModelFileError(ValueError):
    """A model file is missing or cannot be read as a model."""


def read_model(path: str | Path, load: Callable[[str], Loaded] | None = None) -> Loaded:
    """`load(path)` (default: `webapp.vision.layers.load_model`), its failures as one `ModelFileError`."""
    if not Path(path).is_file():
        raise ModelFileError(f"model file {str(path)!r} not found")
    if load is None:
        from webapp.vision.layers import load_model as load
    try:
        return load(str(path))
    except UNREADABLE_MODEL_ERRORS as error:
        raise ModelFileError(f"{path}: not a readable .keras or .tflite model ({error})") from None
