"""Load TensorFlow Lite models with LiteRT (`ai-edge-litert`), the interpreter without TensorFlow.

The serving install has no TensorFlow: 68 MB and 0.06 s to import and load against ~700 MB and 2-3 s.
A training install that lacks LiteRT falls back to `tf.lite.Interpreter`, which runs the same files.

A model file names its output classes in the flatbuffer's metadata: an entry named `CLASSES_METADATA`
whose buffer is a UTF-8 JSON list (`training.export` writes it, `read_classes` reads it). A second
entry, `FLIP_TTA_METADATA`, says whether the model is served with flip TTA (JSON true or false), so a
model chosen without it (e.g. a pair whose two networks replace the mirror's second pass) is served so.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from pathlib import Path

# Model.metadata entry that holds the class list, e.g. ["angry", ..., "neutral", "contempt"]
CLASSES_METADATA = "moodlens_classes"
# Model.metadata entry: whether the model was chosen to be served with flip TTA (true / false)
FLIP_TTA_METADATA = "moodlens_flip_tta"


def interpreter_class():
    """LiteRT's `Interpreter`, or TensorFlow's when only TensorFlow is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ModuleNotFoundError:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


def load_interpreter(model_path: str | os.PathLike, threads: int | None = None):
    """Return an allocated TFLite interpreter for `model_path` (XNNPACK on CPU).

    Raises:
        FileNotFoundError: if the model file is missing.
    """
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file {str(model_path)!r} not found")
    interpreter = interpreter_class()
    with warnings.catch_warnings():
        # tf.lite.Interpreter (the fallback) warns that LiteRT replaces it
        warnings.simplefilter("ignore")
        interpreter = interpreter(model_path=str(model_path), num_threads=threads or os.cpu_count())
    interpreter.allocate_tensors()
    return interpreter


def schema():
    """The TFLite flatbuffer schema's generated Python module: LiteRT's, or TensorFlow's when only TensorFlow is installed."""
    try:
        from ai_edge_litert import schema_py_generated
    except ModuleNotFoundError:
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def read_metadata(model_path: str | os.PathLike, name: str) -> bytes | None:
    """The bytes of a .tflite file's metadata entry `name`, or None when the file has no such entry.

    Raises:
        ValueError: the file is not a TFLite flatbuffer.
    """
    data = Path(model_path).read_bytes()
    try:
        model = schema().Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() != name.encode():
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # a buffer stored after the flatbuffer (models over 2 GB)
                return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            return b"" if buffer.DataIsNone() else buffer.DataAsNumpy().tobytes()
    except (struct.error, IndexError, UnicodeDecodeError) as error:  # offsets read from garbage point anywhere
        raise ValueError(f"{model_path}: not a TFLite model file ({error})") from None
    return None


_ABSENT = object()


def _json_entry(model_path: str | os.PathLike, name: str):
    """A metadata entry parsed as JSON; `_ABSENT` when the file has no such entry, None when it is not JSON."""
    raw = read_metadata(model_path, name)
    if raw is None:
        return _ABSENT
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_classes(model_path: str | os.PathLike) -> tuple[str, ...] | None:
    """The class list in a .tflite file's metadata, or None when the file has none (files made before it).

    Raises:
        ValueError: the entry is there but does not hold a JSON list of names.
    """
    classes = _json_entry(model_path, CLASSES_METADATA)
    if classes is _ABSENT:
        return None
    if not (isinstance(classes, list) and classes and all(isinstance(name, str) for name in classes)):
        raise ValueError(f"{model_path}: metadata {CLASSES_METADATA!r} is not a JSON list of class names")
    return tuple(classes)


def read_flip_tta(model_path: str | os.PathLike) -> bool | None:
    """Whether a .tflite file says it is served with flip TTA, or None when it does not say (files made before it).

    Raises:
        ValueError: the entry is there but holds neither true nor false.
    """
    flip_tta = _json_entry(model_path, FLIP_TTA_METADATA)
    if flip_tta is _ABSENT:
        return None
    if not isinstance(flip_tta, bool):
        raise ValueError(f"{model_path}: metadata {FLIP_TTA_METADATA!r} is not true or false")
    return flip_tta
