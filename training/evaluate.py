"""Evaluate a model on FER-2013 or on any folder of `<emotion>/*.jpg` face crops, against
the folder's labels and, where FER+ votes exist for the faces, against the FER+ majority.

    python -m training.evaluate --data ../shared/datasets/fer2013/val --model models/emotion_int8.tflite

For each labeling it prints accuracy, per-class accuracy, macro-F1, the expected
calibration error (10 bins) and the confusion matrix, and writes the matrix as a PNG.
With votes it adds the faces at least 7 of 10 annotators agree show one non-neutral
emotion, how often the model says neutral against how often the majority does, and how
often one annotator agrees with the majority of the others (a human reference), and
how the model answers where the folder's label and the majority agree and where they differ.
The folder may hold any subset of the model's classes. The last line is
`accuracy: 0.xxxx`, against the folder's labels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.data import DataError, FaceDataset, load_split
from training.ferplus import NEUTRAL, attach_votes, clear_majority, majority, one_annotator_agreement, votes_table
from training.metrics import Report, format_report, save_confusion_png, score
from training.model_files import ModelFileError, read_model
from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT


@dataclass(frozen=True)
class BothLabelings:
    """The model's answers on the faces with a FER+ majority, split by whether the folder's label
    agrees with that majority. Where the two differ no answer is right on both, so a model can
    score high on both labelings at once only by being right on nearly all the faces where they
    agree: FER+ accuracy + label accuracy <= 2 * agree_share * right_where_they_agree + (1 - agree_share)."""

    faces: int
    agree_share: float
    right_where_they_agree: float
    differ_says_majority: float
    differ_says_label: float

    @classmethod
    def of(cls, labels: np.ndarray, consensus: np.ndarray, predictions: np.ndarray) -> BothLabelings | None:
        agree = labels == consensus
        if agree.all() or not agree.any():
            return None
        differ = ~agree
        return cls(
            faces=len(labels),
            agree_share=round(float(agree.mean()), 4),
            right_where_they_agree=round(float((predictions[agree] == labels[agree]).mean()), 4),
            differ_says_majority=round(float((predictions[differ] == consensus[differ]).mean()), 4),
            differ_says_label=round(float((predictions[differ] == labels[differ]).mean()), 4),
        )


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on one dataset: against its folder labels, and against FER+ when the
    faces have votes (the majority with ties left out; the clear non-neutral faces; and the
    share of faces called neutral by the model and by the majority; and, on the same faces, how
    often one annotator agrees with the majority of the others, on average: the human reference)."""

    labels: Report
    ferplus: Report | None = None
    clear_non_neutral: Report | None = None
    neutral_share: dict[str, float] | None = None
    one_annotator_agreement: float | None = None
    both_labelings: BothLabelings | None = None

    @property
    def accuracy(self) -> float:
        return self.labels.accuracy

    def to_dict(self) -> dict:
        extra = {
            "ferplus_majority": self.ferplus and self.ferplus.to_dict(),
            "clear_non_neutral": self.clear_non_neutral and self.clear_non_neutral.to_dict(),
            "neutral_share": self.neutral_share,
            "ferplus_one_annotator_agreement": self.one_annotator_agreement,
            "both_labelings": self.both_labelings and asdict(self.both_labelings),
        }
        return {**self.labels.to_dict(), **{key: value for key, value in extra.items() if value is not None}}


