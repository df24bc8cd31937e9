"""FER+ labels: ten annotators' votes per FER-2013 image, and the training targets made from them.

`ferplus_votes.csv` (see ../shared/datasets/fer2013/README.md) has one row per image with
the vote counts `neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown, NF`. Rows join to folder images by `<emotion>/<file name>` and to `fer2013.csv`
rows by `fer2013_row`. FER-2013 holds some images several times; the table gives all copies of one
image the votes of one row, so joined by row number (the CSV layout) the other copies have no votes and
are left out (about 1,200 images, 4%), while joined by file (the folder layout) every copy has them. Images whose votes are mostly `unknown` or `NF` (not a face) are
unusable: they are left out of training and of FER+ scores, as are images FER+ dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.data import DataError, FaceDataset, csv_rows, image_key
from webapp.vision.labels import EMOTIONS, EMOTIONS_WITH_CONTEMPT

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
# the class each emotion column votes for, in EMOTIONS_WITH_CONTEMPT's names
VOTED_CLASSES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
VOTES_FILE = "ferplus_votes.csv"
LABEL_MODES = ("fer2013", "ferplus-majority", "ferplus-votes")
# a label is "clear" when at least this many of the ten annotators agree on it
CLEAR_AGREEMENT = 7
NEUTRAL = EMOTIONS_WITH_CONTEMPT.index("neutral")


def read_votes(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The vote table as {key: ten counts}, keyed both by `<emotion>/<file name>` and by `row:<n>`.

    Raises:
        DataError: for a missing file or column, or a count or row number that is not a whole number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER+ votes file {str(path)!r} not found")
    table: dict[str, np.ndarray] = {}
    with csv_rows(path) as reader:
        missing = {"file", "fer2013_row", *VOTE_COLUMNS} - set(reader.fieldnames)
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                counts = np.array([int(row[column]) for column in VOTE_COLUMNS], dtype=np.float32)
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: vote counts must be whole numbers") from None
            if (counts < 0).any():
                raise DataError(f"{path}:{line}: negative vote count")
            table[_file_key(row["file"])] = counts
            if row["fer2013_row"]:
                try:
                    table[f"row:{int(row['fer2013_row'])}"] = counts
                except ValueError:
                    raise DataError(
                        f"{path}:{line}: fer2013_row {row['fer2013_row']!r} is not a whole number"
                    ) from None
    return table


def _file_key(file: str) -> str:
    """The key of the table's `<split>/<emotion>/<file name>`, made as `training.data` keys folder images."""
    parts = Path(file).parts
    return image_key(*parts[-2:]) if len(parts) >= 2 else file


def find_votes(data: str | os.PathLike) -> Path | None:
    """`ferplus_votes.csv` beside `fer2013.csv` or in the dataset folder (or its parent), if there is one."""
    data = Path(data)
    for folder in (data.parent, data) if data.is_file() else (data, data.parent):
        if (folder / VOTES_FILE).is_file():
            return folder / VOTES_FILE
    return None


def votes_table(data: str | os.PathLike, votes: str | os.PathLike | None = None) -> dict[str, np.ndarray] | None:
    """The vote table from `votes`, or from ferplus_votes.csv beside `data`; None when there is neither."""
    votes_file = votes or find_votes(data)
    return read_votes(votes_file) if votes_file else None


def attach_votes(dataset: FaceDataset, table: dict[str, np.ndarray]) -> FaceDataset:
    """`dataset` with `votes` (N, 10): each image's counts, NaN for images the table lacks.

    Raises:
        DataError: when no image has a row (a table for other images, or keys that do not match).
    """
    if dataset.keys is None:
        raise DataError(f"{dataset.source}: images carry no keys to join FER+ votes to")
    missing = np.full(len(VOTE_COLUMNS), np.nan, np.float32)
    votes = np.stack([table.get(key, missing) for key in dataset.keys])
    # some images lacking a row is normal (FER+ dropped a few hundred); all of them means a wrong join
    if np.isnan(votes).all():
        raise DataError(
            f"{dataset.source}: no image joins a row of the FER+ votes (images are keyed like "
            f"{dataset.keys[0]!r}, the table like {_sample_key(table, dataset.keys[0])!r})"
        )
    return FaceDataset(dataset.images, dataset.labels, dataset.source, dataset.keys, votes)


def _sample_key(table: dict[str, np.ndarray], like: str) -> str | None:
    """A key of `table` of the kind of `like` (`row:<n>` or a file), or any key; None for an empty table."""
    same_kind = (key for key in table if key.startswith("row:") == like.startswith("row:"))
    return next(same_kind, next(iter(table), None))


