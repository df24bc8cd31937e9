"""The emotion classes, in FER-2013's label order (the index the model outputs)."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)


def index_of(emotion: str) -> int:
    """Return the class index of an emotion name.

    Raises:
        ValueError: if the name is not one of the 7 FER-2013 classes.
    """
    try:
        return EMOTIONS.index(emotion.lower())
    except ValueError:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}") from None
