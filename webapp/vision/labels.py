"""The emotion classes a model can output, in the order of its output units.

Models trained on FER-2013's labels output its 7 classes; models trained on FER+ votes
may add `contempt` as an eighth unit. A model file names its own classes (see
`webapp.vision.layers.EmotionClasses` and `training.export`); files made before that
are the 7 FER-2013 classes.
"""

import re

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
# FER+ adds contempt after FER-2013's classes, so index i means the same emotion in both sets
EMOTIONS_WITH_CONTEMPT: tuple[str, ...] = (*EMOTIONS, "contempt")
CLASS_SETS: dict[int, tuple[str, ...]] = {7: EMOTIONS, 8: EMOTIONS_WITH_CONTEMPT}
# what a model file may name a class: the name becomes a JSON key, a CSV column (p_<name>) and page text
CLASS_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def classes_for(count: int) -> tuple[str, ...]:
    """The class list of a model with `count` outputs (7 or 8).

    Raises:
        ValueError: for any other count.
    """
    try:
        return CLASS_SETS[count]
    except KeyError:
        raise ValueError(
            f"no class list for {count} classes; expected one of {', '.join(map(str, CLASS_SETS))}"
        ) from None


def index_of(emotion: str, classes: tuple[str, ...] = EMOTIONS) -> int:
    """Return the index of an emotion name in `classes`.

    Raises:
        ValueError: if the name is not one of `classes`.
    """
    try:
        return classes.index(emotion.lower())
    except ValueError:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(classes)}") from None
