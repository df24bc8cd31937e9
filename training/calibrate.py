"""Calibrate a model's confidence: one softmax temperature, fitted on val, baked into its weights.

    python -m training.calibrate --model runs/ensemble.keras --data ../shared/datasets/fer2013 --out runs/calibrated.keras

Models trained on vote distributions learn how split the annotators were: a face that 6 of
10 call happy gets 0.6, though the majority's label is right far more often than that, so
confidence understates accuracy against the majority. Dividing every softmax head's
logits by a temperature T (one for all members of an ensemble, applied before they are
averaged, as the server runs them, with or without flip TTA) fixes that without changing any
single model's ranking of classes. T minimises the negative log-likelihood of the labels:
the FER+ majority when the faces have votes, else the folder's labels. It is fitted on
val, so the expected calibration error is also printed for each half of val with T
fitted on the other half.

--match-neutral also lowers every head's neutral logit, by the least amount that makes the
model call no more faces of val neutral than the FER+ majority does: consensus training
leans to neutral, and a user who frowns must not be told they look neutral. --neutral-share S
implies it and holds neutral to S of those faces instead (e.g. the served model's share), so that
two candidates are compared at one neutral share and a gain that comes only from calling more
faces neutral shows as none. Shares count the faces that have a FER+ majority, as
`training.evaluate` does.

--flip-tta off fits the temperature on the faces alone, for a model to be served without flip
TTA; export it with `training.export --flip-tta off` too, which records the choice in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.data import DataError, load_split
from training.ferplus import NEUTRAL
from training.metrics import expected_calibration_error

TEMPERATURES = np.round(np.arange(0.30, 2.001, 0.01), 2)
NEUTRAL_SHIFTS = np.round(np.arange(0.0, 2.001, 0.02), 2)


def softmax_heads(model) -> list:
    """(sub-model, its softmax Dense layer) for the model, or for each member of an ensemble."""
    import keras

    # an ensemble averages its members' softmax outputs in a layer named "emotion" (training.ensemble)
    is_ensemble = isinstance(model.get_layer("emotion"), keras.layers.Average)
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)] if is_ensemble else [model]
    return [(member, member.get_layer("emotion")) for member in members]


def head_probabilities(model, images: np.ndarray, flip_tta: bool = True) -> np.ndarray:
    """Probabilities (heads, views, N, classes) of each softmax head, on faces and (with `flip_tta`,
    as the server runs it) their mirror images."""
    from webapp.vision.preprocess import to_model_input

    x = to_model_input(images)
    views = (x, x[:, :, ::-1]) if flip_tta else (x,)
    return np.stack(
        [[member.predict(view, batch_size=256, verbose=0) for view in views] for member, _ in softmax_heads(model)]
    )


def tempered(probabilities: np.ndarray, temperature: float, neutral_shift: float = 0.0) -> np.ndarray:
    """The served probabilities (N, classes) with every head's logits divided by `temperature`
    and its neutral logit lowered by `neutral_shift`."""
    logits = np.log(np.maximum(probabilities, 1e-12)) / temperature
    logits[..., NEUTRAL] -= neutral_shift
    scaled = np.exp(logits - logits.max(-1, keepdims=True))
    return (scaled / scaled.sum(-1, keepdims=True)).mean((0, 1))


def fit_neutral_shift(probabilities: np.ndarray, temperature: float, share: float) -> float:
    """The smallest shift in `NEUTRAL_SHIFTS` after which at most `share` of the faces are called neutral."""
    for shift in NEUTRAL_SHIFTS:
        if (tempered(probabilities, temperature, shift).argmax(1) == NEUTRAL).mean() <= share:
            return float(shift)
    return float(NEUTRAL_SHIFTS[-1])


def neutral_share_arg(text: str) -> float:
    """argparse type for --neutral-share: a share of faces, above 0 and at most 1."""
    share = float(text)
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, not {text}")
    return share


def add_neutral_share_option(parser: argparse.ArgumentParser) -> None:
    """--neutral-share, as calibrate and choose take it."""
    parser.add_argument(
        "--neutral-share",
        type=neutral_share_arg,
        metavar="SHARE",
        help="--match-neutral, holding neutral to this share of val's faces (those with a FER+ majority) instead of the majority's",
    )


def calibration_labels(val, classes: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """What a model over `classes` is calibrated against on `val`, and its name: the FER+ majority
    over those classes (a 7-class model is not asked for contempt) when val has votes, else the
    folder's labels. -1 marks faces without one (ties).

    Raises:
        DataError: without votes, for faces of an emotion outside `classes`.
    """
    from training.ferplus import majority

    if val.votes is None:
        val.check_classes(classes)
        return val.labels, "the folder's labels"
    return majority(val.votes, classes), "the FER+ majority"


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in `TEMPERATURES` with the lowest negative log-likelihood of `labels`."""
    rows = np.arange(len(labels))
    losses = [-np.log(tempered(probabilities, t)[rows, labels] + 1e-12).mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def ece(probabilities: np.ndarray, labels: np.ndarray, temperature: float, neutral_shift: float = 0.0) -> float:
    """The expected calibration error (10 bins) of the served probabilities against `labels`."""
    served = tempered(probabilities, temperature, neutral_shift)
    return expected_calibration_error(served.max(1), served.argmax(1) == labels)


def bake(model, temperature: float, neutral_shift: float = 0.0) -> None:
    """Divide each softmax head's kernel and bias by `temperature` and lower its neutral bias by
    `neutral_shift`: softmax(z / T - shift), at no cost when served."""
    for _, head in softmax_heads(model):
        kernel, bias = head.get_weights()
        bias = bias / temperature
        bias[NEUTRAL] -= neutral_shift
        head.set_weights([kernel / temperature, bias])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="trained .keras model or ensemble")
    parser.add_argument("--data", required=True, help="dataset (CSV or folder) whose val split fits the temperature")
    parser.add_argument("--out", required=True, help="where to write the calibrated .keras model")
    parser.add_argument("--votes", help="FER+ vote table (default: ferplus_votes.csv beside --data)")
    parser.add_argument(
        "--match-neutral",
        action="store_true",
        help="also lower the neutral logit until the model calls neutral no more faces of val than the FER+ majority does",
    )
    add_neutral_share_option(parser)
    parser.add_argument("--json", metavar="OUT", help="also write the fitted values as JSON (for training.card)")
    parser.add_argument(
        "--flip-tta",
        choices=("on", "off"),
        default="on",
        help="fit as the model will be served: with each face's mirror image averaged in, or without",
    )
    args = parser.parse_args(argv)
    flip_tta = args.flip_tta == "on"

    from training.evaluate import with_votes
    from training.model_files import ModelFileError, read_model
    from webapp.vision.layers import model_classes

    try:
        val = with_votes(load_split(args.data, "val"), args.data, args.votes)  # first: it is quicker to check
        model = read_model(args.model)
        labels, against = calibration_labels(val, model_classes(model))
    except (ModelFileError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    known = labels >= 0
    probabilities = head_probabilities(model, val.images[known], flip_tta)
    labels = labels[known]
    temperature = fit_temperature(probabilities, labels)
    print(
        f"fitted on {known.sum()} val faces against {against}, flip TTA {args.flip_tta}: temperature {temperature:.2f}"
    )
    print(
        f"ECE (10 bins): {ece(probabilities, labels, 1.0):.4f} before, {ece(probabilities, labels, temperature):.4f} after"
    )
    halves = np.random.default_rng(0).permutation(len(labels)) % 2 == 0
    for fit, check in ((halves, ~halves), (~halves, halves)):
        t = fit_temperature(probabilities[:, :, fit], labels[fit])
        print(
            f"  fitted on one half (T {t:.2f}), ECE on the other: {ece(probabilities[:, :, check], labels[check], 1.0):.4f}"
            f" before, {ece(probabilities[:, :, check], labels[check], t):.4f} after"
        )
    shift = 0.0
    if args.match_neutral or args.neutral_share is not None:
        if val.votes is None:
            print("error: --match-neutral and --neutral-share need FER+ votes", file=sys.stderr)
            return 2
        majority_share = float((labels == NEUTRAL).mean())
        share = majority_share if args.neutral_share is None else args.neutral_share
        unshifted = tempered(probabilities, temperature).argmax(1)
        shift = fit_neutral_shift(probabilities, temperature, share)
        served = tempered(probabilities, temperature, shift).argmax(1)
        before, after = float((unshifted == NEUTRAL).mean()), float((served == NEUTRAL).mean())
        held_to = "" if args.neutral_share is None else f", held to {share:.4f}"
        print(
            f"neutral: called on {before:.4f} of faces, the FER+ majority {majority_share:.4f}{held_to}; neutral logit lowered by"
            f" {shift:.2f}: {after:.4f}; FER+ majority accuracy {(served == labels).mean():.4f}"
            f" (was {(unshifted == labels).mean():.4f})"
        )
        if after > share:
            print(
                f"warning: even lowered by {shift:.2f}, the most tried, neutral is called on {after:.4f} of faces,"
                f" above {share:.4f}",
                file=sys.stderr,
            )
    bake(model, temperature, shift)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    if args.json:
        record = {
            "model": args.model,
            "out": args.out,
            "data": args.data,
            "against": against,
            "flip_tta": flip_tta,
            "temperature": temperature,
            "neutral_shift": shift,
            "match_neutral": bool(args.match_neutral),  # asked for even where no shift was needed
            **({} if args.neutral_share is None else {"neutral_share_target": args.neutral_share}),
            "ece_before": round(ece(probabilities, labels, 1.0), 4),
            "ece_after": round(ece(probabilities, labels, temperature, shift), 4),
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}" + ("" if flip_tta else "; export it with --flip-tta off, as it was fitted"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
