"""Measure how FER-2013 frames a face relative to each detector's box: sets each detector's `Framing`.

    python -m bench.crop_calibration [--count 1500] [--accuracy]

Each val image (the whole image is FER's crop) is upscaled 2x, padded, and run through the
detector; the crop's side and centre are compared with the detected box. Table 1: the medians
beside the framing each detector uses. Table 2 (--accuracy, all val faces each detector finds
exactly once): the served model's accuracy on crops framed by the detector's own framing
against the same crops framed by short-range BlazeFace's (the one framing every detector
used before), both labelings, in one run.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from tests.harness import FER2013
from training.data import EMOTIONS_WITH_CONTEMPT, load_split
from training.ferplus import attach_votes, majority, votes_table
from webapp.vision.detector import BlazeFaceDetector, HaarFaceDetector
from webapp.vision.preprocess import DEFAULT_FRAMING, face_to_input


def padded(face: np.ndarray) -> np.ndarray:
    """A 48x48 FER face upscaled to 96 px in a 192 px canvas: a detector finds it there."""
    big = cv2.resize(face, (96, 96), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, 48, 48, 48, 48, cv2.BORDER_REPLICATE)


def single_boxes(detector, faces: np.ndarray) -> list:
    """Each face's detection when the detector finds exactly one face, else None."""
    found = []
    for face in faces:
        detections = detector.detect(cv2.cvtColor(padded(face), cv2.COLOR_GRAY2RGB))
        found.append(detections[0] if len(detections) == 1 else None)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(FER2013 / "val"))
    parser.add_argument("--count", type=int, default=1500, help="val faces measured for table 1")
    parser.add_argument("--accuracy", action="store_true", help="also table 2, on every val face")
    parser.add_argument("--model", default="models/emotion_int8.tflite", help="classifier for table 2")
    args = parser.parse_args(argv)
    dataset = load_split(args.data, "val")
    detectors = {
        "BlazeFace short": BlazeFaceDetector("short"),
        "BlazeFace full": BlazeFaceDetector("full"),
        "Haar": HaarFaceDetector(),
    }
    faces = dataset.images if args.accuracy else dataset.images[: args.count]
    found = {name: single_boxes(detector, faces) for name, detector in detectors.items()}

    print(f"val faces: {len(faces)} (table 1 from the first {min(args.count, len(faces))})")
    print(
        f"{'detector':<18}{'found once':>11}{'scale':>8}{'p25':>7}{'p75':>7}{'in use':>8}{'shift':>8}{'p25':>7}{'p75':>7}{'in use':>8}"
    )
    for name, detections in found.items():
        boxes = [d.box for d in detections[: args.count] if d is not None]
        scales = [96 / max(box.width, box.height) for box in boxes]
        shifts = [(96 - (box.y + box.height / 2)) / box.height for box in boxes]
        if not boxes:
            print(f"{name:<18}{0:>11}  (no face found once: nothing to measure)")
            continue
        framing = next(d.framing for d in detections if d is not None)
        print(
            f"{name:<18}{len(boxes):>11}{np.median(scales):>8.3f}{np.percentile(scales, 25):>7.3f}"
            f"{np.percentile(scales, 75):>7.3f}{framing.scale:>8.3f}{np.median(shifts):>8.3f}"
            f"{np.percentile(shifts, 25):>7.3f}{np.percentile(shifts, 75):>7.3f}{framing.shift_y:>8.3f}"
        )
    print("(scale: crop side / box side; shift: crop centre - box centre, in box heights, positive = lower)")
    if args.accuracy:
        accuracy_table(args, dataset, found)
    return 0


def accuracy_table(args, dataset, found) -> None:
    """Table 2: each detector's own framing against the shared one, on the faces it found once."""
    from webapp.vision.classifier import EmotionClassifier

    classifier = EmotionClassifier(args.model)
    classes = tuple(classifier.classes)
    table = votes_table(FER2013)
    consensus = majority(attach_votes(dataset, table).votes, classes) if table else None
    fer2013 = np.array([classes.index(EMOTIONS_WITH_CONTEMPT[label]) for label in dataset.labels])
    print(f"\nserved model {args.model}, crops of each detector's boxes (FER+ = majority, ties left out)")
    print(f"{'detector':<18}{'faces':>7}{'framing':>22}{'FER+':>8}{'FER-2013':>10}")
    for name, detections in found.items():
        picked = [i for i, d in enumerate(detections) if d is not None]
        if not picked:
            continue
        for label, framing in (("shared (short's)", DEFAULT_FRAMING), ("its own", detections[picked[0]].framing)):
            crops = []
            for i in picked:
                box = detections[i].box
                crops.append(face_to_input(padded(dataset.images[i]), (box.x, box.y, box.width, box.height), framing))
            predicted = classifier.predict_probabilities(np.stack(crops)).argmax(1)
            fer_plus = "-"
            if consensus is not None:
                agreed = consensus[picked] >= 0
                fer_plus = f"{(predicted[agreed] == consensus[picked][agreed]).mean():.4f}"
            print(f"{name:<18}{len(picked):>7}{label:>22}{fer_plus:>8}{(predicted == fer2013[picked]).mean():>10.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
