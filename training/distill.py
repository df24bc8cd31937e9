"""Distillation targets: what a trained teacher (usually an ensemble) says about each training face.

A student trained on a blend of the labels and its teacher's probabilities learns the
teacher's view of every face, including the classes the teacher finds likely but the
labels leave out, which can carry part of an ensemble's gain into one smaller model.
The teacher runs once over the unaugmented faces, with flip TTA as the server runs it.
"""

from __future__ import annotations

import numpy as np


def teacher_probabilities(teacher_path: str, images: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """The teacher's probabilities (N, len(classes)) for uint8 faces (N, 48, 48), columns in `classes` order.

    Raises:
        ValueError: the teacher does not output exactly `classes` (in any order).
    """
    from tqdm import tqdm

    from webapp.vision.classifier import EmotionClassifier

    teacher = EmotionClassifier(teacher_path, flip_tta=True)
    if set(teacher.classes) != set(classes):
        raise ValueError(
            f"the teacher {teacher_path} outputs {', '.join(teacher.classes)}; the student is trained on {', '.join(classes)}"
        )
    batches = range(0, len(images), 256)
    probabilities = np.concatenate(
        [
            teacher.predict_probabilities(images[start : start + 256])
            for start in tqdm(batches, desc="teacher", unit="batch", disable=None, leave=False)
        ]
    )
    return probabilities[:, [teacher.classes.index(name) for name in classes]].astype(np.float32)


def blend(targets: np.ndarray, teacher: np.ndarray, teacher_weight: float) -> np.ndarray:
    """`teacher_weight` of each target from the teacher, the rest from the labels."""
    if not 0 <= teacher_weight <= 1:
        raise ValueError(f"teacher_weight must be in [0, 1], got {teacher_weight}")
    return ((1 - teacher_weight) * targets + teacher_weight * teacher).astype(np.float32)
