"""Distillation targets: what a trained teacher (usually an ensemble) says about each training face.

A student trained on a blend of the labels and its teacher's probabilities learns the
teacher's view of every face, including the classes the teacher finds likely but the
labels leave out, which can carry part of an ensemble's gain into one smaller model.
The teacher runs once over the unaugmented faces, always with flip TTA whatever a .tflite
teacher's file records (so earlier runs' targets are made again the same way), and its
probabilities are kept in the run folder (`TEACHER_FILE`, keyed by image): a resumed run reads
them back, and `--teacher` accepts that file in place of the model, so a student can be trained
again without its teacher's weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEACHER_FILE = "teacher.npz"


def teacher_probabilities(teacher_path: str, images: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """The teacher's probabilities (N, len(classes)) for uint8 faces (N, 48, 48), columns in `classes` order.

    Raises:
        ValueError: the teacher does not output exactly `classes` (in any order).
    """
    from training.evaluate import predict_probabilities
    from webapp.vision.classifier import EmotionClassifier
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT

    teacher = EmotionClassifier(teacher_path, flip_tta=True)
    _check_classes(teacher_path, teacher.classes, classes)
    canonical = EMOTIONS_WITH_CONTEMPT[: len(classes)]  # predict_probabilities' column order
    ordered = predict_probabilities(teacher, images)[:, [canonical.index(name) for name in classes]]
    # rounded as `save_teacher` keeps them, so a run repeated from the file sees the same targets
    return ordered.astype(np.float16).astype(np.float32)


def _check_classes(teacher, teacher_classes, classes: tuple[str, ...]) -> None:
    """Raise ValueError unless the teacher outputs exactly the student's classes (in any order)."""
    if set(teacher_classes) != set(classes):
        raise ValueError(
            f"the teacher {teacher} outputs {', '.join(teacher_classes)}; the student is trained on {', '.join(classes)}"
        )


def blend(targets: np.ndarray, teacher: np.ndarray, teacher_weight: float) -> np.ndarray:
    """`teacher_weight` of each target from the teacher, the rest from the labels."""
    if not 0 <= teacher_weight <= 1:
        raise ValueError(f"teacher_weight must be in [0, 1], got {teacher_weight}")
    return ((1 - teacher_weight) * targets + teacher_weight * teacher).astype(np.float32)


def save_teacher(path: Path, keys, probabilities: np.ndarray, classes: tuple[str, ...], source: str) -> None:
    """Keep a teacher's probabilities (float16, a few hundred KB for FER-2013) with the images' keys."""
    np.savez_compressed(
        path,
        keys=np.asarray(keys, dtype=str),
        probabilities=probabilities.astype(np.float16),
        classes=np.asarray(classes, dtype=str),
        source=np.asarray(source),
    )


def load_teacher(path, keys, classes: tuple[str, ...]) -> np.ndarray:
    """The saved teacher's probabilities for the images named by `keys`, columns in `classes` order.

    Raises:
        ValueError: the file lacks one of the images or one of the classes.
    """
    with np.load(path) as saved:
        try:
            saved_keys, saved_classes = saved["keys"].tolist(), saved["classes"].tolist()
            probabilities = saved["probabilities"].astype(np.float32)
        except KeyError as error:
            raise ValueError(f"{path} is not a teacher file (no {error} array)") from None
    _check_classes(path, saved_classes, classes)
    row = {key: index for index, key in enumerate(saved_keys)}
    missing = [key for key in keys if key not in row]
    if missing:
        raise ValueError(f"the teacher {path} has no probabilities for {len(missing)} images (e.g. {missing[0]})")
    columns = [saved_classes.index(name) for name in classes]
    return probabilities[[row[key] for key in keys]][:, columns]
