"""Choose ensemble members on val: every combination of up to --max-members trained models,
each calibrated as `training.calibrate` would calibrate it, ranked on the FER+ majority.

    python -m training.choose --members runs/a/best.keras runs/b/best.keras runs/c/best.keras --data ../shared/datasets/fer2013 --max-members 2 --match-neutral

Each member runs once over val and its mirror image; a combination averages its members'
softmax heads with one temperature (and, with --match-neutral, the neutral shift) fitted
for it, exactly as the calibrated ensemble will be served with flip TTA. The table shows
both labelings, the clear faces and the neutral share, best FER+ first (the folder's labels
when val has no votes). Choosing on val is what the issue asks; a held-out check needs data
kept apart.

The cost per face is the number of forward passes: members, times two with flip TTA. So
`--tta both` also scores every combination without the mirror image, which answers whether a
latency budget is better spent on more members or on the flip (`bench.accuracy_bench` turns
passes into milliseconds).

--neutral-share S (implies --match-neutral) holds every combination's neutral calls to S of the
faces with a FER+ majority (the served model's share, say) instead of the majority's: at one
neutral share, a gain that only moves the neutral threshold disappears, and what is left is the
better model. --baseline M compares every row with member M alone (with flip TTA when scored so,
as served) face by face: the faces only the row gets right, those only M gets right, and the
exact McNemar p of that split, so a lead of a few faces is not mistaken for a better model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.calibrate import (
    add_neutral_share_option,
    calibration_labels,
    fit_neutral_shift,
    fit_temperature,
    head_probabilities,
    tempered,
)
from training.data import DataError, FaceDataset, load_split
from training.evaluate import Evaluation, score_all, with_votes
from training.ferplus import NEUTRAL
from training.metrics import mcnemar_p
from training.model_files import ModelFileError
from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT


@dataclass(frozen=True)
class Candidate:
    """One combination of members, calibrated, and its scores on val."""

    members: tuple[str, ...]
    networks: int
    flip_tta: bool
    temperature: float
    neutral_shift: float
    evaluation: Evaluation
    # per face with a label (`calibrate.calibration_labels`), whether the top class is right
    correct: np.ndarray = field(repr=False, compare=False)

    @property
    def passes(self) -> int:
        """Forward passes per face when served: the cost that --tta trades against members. A
        member that is itself an ensemble counts each of its networks."""
        return self.networks * (2 if self.flip_tta else 1)

    @property
    def rank_accuracy(self) -> float:
        return (self.evaluation.ferplus or self.evaluation.labels).accuracy


def member_heads(path: str, *faces: np.ndarray) -> np.ndarray:
    """The model's heads' probabilities (heads, views, N, classes), columns in canonical class order,
    on each array of uint8 faces (N, 48, 48) and its mirror image: views = 2 * len(faces), in that order.
    More arrays are other views of the same faces (`bench.tta_views`), read by one loaded model."""
    from training.model_files import read_model
    from webapp.vision.layers import model_classes

    model = read_model(path)
    classes = model_classes(model)
    order = [classes.index(name) for name in EMOTIONS_WITH_CONTEMPT[: len(classes)]]
    return np.concatenate([head_probabilities(model, images) for images in faces], axis=1)[..., order]


def calibrated(
    members: tuple[str, ...],
    heads: np.ndarray,
    val: FaceDataset,
    labels: np.ndarray,
    match_neutral: bool,
    flip_tta: bool = True,
    neutral_share: float | None = None,
) -> Candidate:
    """`members` (whose stacked heads are `heads`) with the temperature and neutral shift fitted
    on val against `labels` (`calibrate.calibration_labels`); without `flip_tta`, on the faces
    alone, not their mirror images. With `match_neutral` or a `neutral_share`, neutral is called on no
    more than `neutral_share` of the faces (default: the share the labels give it). `correct` is scored
    against `labels`, the majority over the members' classes: for 7-class members, not quite the faces
    and labels of the FER+ column, which also counts contempt."""
    if not flip_tta:
        heads = heads[:, :1]
    known = labels >= 0
    temperature = fit_temperature(heads[:, :, known], labels[known])
    shift = 0.0
    if match_neutral or neutral_share is not None:
        share = float((labels[known] == NEUTRAL).mean()) if neutral_share is None else neutral_share
        shift = fit_neutral_shift(heads[:, :, known], temperature, share)
    served = tempered(heads, temperature, shift)
    correct = served.argmax(1)[known] == labels[known]
    return Candidate(members, len(heads), flip_tta, temperature, shift, score_all(val, served), correct)


@dataclass(frozen=True)
class Paired:
    """A candidate against the baseline on the same faces."""

    only_this_right: int
    only_baseline_right: int

    @property
    def p(self) -> float:
        return mcnemar_p(self.only_this_right, self.only_baseline_right)

    def to_dict(self) -> dict:
        return {"only_this_right": self.only_this_right, "only_baseline_right": self.only_baseline_right, "p": self.p}


def baseline_of(candidates: list[Candidate], member: str) -> Candidate:
    """The row of `member` alone, with flip TTA when it was scored that way (as served)."""
    alone = [c for c in candidates if c.members == (member,)]
    return max(alone, key=lambda c: c.flip_tta)


def paired(candidate: Candidate, baseline: Candidate) -> Paired:
    return Paired(
        int((candidate.correct & ~baseline.correct).sum()), int((~candidate.correct & baseline.correct).sum())
    )


TTA_CHOICES = {"flip": (True,), "none": (False,), "both": (True, False)}


def rank(
    heads_by_member: dict[str, np.ndarray],
    val: FaceDataset,
    max_members: int,
    match_neutral: bool,
    tta: str = "flip",
    neutral_share: float | None = None,
) -> list:
    """Every combination of 1..`max_members` members, calibrated and scored with each of the
    `tta` forms (`TTA_CHOICES`), best first."""
    classes = EMOTIONS_WITH_CONTEMPT[: next(iter(heads_by_member.values())).shape[-1]]
    labels, _ = calibration_labels(val, classes)
    candidates = [
        calibrated(
            combo,
            np.concatenate([heads_by_member[m] for m in combo]),
            val,
            labels,
            match_neutral,
            flip,
            neutral_share,
        )
        for size in range(1, max_members + 1)
        for combo in itertools.combinations(heads_by_member, size)
        for flip in TTA_CHOICES[tta]
    ]
    return sorted(candidates, key=lambda c: -c.rank_accuracy)


def format_table(candidates: list[Candidate], baseline: Candidate | None = None) -> str:
    """The ranked rows; with a `baseline`, also the faces only each row gets right (+), those only the
    baseline gets right (-) and the McNemar p of that split."""
    versus = f"{'+':>6}{'-':>6}{'p':>7}" if baseline else ""
    lines = [
        f"{'FER+':>7}{'FER2013':>9}{'clear':>7}{'neutral':>9}{'ECE':>7}{'T':>6}{'shift':>7}{'TTA':>6}{'passes':>8}"
        f"{versus}  members"
    ]
    for c in candidates:
        if baseline:
            pair = paired(c, baseline)
            versus = f"{pair.only_this_right:>6}{pair.only_baseline_right:>6}{pair.p:>7.3f}"
        e = c.evaluation
        ferplus = f"{e.ferplus.accuracy:.4f}" if e.ferplus else "-"
        clear = f"{e.clear_non_neutral.accuracy:.4f}" if e.clear_non_neutral else "-"
        neutral = f"{e.neutral_share['model']:.3f}" if e.neutral_share else "-"
        ece = (e.ferplus or e.labels).ece
        lines.append(
            f"{ferplus:>7}{e.accuracy:>9.4f}{clear:>7}{neutral:>9}{ece:>7.3f}{c.temperature:>6.2f}"
            f"{c.neutral_shift:>7.2f}{'flip' if c.flip_tta else 'none':>6}{c.passes:>8}{versus}  {' + '.join(c.members)}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.choose",
        description=" ".join(__doc__.split("\n\n")[0].split()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--members", nargs="+", required=True, help="trained .keras models that output the same classes"
    )
    parser.add_argument("--data", required=True, help="dataset (CSV or folder) whose val split scores them")
    parser.add_argument("--votes", help="FER+ vote table (default: ferplus_votes.csv beside --data)")
    parser.add_argument("--max-members", type=int, default=2, help="largest combination tried")
    parser.add_argument(
        "--match-neutral", action="store_true", help="calibrate each with training.calibrate --match-neutral"
    )
    add_neutral_share_option(parser)
    parser.add_argument(
        "--tta",
        choices=sorted(TTA_CHOICES),
        default="flip",
        help="score each combination with flip TTA (as served), without it, or both ways",
    )
    parser.add_argument(
        "--baseline",
        metavar="MEMBER",
        help="one of --members (the served model, say): compare every row with it face by face (McNemar)",
    )
    parser.add_argument("--top", type=int, default=15, help="rows printed")
    parser.add_argument("--json", metavar="OUT", help="also write every row as JSON")
    args = parser.parse_args(argv)

    missing = [path for path in args.members if not Path(path).is_file()]
    if missing:
        print(f"error: model file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.baseline is not None and args.baseline not in args.members:
        print("error: --baseline must be one of --members", file=sys.stderr)
        return 2
    if args.max_members < 1:
        print("error: --max-members must be at least 1", file=sys.stderr)
        return 2
    try:
        val = with_votes(load_split(args.data, "val"), args.data, args.votes)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    match_neutral = args.match_neutral or args.neutral_share is not None
    if match_neutral and val.votes is None:
        print("error: --match-neutral and --neutral-share need FER+ votes", file=sys.stderr)
        return 2
    try:
        heads = {path: member_heads(path, val.images) for path in dict.fromkeys(args.members)}
        if len({h.shape[-1] for h in heads.values()}) > 1:
            print("error: the members output different numbers of classes", file=sys.stderr)
            return 2
        candidates = rank(heads, val, args.max_members, match_neutral, args.tta, args.neutral_share)
    except (ModelFileError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    baseline = baseline_of(candidates, args.baseline) if args.baseline else None
    print(format_table(candidates[: args.top], baseline))
    if args.json:
        rows = [
            {
                "members": c.members,
                "flip_tta": c.flip_tta,
                "passes": c.passes,
                "temperature": c.temperature,
                "neutral_shift": c.neutral_shift,
                "neutral_share_target": args.neutral_share,
                **c.evaluation.to_dict(),
                **({"vs_baseline": paired(c, baseline).to_dict()} if baseline else {}),
            }
            for c in candidates
        ]
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
