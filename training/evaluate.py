"""Evaluate a model on FER-2013 or on any folder of `<emotion>/*.jpg` face crops.

    python -m training.evaluate --data ../shared/datasets/fer2013/val --model models/emotion_float16.tflite

Prints per-class accuracy, macro-F1 and the confusion matrix, writes the confusion
matrix as a PNG, and prints `accuracy: 0.xxxx` on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.data import DataError, FaceDataset, load_split
from training.metrics import Report, format_report, save_confusion_png, score


def predict_labels(classifier, dataset: FaceDataset, batch_size: int = 256) -> np.ndarray:
    """Integer predictions of an `EmotionClassifier` for every face in `dataset`."""
    from tqdm import tqdm

    predictions = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="evaluating", unit="batch", disable=None, leave=False):
        predictions.append(classifier.predict_probabilities(dataset.images[start : start + batch_size]).argmax(1))
    return np.concatenate(predictions)


def evaluate(model_path: str, dataset: FaceDataset, flip_tta: bool = True) -> Report:
    """Score the model at `model_path` (.keras or .tflite) on `dataset`, as the server runs it."""
    from webapp.vision.classifier import EmotionClassifier

    return score(dataset.labels, predict_labels(EmotionClassifier(model_path, flip_tta=flip_tta), dataset))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.split("\n")[1],
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
    parser.add_argument("--no-tta", action="store_true", help="turn off horizontal-flip test-time augmentation")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    parser.add_argument(
        "--confusion-png", metavar="PNG", help="confusion matrix image (default: next to --json, or confusion.png)"
    )
    args = parser.parse_args(argv)
    try:
        dataset = load_split(args.data, args.split)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not Path(args.model).is_file():
        print(f"error: model file {args.model!r} not found", file=sys.stderr)
        return 2
    report = evaluate(args.model, dataset, flip_tta=not args.no_tta)
    png = args.confusion_png or (str(Path(args.json).with_suffix(".png")) if args.json else "confusion.png")
    save_confusion_png(
        report, png, title=f"{Path(args.model).name} on {Path(dataset.source).name}: accuracy {report.accuracy:.4f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"model": args.model, "data": dataset.source, "flip_tta": not args.no_tta, **report.to_dict()}, indent=2
            )
            + "\n"
        )
    print(f"model: {args.model}\ndata: {dataset.source}\nflip TTA: {not args.no_tta}")
    print(format_report(report))
    print(f"confusion matrix: {png}")
    print(f"accuracy: {report.accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
