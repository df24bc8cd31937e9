"""Measure how FER-2013 frames a face relative to a BlazeFace box; sets preprocess.CROP_SCALE / CROP_SHIFT_Y.

    python -m bench.crop_calibration [--count 1500]

Each val image (the whole image is FER's crop) is upscaled 2x, padded, and run through
BlazeFace; the crop's side and centre are compared with the detected box.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from tests.harness import FER2013
from training.data import load_split
from webapp.vision import preprocess
from webapp.vision.detector import BlazeFaceDetector


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(FER2013 / "val"))
    parser.add_argument("--count", type=int, default=1500)
    args = parser.parse_args(argv)
    faces = load_split(args.data, "val").images[: args.count]
    detector = BlazeFaceDetector("short")
    scales, shifts = [], []
    for face in faces:
        canvas = cv2.copyMakeBorder(
            cv2.resize(face, (96, 96), interpolation=cv2.INTER_CUBIC), 48, 48, 48, 48, cv2.BORDER_REPLICATE
        )
        found = detector.detect(cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB))
        if len(found) == 1:
            box = found[0].box
            scales.append(96 / max(box.width, box.height))
            shifts.append((96 - (box.y + box.height / 2)) / box.height)
    print(f"faces: {len(faces)}, detected exactly once: {len(scales)}")
    print(f"{'':<26}{'median':>8}{'p25':>8}{'p75':>8}{'in use':>8}")
    print(
        f"{'crop side / box side':<26}{np.median(scales):>8.3f}{np.percentile(scales, 25):>8.3f}{np.percentile(scales, 75):>8.3f}{preprocess.CROP_SCALE:>8.3f}"
    )
    print(
        f"{'crop centre - box centre':<26}{np.median(shifts):>8.3f}{np.percentile(shifts, 25):>8.3f}{np.percentile(shifts, 75):>8.3f}{preprocess.CROP_SHIFT_Y:>8.3f}"
    )
    print("(centre offset in box heights, positive = lower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
