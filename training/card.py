"""Write the model card (models/README.md) from a run folder, export.json and an evaluation report.

    python -m training.card --run runs/NAME [runs/OTHER/last.keras ...] --models models --report models/eval_val.json

Each --run is a run folder (its best.keras is the model) or a checkpoint file inside one.
A run started with --init-from is shown after the run it was fine-tuned from, when that
model file sits in a run folder (e.g. `checkpoints/NAME/last.keras`). Every figure in the
card is read from those files, so the card cannot drift from the runs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from training.augment import ERASE_SCALE
from training.slim import is_slim
from webapp.vision.labels import EMOTIONS

LABELS = {
    "fer2013": "FER-2013's label (one annotator per image)",
    "ferplus-majority": "the FER+ majority of ten annotators (ties left out)",
    "ferplus-votes": "the FER+ vote distribution of ten annotators (unknown and not-a-face votes dropped)",
}


def _read_run(path: Path) -> dict:
    """What the card needs from one training run: a run folder, or a checkpoint file in one."""
    run, checkpoint = (path.parent, path.name) if path.is_file() else (path, "best.keras")
    with open(run / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    summary = (run / "model_summary.txt").read_text()
    params = next(
        (line.split(":", 1)[1].split("(")[0].strip() for line in summary.splitlines() if "Total params" in line), "0"
    )
    hparams = json.loads((run / "hparams.json").read_text())
    source = Path(hparams["init_from"]) if hparams.get("init_from") else None
    return {
        "name": run.name,
        "dir": run,
        "checkpoint": checkpoint,
        "last": log[-1],
        "parent": _read_run(source) if source and (source.parent / "hparams.json").is_file() else None,
        "hparams": hparams,
        "state": json.loads((run / "state.json").read_text()),
        "best": max(log, key=lambda row: float(row["val_accuracy"])),
        "params": int(params.replace(",", "")),
    }


def _lineage(run: dict) -> list[dict]:
    """The run and the runs it was fine-tuned from, first trained first."""
    return (_lineage(run["parent"]) if run["parent"] else []) + [run]


def _training_seconds(run: dict) -> float:
    return sum(sum(stage["state"]["epoch_seconds"]) for stage in _lineage(run))


def _augmentation(hparams: dict, served: bool) -> str:
    """The augmentation bullet; `served`: the run's model is the one served (not fine-tuned further)."""
    from training.augment import AUGMENTATION_BLUR_SIGMA

    blur = (
        (
            f" Served behind an `InferenceBlur` (3x3 Gaussian, sigma {AUGMENTATION_BLUR_SIGMA:.3f}) that gives held-out faces"
            " the softness the three resamplings give training images."
        )
        if served
        else ""
    )
    return {
        "full": "- Augmentation: horizontal flip, rotation +-10 deg, zoom 10%, shift 10%, contrast 30%." + blur,
        "sharp": "- Augmentation `--augment sharp`: horizontal flip, whole-pixel shift 10%, contrast 30%; no resampling, so training faces"
        " are as sharp as held-out ones and the model is served without an `InferenceBlur`.",
        "none": "- No augmentation.",
    }[hparams["augment"]]