def predict_probabilities(classifier, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities (N, classes) of an `EmotionClassifier` for uint8 faces (N, 48, 48), with the
    columns in `EMOTIONS_WITH_CONTEMPT` order (the order labels are scored in), whatever the file's."""
    from tqdm import tqdm

    classes = tuple(classifier.classes)
    canonical = EMOTIONS_WITH_CONTEMPT[: len(classes)]
    if set(classes) != set(canonical):
        raise ValueError(f"the model's classes {', '.join(classes)} are not {', '.join(canonical)}")
    batches = range(0, len(images), batch_size)
    probabilities = np.concatenate(
        [
            classifier.predict_probabilities(images[start : start + batch_size])
            for start in tqdm(batches, desc="evaluating", unit="batch", disable=None, leave=False)
        ]
    )
    return probabilities[:, [classes.index(name) for name in canonical]]


def score_all(dataset: FaceDataset, probabilities: np.ndarray) -> Evaluation:
    """Score probabilities (N, classes, in `EMOTIONS_WITH_CONTEMPT` order) on every labeling `dataset` has."""
    predictions = probabilities.argmax(1)
    labels = score(dataset.labels, predictions, probabilities)
    if dataset.votes is None:
        return Evaluation(labels)
    consensus = majority(dataset.votes)
    voted = consensus >= 0
    if not voted.any():
        return Evaluation(labels)
    clear = clear_majority(dataset.votes)
    clear = (clear >= 0) & (clear != NEUTRAL)
    return Evaluation(
        labels,
        ferplus=score(consensus[voted], predictions[voted], probabilities[voted]),
        clear_non_neutral=score(consensus[clear], predictions[clear], probabilities[clear]) if clear.any() else None,
        neutral_share={
            "model": round(float((predictions[voted] == NEUTRAL).mean()), 4),
            "ferplus_majority": round(float((consensus[voted] == NEUTRAL).mean()), 4),
        },
        one_annotator_agreement=round(float(one_annotator_agreement(dataset.votes)[voted].mean()), 4),
        both_labelings=BothLabelings.of(dataset.labels[voted], consensus[voted], predictions[voted]),
    )


def evaluate(model_path: str, dataset: FaceDataset, flip_tta: bool | None = None) -> Evaluation:
    """Score the model at `model_path` (.keras or .tflite) on `dataset`, as the server runs it
    (flip TTA None: as the model file says)."""
    from webapp.vision.classifier import EmotionClassifier

    classifier = EmotionClassifier(model_path, flip_tta=flip_tta)
    dataset.check_classes(classifier.classes)
    return score_all(dataset, predict_probabilities(classifier, dataset.images))


def with_votes(dataset: FaceDataset, data: str, votes: str | None) -> FaceDataset:
    """`dataset` with FER+ votes from `votes`, or from ferplus_votes.csv beside `data` when there is one."""
    table = votes_table(data, votes)
    return attach_votes(dataset, table) if table is not None else dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=" ".join(__doc__.split("\n\n")[0].split()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data", required=True, help="fer2013.csv, a dataset folder, or a folder of <emotion>/ image folders"
    )
    parser.add_argument("--model", required=True, help=".keras or .tflite model")
    parser.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test"),
        help="split to use when --data is a CSV or a dataset root",
    )
    parser.add_argument("--votes", help="FER+ vote table (default: ferplus_votes.csv beside --data, if any)")
    tta = parser.add_mutually_exclusive_group()
    tta.add_argument(
        "--flip-tta",
        choices=("on", "off"),
        help="average each face with its mirror image, or not (default: as the model file says, as served)",
    )
    tta.add_argument("--no-tta", dest="flip_tta", action="store_const", const="off", help="the same as --flip-tta off")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    parser.add_argument(
        "--confusion-png",
        metavar="PNG",
        help="confusion matrix image (default: next to --json, or confusion.png); FER+'s gets a -ferplus suffix",
    )
    args = parser.parse_args(argv)
    try:
        dataset = with_votes(load_split(args.data, args.split), args.data, args.votes)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from webapp.vision.classifier import EmotionClassifier

    chosen_tta = None if args.flip_tta is None else args.flip_tta == "on"  # None: as the model file says
    try:
        classifier = read_model(args.model, lambda path: EmotionClassifier(path, flip_tta=chosen_tta))
        dataset.check_classes(classifier.classes)
    except (ModelFileError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    flip_tta = classifier.flip_tta
    result = score_all(dataset, predict_probabilities(classifier, dataset.images))
    png = Path(args.confusion_png or (Path(args.json).with_suffix(".png") if args.json else "confusion.png"))
    for written in (png, Path(args.json or png)):
        written.parent.mkdir(parents=True, exist_ok=True)
    name = f"{Path(args.model).name} on {Path(dataset.source).name}"
    save_confusion_png(result.labels, str(png), title=f"{name}, folder labels: accuracy {result.labels.accuracy:.4f}")
    print(f"model: {args.model}\ndata: {dataset.source}\nflip TTA: {flip_tta}\n")
    print(f"== against the folder's labels\n{format_report(result.labels)}\nconfusion matrix: {png}\n")
    if result.ferplus is not None:
        ferplus_png = png.with_name(f"{png.stem}-ferplus{png.suffix}")
        save_confusion_png(
            result.ferplus, str(ferplus_png), title=f"{name}, FER+ majority: accuracy {result.ferplus.accuracy:.4f}"
        )
        print(
            f"== against the FER+ majority (ties and mostly unknown/not-a-face left out)\n{format_report(result.ferplus)}"
        )
        print(f"confusion matrix: {ferplus_png}\n")
        if result.clear_non_neutral is not None:
            clear = result.clear_non_neutral
            print(f"clear non-neutral faces (>= 7 of 10 agree): accuracy {clear.accuracy:.4f} of {clear.count}")
        share = result.neutral_share
        print(f"called neutral: model {share['model']:.4f}, FER+ majority {share['ferplus_majority']:.4f}")
        print(
            f"an annotator against the majority of the face's other annotators, on average (human reference): {result.one_annotator_agreement:.4f}"
        )
        if (both := result.both_labelings) is not None:
            print(
                f"both labelings: they agree on {both.agree_share:.4f} of the {both.faces} faces, and the model is right"
                f" on {both.right_where_they_agree:.4f} of those; where they differ it gives the FER+ majority on"
                f" {both.differ_says_majority:.4f} and the folder's label on {both.differ_says_label:.4f}"
            )
        print(f"FER+ majority accuracy: {result.ferplus.accuracy:.4f}")
    if args.json:
        record = {"model": args.model, "data": dataset.source, "flip_tta": flip_tta, **result.to_dict()}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"accuracy: {result.labels.accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
