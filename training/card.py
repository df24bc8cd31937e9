"""Write the model card (models/README.md) from a run folder, export.json and an evaluation report.

    python -m training.card --run runs/NAME [runs/OTHER ...] --models models --report models/eval_val.json

Every figure in the card is read from those files, so the card cannot drift from the run.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from webapp.vision.labels import EMOTIONS


def _read_run(run: Path) -> dict:
    """What the card needs from one training run folder."""
    with open(run / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    summary = (run / "model_summary.txt").read_text()
    params = next((line.split(":", 1)[1].split("(")[0].strip() for line in summary.splitlines() if "Total params" in line), "0")
    return {
        "name": run.name,
        "hparams": json.loads((run / "hparams.json").read_text()),
        "state": json.loads((run / "state.json").read_text()),
        "best": max(log, key=lambda row: float(row["val_accuracy"])),
        "params": int(params.replace(",", "")),
    }


def _recipe(run: dict) -> list[str]:
    """Markdown bullets for one run's recipe, time and best checkpoint."""
    from training.augment import AUGMENTATION_BLUR_SIGMA

    hparams, seconds = run["hparams"], run["state"]["epoch_seconds"]
    weights = hparams["class_weights"]
    lines = [
        f"- {hparams['epochs']} epochs, batch {hparams['batch_size']}, AdamW (peak lr {hparams['lr']}, weight decay {hparams['weight_decay']}),"
        f" {hparams['warmup_epochs']:g} warm-up epoch then cosine decay; label smoothing {hparams['label_smoothing']}; dropout {hparams['dropout']}; seed {hparams['seed']}.",
        f"- Class imbalance: `--class-weights {weights}`"
        + {"sqrt": ": each class's loss is weighted by (N / (7 n_c)) ** 0.5, a softened inverse frequency.",
           "balanced": ": each class's loss is weighted by N / (7 n_c).",
           "none": ": no weights; every image counts the same, which favours overall accuracy over rare-class recall."}[weights],
        ("- Augmentation: horizontal flip, rotation +-10 deg, zoom 10%, shift 10%, contrast 30%. Served behind an `InferenceBlur`"
         f" (3x3 Gaussian, sigma {AUGMENTATION_BLUR_SIGMA:.3f}) that gives held-out faces the softness the three resamplings give training images.")
        if not hparams["no_augment"] else "- No augmentation.",
        f"- Best checkpoint: epoch {int(run['best']['epoch']) + 1} (val accuracy {float(run['best']['val_accuracy']):.4f} as logged in training: Keras, no TTA).",
        f"- Training time on the 2-core CPU: {sum(seconds) / 3600:.2f} h, {sorted(seconds)[len(seconds) // 2]:.0f} s per epoch (median; the machine was shared with other work).",
    ]
    if hparams.get("note"):
        lines.append(f"- History: {hparams['note']}.")
    return lines


def _train_command(hparams: dict) -> str:
    """The `training.train` command line that sets a run's non-default choices."""
    return (f"python -m training.train --data {hparams['data']} --arch {hparams['arch']} --width {hparams['width']} --epochs {hparams['epochs']}"
            f" --class-weights {hparams['class_weights']} --seed {hparams['seed']} --name {hparams['name']}")


def render(runs: list[Path], export: dict, report: dict, served: str) -> str:
    """The card as Markdown; more than one run means the served model is their ensemble."""
    members = [_read_run(run) for run in runs]
    forms = export["forms"]
    files = ", ".join(f"`{Path(entry['path']).name}`" + (" (served by default)" if Path(entry["path"]).name == served else "") for form, entry in forms.items() if form != "keras")
    params = sum(member["params"] for member in members)
    first = members[0]["hparams"]
    is_ensemble = len(members) > 1
    if not is_ensemble:
        architecture = f"Architecture `{first['arch']}` (width {first['width']}), {params:,} parameters"
    else:
        widths = ", ".join(str(width) for width in sorted({member["hparams"]["width"] for member in members}))
        architecture = (f"An ensemble of {len(members)} `{first['arch']}` CNNs (width {widths}) whose softmax outputs"
                        f" are averaged inside the one model file (`python -m training.ensemble`), {params:,} parameters in all")
    lines = [
        "# Model card: Moodlens emotion classifier",
        "",
        f"Files: {files}. {architecture}; input 48x48x1 grayscale in [0, 1]"
        " (`webapp/vision/preprocess.py`), output softmax over " + ", ".join(EMOTIONS) + ".",
        "",
        "## Data",
        "",
        f"FER-2013 `train/` (the Training split, {members[0]['state']['train_images']:,} images) for training; `val/` (the PublicTest"
        f" split, {report['count']:,} images) for choosing the checkpoint and for every figure below. PrivateTest was not used.",
        "",
        "## Recipe",
        "",
    ]
    for member in members:
        if is_ensemble:
            lines += [f"### Member `{member['name']}`", ""]
        lines += _recipe(member) + [""]
    commands = [_train_command(member["hparams"]) + ("  # then resumed: see its History line" if member["hparams"].get("note") else "") for member in members]
    source = f"runs/{members[0]['name']}/best.keras"
    if is_ensemble:
        total_hours = sum(sum(member["state"]["epoch_seconds"]) for member in members) / 3600
        lines += [f"Training time of all members: {total_hours:.2f} h of CPU runs.", ""]
        source = "runs/ensemble.keras"
        commands.append("python -m training.ensemble --members " + " ".join(f"runs/{member['name']}/best.keras" for member in members) + f" --out {source}")
    commands.append(f"python -m training.export --model {source} --out models --data {first['data']}")
    lines += ["Reproduce:", "", "```", *commands, "```", ""]
    lines += [
        "## Accuracy on FER-2013 val (PublicTest)",
        "",
        f"Served form (`{served}`, flip TTA): **accuracy {report['accuracy']:.4f}**, macro-F1 {report['macro_f1']:.4f}.",
        "",
        "| form | size | accuracy (flip TTA) | median ms per face (batch 1, TTA) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {form} | {entry['size_kb'] / 1024:.1f} MB | {entry.get('accuracy', float('nan')):.4f} | {entry['median_ms_per_face']:.2f} |" for form, entry in forms.items()]
    lines += ["", "| class | accuracy (recall) |", "|---|---|"]
    lines += [f"| {name} | {acc:.3f} |" for name, acc in report["per_class_accuracy"].items()]
    lines += ["", "Confusion matrix (rows: truth, columns: predicted):", "", "| | " + " | ".join(EMOTIONS) + " |", "|---" * (len(EMOTIONS) + 1) + "|"]
    lines += [f"| **{name}** | " + " | ".join(str(n) for n in row) + " |" for name, row in zip(EMOTIONS, report["confusion"])]
    lines += ["", "![confusion matrix](confusion_val.png)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.card", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, nargs="+", help="training run folder (several: the members of an ensemble)")
    parser.add_argument("--models", default="models", help="folder with export.json; the card is written there as README.md")
    parser.add_argument("--report", required=True, help="JSON from `python -m training.evaluate --json` on val")
    parser.add_argument("--extra", help="Markdown file appended to the card (measurements made elsewhere)")
    args = parser.parse_args(argv)
    models = Path(args.models)
    export, report = json.loads((models / "export.json").read_text()), json.loads(Path(args.report).read_text())
    card = render([Path(run) for run in args.run], export, report, served=Path(report["model"]).name)
    if args.extra:
        card += "\n" + Path(args.extra).read_text()
    (models / "README.md").write_text(card)
    print(f"wrote {models / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