def _recipe(run: dict, served: bool = True) -> list[str]:
    """Markdown bullets for one run's recipe, time and served checkpoint, after those of the run it was fine-tuned from."""
    lines = []
    if run["parent"]:
        if not run["parent"]["parent"]:  # the lineage's first run, named once
            lines += [f"Trained as `{run['parent']['name']}`:", ""]
        lines += [*_recipe(run["parent"], served=False)]
        lines += [
            "",
            f"then fine-tuned from `{run['hparams']['init_from']}` as `{run['name']}` (a fresh optimizer and schedule"
            + (
                f"; first widened to width {run['hparams']['widen']} by `--widen`, computing the same function but for"
                " a little noise on the copied channels):"
                if run["hparams"].get("widen")
                else "):"
            ),
            "",
        ]
    hparams, seconds = run["hparams"], run["state"]["epoch_seconds"]
    weights, classes = hparams["class_weights"], hparams.get("classes", 7)
    is_best = run["checkpoint"] == "best.keras"
    used = run["best"] if is_best else run["last"]
    lines += [
        f"- {hparams['epochs']} epochs, batch {hparams['batch_size']}, AdamW (peak lr {hparams['lr']}, weight decay {hparams['weight_decay']}),"
        f" {hparams['warmup_epochs']:g} warm-up epoch then cosine decay; label smoothing {hparams['label_smoothing']}; dropout {hparams['dropout']}; seed {hparams['seed']}"
        + (
            f"; validated and saved as an exponential moving average of the weights (`--ema {hparams['ema']:g}`)"
            if hparams.get("ema")
            else ""
        )
        + (f"; sharpness-aware steps of radius {hparams['sam']:g} (`--sam`)." if hparams.get("sam") else "."),
        f"- Class imbalance: `--class-weights {weights}`"
        + {
            "sqrt": f": each class's loss is weighted by (N / ({classes} n_c)) ** 0.5, a softened inverse frequency.",
            "balanced": f": each class's loss is weighted by N / ({classes} n_c).",
            "none": ": no weights; every image counts the same, which favours overall accuracy over rare-class recall.",
        }[weights],
        _labels(hparams) + _teacher(run),
        _augmentation(hparams, served)
        + (
            f" Random erasing (`--erase {hparams['erase']:g}`): that share of faces had a rectangle of"
            f" {ERASE_SCALE[0]:.0%}-{ERASE_SCALE[1]:.0%} of the image replaced by noise."
            if hparams.get("erase")
            else ""
        )
        + (
            f" Mixup (`--mixup {hparams['mixup']:g}`): each image and its target blended with another's of the batch."
            if hparams.get("mixup")
            else ""
        ),
        f"- {'Best checkpoint' if is_best else 'Checkpoint used: the last'}, epoch {int(used['epoch']) + 1}"
        f" (`{run['checkpoint']}`; val accuracy {float(used['val_accuracy']):.4f}"
        + (" against the FER+ majority" if hparams.get("labels", "fer2013") != "fer2013" else "")
        + " as logged in training: Keras, no TTA).",
        f"- Training time on the 2-core CPU: {sum(seconds) / 3600:.2f} h, {sorted(seconds)[len(seconds) // 2]:.0f} s per epoch (median; the machine was shared with other work).",
        _kept(run),
    ]
    if hparams.get("note"):
        lines.append(f"- History: {hparams['note']}.")
    return lines


def _labels(hparams: dict) -> str:
    """The targets bullet: which labels, which classes, and the loss adjustments."""
    mode = hparams.get("labels", "fer2013")
    line = f"- Targets `--labels {mode}`: {LABELS[mode]}, over {hparams.get('classes', 7)} classes"
    if mode != "fer2013" and hparams.get("fer2013_weight"):
        line += f"; {hparams['fer2013_weight']:g} of each target is FER-2013's label (`--fer2013-weight`)"
    if hparams.get("logit_adjust"):
        line += f"; logit-adjusted loss, tau {hparams['logit_adjust']:g}"
    return line + "."


def _teacher(run: dict) -> str:
    """What the run distilled, if it had a teacher; the teacher's probabilities are kept with the run."""
    hparams = run["hparams"]
    if not hparams.get("teacher"):
        return ""
    return (
        f" Distilled: each target is {1 - hparams['teacher_weight']:g} that label target and {hparams['teacher_weight']:g}"
        f" the probabilities `{hparams['teacher']}` (a model or ensemble, flip TTA) gives the unaugmented face"
        f" (`--teacher`); those probabilities are kept"
        f" in `{run['dir'] / 'teacher.npz'}`, so the run can be repeated without the teacher's weights."
    )


def _recall(report: dict, name: str) -> str:
    """A class's recall in a report, or a dash where the labels have no face of that class."""
    recall = report["per_class_accuracy"].get(name)
    return "-" if recall is None else f"{recall:.3f}"