def usable(votes: np.ndarray) -> np.ndarray:
    """Images with a FER+ row whose emotion votes outnumber their `unknown` + `NF` votes."""
    emotion_votes = np.nan_to_num(votes[:, :8]).sum(1)
    other_votes = np.nan_to_num(votes[:, 8:]).sum(1)
    return ~np.isnan(votes).any(1) & (emotion_votes > other_votes)


def class_votes(votes: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Vote counts (N, len(classes)) in `classes` order; votes for a class not in `classes` are dropped."""
    return np.nan_to_num(votes[:, [VOTED_CLASSES.index(name) for name in classes]])


def majority(votes: np.ndarray, classes: tuple[str, ...] = EMOTIONS_WITH_CONTEMPT) -> np.ndarray:
    """Index in `classes` of each image's most-voted class; -1 for ties and unusable images."""
    counts = class_votes(votes, classes)
    top = counts.max(1, keepdims=True)
    unique_top = (counts == top).sum(1) == 1
    return np.where(usable(votes) & unique_top & (top[:, 0] > 0), counts.argmax(1), -1)


def clear_majority(votes: np.ndarray, classes: tuple[str, ...] = EMOTIONS_WITH_CONTEMPT) -> np.ndarray:
    """Like `majority`, but -1 unless at least `CLEAR_AGREEMENT` of the annotators agree."""
    labels = majority(votes, classes)
    counts = class_votes(votes, classes)
    agreed = counts[np.arange(len(labels)), np.maximum(labels, 0)] >= CLEAR_AGREEMENT
    return np.where(agreed & (labels >= 0), labels, -1)


def one_annotator_agreement(votes: np.ndarray, classes: tuple[str, ...] = EMOTIONS_WITH_CONTEMPT) -> np.ndarray:
    """For each image, the chance that an annotator drawn at random (among those who voted for one
    of `classes`) voted for the class the majority of the image's other annotators holds, a tie
    among them counting as shared. Averaged over images, it is how well one person agrees with the
    rest: the human reference for a model's agreement with the majority. NaN where `majority`
    leaves the image out."""
    counts = class_votes(votes, classes)
    agreement = np.zeros(len(counts))
    for column in range(counts.shape[1]):
        others = counts.copy()
        others[:, column] -= 1
        top = others.max(1)
        agreement += counts[:, column] * (others[:, column] == top) / (others == top[:, None]).sum(1)
    agreement /= np.maximum(counts.sum(1), 1)
    return np.where(majority(votes, classes) >= 0, agreement, np.nan)


def training_targets(
    dataset: FaceDataset, mode: str, classes: tuple[str, ...], fer2013_weight: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Which images to train on and their target distributions (M, len(classes)).

    Args:
        dataset: faces with FER-2013 labels, and `votes` for the FER+ modes.
        mode: "fer2013" (one-hot FER-2013 label), "ferplus-majority" (one-hot vote majority,
            ties left out) or "ferplus-votes" (the vote distribution over `classes`).
        classes: the model's classes (7, or 8 with contempt).
        fer2013_weight: FER+ modes: the share of the target given to the FER-2013 label. The
            votes lean to neutral for any subtle expression; the original label keeps the
            one annotator who saw an emotion in the face in the target.

    Returns:
        (selection, targets): a boolean mask over `dataset` and the rows' targets.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {mode!r}; expected one of {', '.join(LABEL_MODES)}")
    if not 0 <= fer2013_weight <= 1:
        raise ValueError(f"fer2013_weight must be in [0, 1], got {fer2013_weight}")
    fer2013 = np.eye(len(classes), dtype=np.float32)[np.minimum(dataset.labels, len(classes) - 1)]
    fer2013_known = dataset.labels < min(len(classes), len(EMOTIONS))
    if mode == "fer2013":
        return fer2013_known, fer2013[fer2013_known]
    if dataset.votes is None:
        raise DataError(f"--labels {mode} needs FER+ votes ({VOTES_FILE}) for {dataset.source}")
    if mode == "ferplus-majority":
        labels = majority(dataset.votes, classes)
        selection = labels >= 0
        consensus = np.eye(len(classes), dtype=np.float32)[np.maximum(labels, 0)]
    else:
        counts = class_votes(dataset.votes, classes)
        selection = usable(dataset.votes) & (counts.sum(1) > 0)
        consensus = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    targets = (1 - fer2013_weight) * consensus + fer2013_weight * fer2013
    selection &= fer2013_known | (fer2013_weight == 0)
    return selection, targets[selection].astype(np.float32)
