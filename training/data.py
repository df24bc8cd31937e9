"""Load FER-2013 from the Kaggle CSV or from `<split>/<emotion>/*.jpg` folders.

Every image is decoded by the server's decoder (`webapp.vision.imaging`: EXIF orientation, 16-bit and
alpha images) and goes through `webapp.vision.preprocess.face_to_input`, so arbitrary face crops (any
size, colour or gray) come out exactly as the server would prepare them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from webapp.vision.budget import DecodeLimits
from webapp.vision.imaging import ALLOWED_FORMATS, ImageError, decode_opened, open_image
from webapp.vision.labels import EMOTIONS, EMOTIONS_WITH_CONTEMPT, NUM_CLASSES, index_of
from webapp.vision.preprocess import INPUT_SIZE, face_to_input, to_grayscale

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm"}
# the server's formats, and PGM (Pillow's PPM family), which face datasets use
FACE_FILE_FORMATS = ALLOWED_FORMATS | {"PPM"}
# CSV `Usage` values for each split name; folder layouts name the held-out split val/ or test/
# (a test/ folder that mixes PublicTest_ and PrivateTest_ files, as Kaggle's does, is split by them).
CSV_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FOLDER_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "publictest", "test"),
    "test": ("test", "privatetest"),
}


class DataError(ValueError):
    """Raised for a dataset that cannot be read: wrong path, unknown class, bad image."""


@dataclass(frozen=True)
class FaceDataset:
    """Faces as uint8 (N, 48, 48) with integer labels in `EMOTIONS_WITH_CONTEMPT` order
    (FER-2013's 7 classes, then contempt for folders that have it).

    `keys` names each image for joining other labels to it (see `training.ferplus`):
    `<emotion>/<file name>` for folders (the emotion lowercased, as FER+'s table writes it), `row:<n>`
    (the data row of the CSV, from 0) for `fer2013.csv`.
    `votes`, once attached, holds FER+'s ten vote counts per image (NaN where FER+ has none).
    """

    images: np.ndarray
    labels: np.ndarray
    source: str
    keys: tuple[str, ...] | None = None
    votes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> np.ndarray:
        """Number of images per class, in `EMOTIONS` order (8 entries when contempt is present)."""
        return np.bincount(self.labels, minlength=NUM_CLASSES)

    def check_classes(self, classes: tuple[str, ...]) -> None:
        """Raise DataError when the faces are labelled with an emotion outside a model's `classes`
        (contempt faces for a 7-class model): it could never be right on them."""
        present = {EMOTIONS_WITH_CONTEMPT[label] for label in np.unique(self.labels)}
        if present - set(classes):
            raise DataError(
                f"{self.source} has {', '.join(sorted(present - set(classes)))} faces, which the model cannot "
                f"answer (its classes: {', '.join(classes)}); leave that folder out"
            )

    def subset(self, selection: np.ndarray) -> FaceDataset:
        """The images picked by a boolean mask or an index array, with their keys and votes."""
        keys = tuple(np.asarray(self.keys, dtype=object)[selection]) if self.keys is not None else None
        votes = self.votes[selection] if self.votes is not None else None
        return replace(self, images=self.images[selection], labels=self.labels[selection], keys=keys, votes=votes)


def load_split(path: str | os.PathLike, split: str) -> FaceDataset:
    """Load one split ("train", "val" or "test") from a CSV file or a dataset folder.

    Args:
        path: `fer2013.csv`, a folder holding `<split>/<emotion>/` folders, or a folder
            of `<emotion>/` folders (then `split` is ignored). A held-out folder that mixes
            `PublicTest_` and `PrivateTest_` files gives val the first and test the second.
        split: which split to read.

    Raises:
        DataError: for a missing path, a missing split, an unknown class folder or an
            unreadable image.
    """
    path = Path(path)
    if split not in CSV_USAGE:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(CSV_USAGE)}")
    if not path.exists():
        raise DataError(f"dataset path {str(path)!r} does not exist")
    if path.is_file():
        return load_csv(path, CSV_USAGE[split])
    if _is_class_folder(path):
        return load_folder(path)
    folder = _split_folder(path, split)
    if folder is not None:
        return load_folder(folder, _held_out_prefix(folder, split))
    raise DataError(
        f"{str(path)!r} has no folder for split {split!r} (looked for {', '.join(FOLDER_ALIASES[split])}) "
        f"and no emotion folders ({', '.join(EMOTIONS)})"
    )


def has_split(path: str | os.PathLike, split: str) -> bool:
    """Whether `path` can hold `split`: a CSV or a folder of `<emotion>/` folders always can (their
    rows or the folder itself are read); a dataset folder only with a folder for it."""
    path = Path(path)
    if not path.is_dir() or _is_class_folder(path):
        return path.exists()
    return _split_folder(path, split) is not None


def check_distinct_splits(path: str | os.PathLike) -> None:
    """Raise DataError when `path` would give train and val the same images: a folder of
    `<emotion>/` folders is read whole for every split."""
    path = Path(path)
    if path.is_dir() and _is_class_folder(path):
        raise DataError(
            f"{str(path)!r} holds emotion folders itself, so it would be both train and val: "
            f"pass the folder that holds train/ and val/ (or test/)"
        )


def _held_out_prefix(folder: Path, split: str) -> str | None:
    """`PublicTest_` or `PrivateTest_` when `folder` mixes FER-2013's two held-out sets, as Kaggle's
    test/ folder does, so val and test each keep theirs (as the CSV's Usage splits them) and model
    selection never sees the test faces; None otherwise."""
    if split == "train":
        return None
    prefixes = {file.name.split("_")[0] for class_dir in _subfolders(folder) for file in class_dir.iterdir()}
    return f"{CSV_USAGE[split]}_" if {CSV_USAGE["val"], CSV_USAGE["test"]} <= prefixes else None


def _split_folder(path: Path, split: str) -> Path | None:
    """The folder of a dataset folder holding `split`, by its first alias present; None if none is."""
    for name in FOLDER_ALIASES[split]:
        for child in path.iterdir():
            if child.is_dir() and child.name.lower() == name:
                return child
    return None


def load_csv(path: str | os.PathLike, usage: str | None = None) -> FaceDataset:
    """Load the Kaggle `fer2013.csv` (columns emotion, pixels[, Usage]), keeping rows of `usage`."""
    images, labels, keys = [], [], []
    with csv_rows(path) as reader:
        missing = {"emotion", "pixels"} - set(reader.fieldnames)
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected emotion,pixels,Usage")
        if usage is not None and "Usage" not in reader.fieldnames:
            raise DataError(f"{path}: no Usage column, cannot select the {usage} rows")
        for line, row in enumerate(reader, start=2):
            key = f"row:{line - 2}"  # FER+ numbers fer2013.csv's data rows from 0
            if usage is not None and (row["Usage"] or "").strip() != usage:
                continue
            try:
                label = int(row["emotion"])
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)  # NumPy 2: OverflowError past 0..255
            except (TypeError, ValueError, OverflowError) as error:
                raise DataError(f"{path}:{line}: unreadable row ({error})") from None
            if not 0 <= label < NUM_CLASSES:
                raise DataError(f"{path}:{line}: emotion {label} is outside 0..{NUM_CLASSES - 1}")
            if pixels.size != INPUT_SIZE * INPUT_SIZE:
                raise DataError(f"{path}:{line}: {pixels.size} pixels, expected {INPUT_SIZE * INPUT_SIZE}")
            images.append(pixels.reshape(INPUT_SIZE, INPUT_SIZE))
            labels.append(label)
            keys.append(key)
    if not images:
        raise DataError(f"{path}: no rows with Usage == {usage!r}")
    return FaceDataset(np.stack(images), np.array(labels, dtype=np.int64), f"{path}[{usage}]", tuple(keys))


@contextmanager
def csv_rows(path: str | os.PathLike) -> Iterator[csv.DictReader]:
    """A `csv.DictReader` over a CSV file, its column names stripped and a byte-order mark dropped
    (Kaggle's other copy of FER-2013, icml_face_data.csv, writes `emotion, Usage, pixels`).

    Raises:
        DataError: for a file that is not CSV text (an archive not yet extracted), also while reading rows.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
            yield reader
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a CSV text file ({error}); extract a .zip or .tar.gz first") from None


def load_folder(path: str | os.PathLike, prefix: str | None = None) -> FaceDataset:
    """Load a folder of `<emotion>/<image>` files, only those whose names start with `prefix` if
    given; every subfolder must be a known emotion (FER-2013's 7, or contempt)."""
    path = Path(path)
    class_dirs = _subfolders(path)
    if not class_dirs:
        raise DataError(f"{path}: no emotion folders ({', '.join(EMOTIONS)})")
    images, labels, keys = [], [], []
    for class_dir in class_dirs:
        try:
            label = index_of(class_dir.name, EMOTIONS_WITH_CONTEMPT)
        except ValueError as error:
            raise DataError(f"{class_dir}: {error}") from None
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.name.startswith(prefix or ""):
                continue
            images.append(read_face(file))
            labels.append(label)
            keys.append(image_key(class_dir.name, file.name))
    if not images:
        raise DataError(f"{path}: the emotion folders hold no images")
    source = f"{path}[{prefix}*]" if prefix else str(path)
    return FaceDataset(np.stack(images), np.array(labels, dtype=np.int64), source, tuple(keys))


def image_key(class_folder: str, file_name: str) -> str:
    """The key of a folder image: `<emotion>/<file name>`, the emotion lowercased, so that a copy
    with `Angry/` folders joins FER+'s table (which writes `angry/`) as well as one with `angry/`."""
    return f"{class_folder.lower()}/{file_name}"


def read_face(file: str | os.PathLike) -> np.ndarray:
    """Read one face crop from disk as the model's 48x48 uint8 grayscale form, decoded as the server
    decodes an upload: a phone crop with an EXIF rotation or a 16-bit PNG looks here as it will there."""
    try:
        rgb = decode_opened(open_image(Path(file).read_bytes(), DecodeLimits(), FACE_FILE_FORMATS)).rgb
    except (OSError, ImageError) as error:
        raise DataError(f"{file}: not a readable image ({error})") from None
    return face_to_input(to_grayscale(rgb))


def _subfolders(path: Path) -> list[Path]:
    """The folders in `path`, without hidden ones and tools' (.ipynb_checkpoints, __MACOSX), which hold no classes."""
    return sorted(child for child in path.iterdir() if child.is_dir() and not child.name.startswith((".", "__")))


def _is_class_folder(path: Path) -> bool:
    names = {child.name.lower() for child in _subfolders(path)}
    return bool(names) and names <= set(EMOTIONS_WITH_CONTEMPT)