def _kept(run: dict) -> str:
    """Which of the run's model files the repository keeps, and whether the one used is among them."""
    kept = sorted(path.name for path in run["dir"].glob("*.keras"))
    if not kept:
        return f"- Kept: no model file of this run in `{run['dir']}`."
    line = "- Kept: " + ", ".join(f"`{run['dir'] / name}`" for name in kept)
    if run["checkpoint"] not in kept:
        line += f" (epoch {len(run['state']['epoch_seconds'])}; the `{run['checkpoint']}` used above was not kept)"
    if all(is_slim(run["dir"] / name) for name in kept):
        line += f", {'its' if len(kept) == 1 else 'their'} weights rounded to float16 by `python -m training.slim` (no optimizer state)"
    return line + "."


def _flip_flag(record: dict) -> str:
    """The option that reproduces a calibration or export record made without flip TTA."""
    return "" if record.get("flip_tta", True) else " --flip-tta off"


def _stem_convs(hparams: dict) -> int:
    """A run's stem convolutions: records from before --stem-convs have none, MobileNetV2 fine-tunes None."""
    return hparams.get("stem_convs") or 1


def _shape(width: int, stem_convs: int) -> str:
    """A compact CNN's size as the card names it: its width, and its stem when that is deeper than one conv."""
    return f"width {width}" + (f", {stem_convs} stem convs" if stem_convs > 1 else "")


# recorded with every run but not choices of its recipe: the command names the data, epochs, seed and
# name itself, and the rest are this session's (threads, XLA) or bookkeeping
NOT_RECIPE = {"data", "votes", "epochs", "seed", "name", "runs_dir", "resume", "threads", "xla", "note"}
NOT_RECIPE |= {"teacher", "teacher_weight"}  # written together, the teacher as the run folder's copy
# a fine-tune's model is the --init-from file's: these record it, they were not given
FINE_TUNE_RECORDS = {"arch", "width", "stem_convs"}


def _train_command(run: dict) -> str:
    """The `training.train` command line that repeats a run: every recorded option that differs from its default."""
    from training.train import default_args

    hparams = run["hparams"]
    defaults = default_args()
    skipped = NOT_RECIPE | (FINE_TUNE_RECORDS if hparams.get("init_from") else set())
    options = [f"--data {hparams['data']}", f"--epochs {hparams['epochs']}"]
    for name, value in hparams.items():
        if name in skipped or name not in defaults or value == defaults[name] or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        options.append(
            flag if value is True else f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
        )
    if hparams.get("teacher"):
        options.append(f"--teacher {run['dir'] / 'teacher.npz'} --teacher-weight {hparams['teacher_weight']:g}")
    options += [f"--seed {hparams['seed']}", f"--name {hparams['name']}"]
    return " ".join(["python -m training.train", *options])


