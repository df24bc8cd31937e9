"""Which test-time views pay for their cost: FER+ accuracy of trained models averaged over the face,
its mirror image, small shifts and zooms, against the forward passes per face each set costs.

    python -m bench.tta_views --members checkpoints/sc-w64-a20-s51/best.keras

The server averages each face with its mirror image (flip TTA). More views (the face moved by two
pixels, or zoomed) could average away more of a detector box's jitter, at one forward pass per
view and member. Every row is calibrated as it would be served (`training.calibrate`: one
temperature, and the neutral shift of `--match-neutral`, fitted on val for that set of views), then
scored on val (both labelings, the clear faces). Rows are chosen on val, so differences under
about 0.3 points (10 of 3,422 faces) are noise. `passes` is the cost; a second table times the
served model file (`--served`, flip TTA off) on batches of as many views as each set has, which is
what serving that set would cost per face (the served pair with flip TTA is 2 views, 4 passes).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

from tests.harness import FER2013
from training.calibrate import calibration_labels
from training.choose import calibrated, member_heads
from training.data import FaceDataset, load_split
from training.evaluate import with_votes
from training.export import median_latency_ms
from webapp.config import DEFAULT_MODEL
from webapp.vision.classifier import EmotionClassifier
from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT
from webapp.vision.preprocess import INPUT_SIZE

SHIFT_PIXELS = 2  # a BlazeFace box moves about this much between frames of a still face (48-pixel crop)


def moved(faces: np.ndarray, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """uint8 faces (N, 48, 48) zoomed by `scale` about their centre and shifted by (dx, dy) pixels,
    edges repeated (a crop that moved, not a black border)."""
    centre = (INPUT_SIZE - 1) / 2
    matrix = cv2.getRotationMatrix2D((centre, centre), 0, scale)
    matrix[:, 2] += (dx, dy)
    size = (INPUT_SIZE, INPUT_SIZE)
    return np.stack(
        [cv2.warpAffine(face, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for face in faces]
    )


# each view is also taken of the mirror image ("<name> mirrored")
VIEWS = {
    "face": {},
    "zoom in 8%": {"scale": 1.08},
    "zoom out 7%": {"scale": 0.93},
    "right": {"dx": SHIFT_PIXELS},
    "left": {"dx": -SHIFT_PIXELS},
    "down": {"dy": SHIFT_PIXELS},
    "up": {"dy": -SHIFT_PIXELS},
}
VIEW_NAMES = tuple(name + suffix for name in VIEWS for suffix in ("", " mirrored"))  # as member_heads returns them
VIEW_SETS = {
    "face only": ("face",),
    "flip (served)": ("face", "face mirrored"),
    "flip + zoom in": ("face", "face mirrored", "zoom in 8%", "zoom in 8% mirrored"),
    "flip + zoom out": ("face", "face mirrored", "zoom out 7%", "zoom out 7% mirrored"),
    "flip + right": ("face", "face mirrored", "right", "right mirrored"),
    "flip + 4 shifts": ("face", "face mirrored", "right", "left", "down", "up"),
    "all 14": VIEW_NAMES,
}


def view_heads(model_path: str, val: FaceDataset) -> dict[str, np.ndarray]:
    """The model's probabilities (heads, 1, N, classes), canonical class order, on every view of val's faces."""
    heads = member_heads(model_path, *(moved(val.images, **move) for move in VIEWS.values()))
    return {name: heads[:, index : index + 1] for index, name in enumerate(VIEW_NAMES)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tta_views", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--members", nargs="+", required=True, help="trained .keras models (8 classes, FER+)")
    parser.add_argument("--data", default=str(FER2013), help="dataset whose val split (with FER+ votes) scores them")
    parser.add_argument("--served", default=str(DEFAULT_MODEL), help="model file timed per number of views")
    parser.add_argument("--repeats", type=int, default=300, help="calls timed per number of views")
    args = parser.parse_args(argv)
    missing = [path for path in (*args.members, args.served) if not Path(path).is_file()]
    if missing:
        print(f"error: model file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    val = with_votes(load_split(args.data, "val"), args.data, None)
    if val.votes is None:
        print("error: the val split has no FER+ votes to score against", file=sys.stderr)
        return 2
    views = {path: view_heads(path, val) for path in args.members}
    labels, _ = calibration_labels(val, EMOTIONS_WITH_CONTEMPT[: next(iter(views.values()))["face"].shape[-1]])

    print(f"{'FER+':>7}{'FER2013':>9}{'clear':>7}{'passes':>8}  {'views':<17} members")
    groups = [tuple(args.members)] + ([(path,) for path in args.members] if len(args.members) > 1 else [])
    for members in groups:
        for set_name, names in VIEW_SETS.items():
            heads = np.concatenate([np.concatenate([views[path][name] for name in names], axis=1) for path in members])
            scores = calibrated(members, heads, val, labels, match_neutral=True).evaluation
            print(
                f"{scores.ferplus.accuracy:>7.4f}{scores.accuracy:>9.4f}{scores.clear_non_neutral.accuracy:>7.4f}"
                f"{len(members) * len(names):>8}  {set_name:<17} {' + '.join(members)}",
                flush=True,
            )

    served = EmotionClassifier(args.served, flip_tta=False)
    print(f"\n{'views':>5}  ms/face  ({args.served}, batch of the views, median of {args.repeats})")
    for count in sorted({len(names) for names in VIEW_SETS.values()}):
        print(f"{count:>5}  {median_latency_ms(served, args.repeats, faces=count):7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
