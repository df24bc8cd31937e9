"""Emotion classifier: runs the shipped model on 48x48 faces prepared by `preprocess`."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from webapp.vision.labels import CLASS_NAME, CLASS_SETS, classes_for
from webapp.vision.litert import load_interpreter, read_classes, read_flip_tta
from webapp.vision.preprocess import INPUT_SIZE, to_model_input
from webapp.vision.types import Emotion


def served_flip_tta(model_path: str | os.PathLike) -> bool:
    """Whether a model file is served with flip TTA when nothing overrides it: as a .tflite file's
    record says (`training.export --flip-tta`); on for .keras files and files without the record."""
    return Path(model_path).suffix == ".keras" or read_flip_tta(model_path) is not False


# faces per model call: a live frame waits for at most one call of a photo's (~8 ms with flip TTA)
FACES_PER_CALL = 8


class EmotionClassifier:
    """Classify 48x48 uint8 grayscale faces into the emotions the model outputs.

    Loads a TFLite model (the serving form, see `training.export`) or a Keras
    `.keras` model. Inference is guarded by a lock, so one instance can serve many
    threads; the model is warmed up once at load. `classes` names the model's outputs:
    FER-2013's 7, or 8 with FER+'s contempt, as the model file says (files without a
    class list: by their number of outputs).

    Args:
        model_path: `.tflite` or `.keras` file.
        flip_tta: average the prediction with the one for the mirrored face. None: as the
            model file says (`training.export --flip-tta`); on for files that do not say.
        threads: interpreter threads (default: all cores).
        lock: guards the model, which serves one call at a time (default: a `threading.Lock`).

    Raises:
        FileNotFoundError: the model file is missing.
        ValueError: the model does not map 48x48x1 inputs to 7 or 8 classes, its outputs
            do not match the class list it names, or its flip TTA record is not true or false.
    """

    def __init__(
        self, model_path: str | os.PathLike, flip_tta: bool | None = None, threads: int | None = None, lock=None
    ):
        self.model_path = Path(model_path)
        self.name = self.model_path.name
        self._lock = lock or threading.Lock()
        self.classes: tuple[str, ...] = ()
        if self.model_path.suffix == ".keras":
            self._predict_batch = self._load_keras()
        else:
            self._predict_batch = self._load_tflite(threads)
        # the record is checked even when `flip_tta` overrides it, as the class list is: a bad file fails early
        recorded = served_flip_tta(self.model_path)
        self.flip_tta: bool = recorded if flip_tta is None else flip_tta
        self.predict_probabilities(np.zeros((1, INPUT_SIZE, INPUT_SIZE), np.uint8))  # warm-up

    def _load_tflite(self, threads):
        interpreter = load_interpreter(self.model_path, threads)
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        self.classes = self._checked_classes(
            inp["shape"].tolist(), out["shape"].tolist(), read_classes(self.model_path)
        )
        in_scale, in_zero = inp["quantization"]
        out_scale, out_zero = out["quantization"]
        batch = [int(inp["shape"][0])]

        def predict(x: np.ndarray) -> np.ndarray:
            if len(x) != batch[0]:
                interpreter.resize_tensor_input(inp["index"], [len(x), INPUT_SIZE, INPUT_SIZE, 1])
                interpreter.allocate_tensors()
                batch[0] = len(x)
            if in_scale:  # int8 model: quantize the float input
                x = np.clip(np.round(x / in_scale + in_zero), -128, 127).astype(inp["dtype"])
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            y = interpreter.get_tensor(out["index"])
            return (y.astype(np.float32) - out_zero) * out_scale if out_scale else y

        return predict

    def _load_keras(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from webapp.vision.layers import load_model, named_classes

        model = load_model(self.model_path)
        named = named_classes(model)
        self.classes = self._checked_classes(list(model.inputs[0].shape), list(model.outputs[0].shape), named)
        return lambda x: np.asarray(model.predict_on_batch(x))

    def _checked_classes(self, input_shape: list, output_shape: list, named) -> tuple[str, ...]:
        """The model's class list (`named`, else by its number of outputs), checked against its shapes."""
        outputs = output_shape[-1]
        if input_shape[1:] != [INPUT_SIZE, INPUT_SIZE, 1] or outputs not in CLASS_SETS:
            raise ValueError(
                f"{self.model_path}: expected input (N, 48, 48, 1) and {' or '.join(map(str, CLASS_SETS))} outputs, "
                f"got {input_shape} -> {output_shape}"
            )
        classes = tuple(named) if named else classes_for(outputs)
        if len(classes) != outputs or len(set(classes)) != outputs:
            raise ValueError(f"{self.model_path}: {outputs} outputs, but the file names the classes {list(classes)}")
        odd = [name for name in classes if not CLASS_NAME.fullmatch(name)]
        if odd:
            raise ValueError(
                f"{self.model_path}: class names must be 1-32 lower-case letters, digits or _, starting with a "
                f"letter; the file names {odd}"
            )
        return classes

    def predict_probabilities(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities (N, len(classes)), in `classes` order, for uint8 faces (N, 48, 48).

        At most `FACES_PER_CALL` faces go through the model at once, the lock released in between:
        the classifier is shared, and a 50-face photo held it ~50 ms at once against the live stream's frames.
        """
        if len(faces) > FACES_PER_CALL:
            return np.concatenate(
                [
                    self.predict_probabilities(faces[i : i + FACES_PER_CALL])
                    for i in range(0, len(faces), FACES_PER_CALL)
                ]
            )
        x = to_model_input(faces)
        if self.flip_tta:
            x = np.concatenate([x, x[:, :, ::-1]])
        with self._lock:
            probabilities = self._predict_batch(np.ascontiguousarray(x))
        if self.flip_tta:
            probabilities = (probabilities[: len(faces)] + probabilities[len(faces) :]) / 2
        # an int8 model's softmax comes in steps of 1/256, so its rows sum to 1 only within ~0.5%
        return probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-6)

    def classify(self, faces: np.ndarray) -> list[Emotion]:
        """Typed emotions for uint8 faces (N, 48, 48); an empty batch gives an empty list."""
        if len(faces) == 0:
            return []
        return [
            Emotion.from_probabilities(dict(zip(self.classes, map(float, row), strict=True)))
            for row in self.predict_probabilities(faces)
        ]