def render(runs: list[Path], export: dict, report: dict, served: str, calibration: dict | None = None) -> str:
    """The card as Markdown; more than one run means the served model is their ensemble."""
    members = [_read_run(run) for run in runs]
    forms = export["forms"]
    # each record says how its figures were made; records from before `--flip-tta` were all made with it
    tta = "flip TTA" if report.get("flip_tta", True) else "no TTA"
    export_tta = "flip TTA" if export.get("flip_tta", True) else "no TTA"
    files = ", ".join(
        f"`{Path(entry['path']).name}`" + (" (served by default)" if Path(entry["path"]).name == served else "")
        for form, entry in forms.items()
        if form != "keras"
    )
    classes = tuple(report.get("classes", EMOTIONS))
    params = sum(member["params"] for member in members)
    first = members[0]["hparams"]
    is_ensemble = len(members) > 1
    if not is_ensemble:
        architecture = (
            f"Architecture `{first['arch']}` ({_shape(first['width'], _stem_convs(first))}), {params:,} parameters"
        )
    else:
        shapes = sorted({(member["hparams"]["width"], _stem_convs(member["hparams"])) for member in members})
        if all(stem == 1 for _, stem in shapes):
            widths = "width " + ", ".join(str(width) for width, _ in shapes)
        else:
            widths = "; ".join(_shape(width, stem) for width, stem in shapes)
        architecture = (
            f"An ensemble of {len(members)} `{first['arch']}` CNNs ({widths}) whose softmax outputs"
            f" are averaged inside the one model file (`python -m training.ensemble`), {params:,} parameters in all"
        )
    lines = [
        "# Model card: Moodlens emotion classifier",
        "",
        f"Files: {files}. {architecture}; input 48x48x1 grayscale in [0, 1]"
        " (`webapp/vision/preprocess.py`), output softmax over "
        + ", ".join(classes)
        + " (the list is in the model file).",
        "",
        "## Data",
        "",
        f"FER-2013 `train/` (the Training split, {members[0]['state']['train_images']:,} images) for training; `val/` (the PublicTest"
        f" split, {report['count']:,} images) for choosing the checkpoint and for every figure below. PrivateTest was not used.",
        "",
    ]
    if any(member["hparams"].get("labels", "fer2013") != "fer2013" for member in members):
        lines += [
            "FER+ (`ferplus_votes.csv`): ten annotators' votes for each of those images, from which the training targets"
            " are made; images whose votes are mostly unknown or not-a-face, and images FER+ has no row for, are left out.",
            "",
        ]
    lines += [
        "## Recipe",
        "",
    ]
    for member in members:
        if is_ensemble:
            lines += [f"### Member `{member['name']}`", ""]
        lines += [*_recipe(member), ""]
    commands = [
        _train_command(stage) + ("  # then resumed: see its History line" if stage["hparams"].get("note") else "")
        for member in members
        for stage in _lineage(member)
    ]
    source = f"runs/{members[0]['name']}/{members[0]['checkpoint']}"
    if is_ensemble:
        total_hours = sum(_training_seconds(member) for member in members) / 3600
        lines += [f"Training time of all members: {total_hours:.2f} h of CPU runs.", ""]
        source = "runs/ensemble.keras"
        commands.append(
            "python -m training.ensemble --members "
            + " ".join(f"runs/{member['name']}/{member['checkpoint']}" for member in members)
            + f" --out {source}"
        )
    if calibration:
        calibrated = f"{source.removesuffix('.keras')}-calibrated.keras"
        held_share, shift = calibration.get("neutral_share_target"), calibration["neutral_shift"]
        neutral = ""
        if held_share is not None:
            neutral = f" --neutral-share {held_share}"
        elif shift or calibration.get("match_neutral"):
            neutral = " --match-neutral"
        lowered = ""
        if shift:
            limit = (
                "faces of val neutral than the FER+ majority does"
                if held_share is None
                else f"than {held_share} of val's faces neutral"
            )
            lowered = f" and its neutral logit lowered by {shift:.2f}, so the model calls no more {limit}"
        commands.append(
            f"python -m training.calibrate --model {source} --data {first['data']} --out {calibrated}{neutral}{_flip_flag(calibration)}"
        )
        source = calibrated
        lines += [
            f"Calibrated (`training.calibrate`, fitted on val against {calibration['against']}): every softmax head's logits"
            f" divided by {calibration['temperature']:.2f}{lowered}"
            + f"; ECE {calibration['ece_before']:.3f} before, {calibration['ece_after']:.3f} after.",
            "",
        ]
    written = " ".join(form for form in forms if form != "keras")
    commands.append(
        f"python -m training.export --model {source} --out models --data {first['data']} --forms {written}{_flip_flag(export)}"
    )
    lines += ["Reproduce:", "", "```", *commands, "```", ""]
    lines += [
        "## Accuracy on FER-2013 val (PublicTest)",
        "",
        f"Served form (`{served}`, {tta}), against FER-2013's labels: **accuracy {report['accuracy']:.4f}**,"
        f" macro-F1 {report['macro_f1']:.4f}"
        + (f", ECE {report['ece']:.3f}." if report.get("ece") is not None else "."),
    ]
    ferplus = report.get("ferplus_majority")
    if ferplus:
        clear, share = report["clear_non_neutral"], report["neutral_share"]
        lines += [
            f"Against the FER+ majority ({ferplus['count']:,} faces; ties left out): **accuracy {ferplus['accuracy']:.4f}**,"
            f" macro-F1 {ferplus['macro_f1']:.4f}, ECE {ferplus['ece']:.3f}. On the {clear['count']:,} faces at least 7 of 10"
            f" annotators agree show a non-neutral emotion: {clear['accuracy']:.4f}. Called neutral: {share['model']:.3f} of"
            f" faces (the FER+ majority: {share['ferplus_majority']:.3f})."
            + (
                f" Answers given at 80% confidence or more ({ferplus['confident_share']:.1%} of faces) agree with the"
                f" majority {ferplus['confident_accuracy']:.1%} of the time."
                if ferplus.get("confident_accuracy") is not None
                else ""
            )
            + (
                f" The human reference: an annotator drawn at random agrees with the majority of the face's other"
                f" annotators {report['ferplus_one_annotator_agreement']:.1%} of the time, on average over these faces"
                " (the model is scored against the majority of all the votes)."
                if report.get("ferplus_one_annotator_agreement") is not None
                else ""
            ),
        ]
    if both := report.get("both_labelings"):
        agree, right = both["agree_share"], both["right_where_they_agree"]
        lines += [
            "",
            f"Both labelings at once: FER-2013's label and the FER+ majority agree on {agree:.1%} of these"
            f" faces, and the model is right on {right:.1%} of those. Where they differ no"
            f" answer is right on both: the model gives the FER+ majority on {both['differ_says_majority']:.1%} of them"
            f" and FER-2013's label on {both['differ_says_label']:.1%}. On these faces its two accuracies add up to"
            f" {2 * agree * right + (1 - agree) * (both['differ_says_majority'] + both['differ_says_label']):.3f};"
            f" a model as accurate where the labelings agree could reach at most {2 * agree * right + 1 - agree:.3f},"
            " by giving one of the two labels on every face where they differ (`training.evaluate`'s BothLabelings).",
        ]
    lines += [
        "",
        f"| form | size | accuracy, FER-2013 labels ({export_tta}) | FER+ majority | median ms per face (batch 1, {export_tta}) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {form} | {entry['size_kb'] / 1024:.1f} MB | {entry.get('accuracy', float('nan')):.4f}"
        f" | {entry.get('ferplus_accuracy', float('nan')):.4f} | {entry['median_ms_per_face']:.2f} |"
        for form, entry in forms.items()
    ]
    if ferplus:
        lines += ["", "| class | recall, FER-2013 labels | recall, FER+ majority |", "|---|---|---|"]
        lines += [f"| {name} | {_recall(report, name)} | {_recall(ferplus, name)} |" for name in classes]
    else:
        lines += ["", "| class | accuracy (recall) |", "|---|---|"]
        lines += [f"| {name} | {acc:.3f} |" for name, acc in report["per_class_accuracy"].items()]
    for title, scored, png in (
        ("FER-2013 labels", report, "confusion_val.png"),
        ("FER+ majority", ferplus, "confusion_val-ferplus.png"),
    ):
        if not scored:
            continue
        names = scored.get("classes", EMOTIONS)
        lines += [
            "",
            f"Confusion matrix against {title} (rows: truth, columns: predicted):",
            "",
            "| | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        lines += [
            f"| **{name}** | " + " | ".join(str(n) for n in row) + " |"
            for name, row in zip(names, scored["confusion"], strict=True)
        ]
        lines += ["", f"![confusion matrix, {title}]({png})"]
    return "\n".join([*lines, ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.card", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run", required=True, nargs="+", help="training run folder (several: the members of an ensemble)"
    )
    parser.add_argument(
        "--models", default="models", help="folder with export.json; the card is written there as README.md"
    )
    parser.add_argument("--report", required=True, help="JSON from `python -m training.evaluate --json` on val")
    parser.add_argument("--extra", help="Markdown file appended to the card (measurements made elsewhere)")
    parser.add_argument(
        "--calibration", help="JSON from `python -m training.calibrate --json`, if the model was calibrated"
    )
    args = parser.parse_args(argv)
    models = Path(args.models)
    export, report = json.loads((models / "export.json").read_text()), json.loads(Path(args.report).read_text())
    calibration = json.loads(Path(args.calibration).read_text()) if args.calibration else None
    card = render([Path(run) for run in args.run], export, report, Path(report["model"]).name, calibration)
    if args.extra:
        card += "\n" + Path(args.extra).read_text()
    (models / "README.md").write_text(card)
    print(f"wrote {models / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
