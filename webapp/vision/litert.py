"""Load TensorFlow Lite models with the interpreter TensorFlow ships."""

from __future__ import annotations

import os
import warnings


def load_interpreter(model_path: str | os.PathLike, threads: int | None = None):
    """Return an allocated TFLite interpreter for `model_path` (XNNPACK on CPU).

    Raises:
        FileNotFoundError: if the model file is missing.
    """
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file {str(model_path)!r} not found")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that LiteRT will replace it; it is what the TF wheel carries
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(model_path), num_threads=threads or os.cpu_count())
    interpreter.allocate_tensors()
    return interpreter
