"""Write the model card (models/README.md) from a run folder, export.json and an evaluation report.

    python -m training.card --run runs/NAME --models models --report models/eval_val.json

Every figure in the card is read from those files, so the card cannot drift from the run.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from webapp.vision.labels import EMOTIONS


def render(run: Path, export: dict, report: dict) -> str:
    """The card as Markdown."""
    hparams = json.loads((run / "hparams.json").read_text())
    state = json.loads((run / "state.json").read_text())
    with open(run / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    best = max(log, key=lambda row: float(row["val_accuracy"]))
    seconds = state["epoch_seconds"]
    summary = (run / "model_summary.txt").read_text()
    params = next((line.split(":", 1)[1].strip() for line in summary.splitlines() if "Total params" in line), "?")
    forms = export["forms"]
    lines = [
        "# Model card: Moodlens emotion classifier",
        "",
        f"Files: `emotion_float32.tflite` (served by default), `emotion_int8.tflite`. Architecture `{hparams['arch']}`"
        f" (width {hparams['width']}), {params}; input 48x48x1 grayscale in [0, 1]"
        " (`webapp/vision/preprocess.py`), output softmax over " + ", ".join(EMOTIONS) + ".",
        "",
        "## Data",
        "",
        f"FER-2013 `train/` (the Training split, {state['train_images']:,} images) for training; `val/` (the PublicTest"
        f" split, {report['count']:,} images) for choosing the checkpoint and for every figure below. PrivateTest was not used.",
        "",
        "## Recipe",
        "",
        f"- {hparams['epochs']} epochs, batch {hparams['batch_size']}, AdamW (peak lr {hparams['lr']}, weight decay {hparams['weight_decay']}),"
        f" {hparams['warmup_epochs']:g} warm-up epoch then cosine decay; label smoothing {hparams['label_smoothing']}; dropout {hparams['dropout']}; seed {hparams['seed']}.",
        f"- Class imbalance: `--class-weights {hparams['class_weights']}`: each class's loss is weighted by (N / (7 n_c)) ** 0.5, a softened inverse frequency."
        if hparams["class_weights"] == "sqrt" else f"- Class weights: {hparams['class_weights']}.",
        "- Augmentation: horizontal flip, rotation +-10 deg, zoom 10%, shift 10%, contrast 30%." if not hparams["no_augment"] else "- No augmentation.",
        f"- Best checkpoint: epoch {int(best['epoch']) + 1} (val accuracy {float(best['val_accuracy']):.4f} in Keras, no TTA).",
        f"- Training time on the 2-core CPU: {sum(seconds) / 3600:.2f} h, {sorted(seconds)[len(seconds) // 2]:.0f} s per epoch (median; the machine was shared with other work).",
        f"- Reproduce: `python -m training.train --data ../shared/datasets/fer2013 --epochs {hparams['epochs']}` then `python -m training.export`.",
        "",
        "## Accuracy on FER-2013 val (PublicTest)",
        "",
        f"Served form (TFLite float32, flip TTA): **accuracy {report['accuracy']:.4f}**, macro-F1 {report['macro_f1']:.4f}.",
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
    parser.add_argument("--run", required=True, help="training run folder")
    parser.add_argument("--models", default="models", help="folder with export.json; the card is written there as README.md")
    parser.add_argument("--report", required=True, help="JSON from `python -m training.evaluate --json` on val")
    parser.add_argument("--extra", help="Markdown file appended to the card (measurements made elsewhere)")
    args = parser.parse_args(argv)
    models = Path(args.models)
    card = render(Path(args.run), json.loads((models / "export.json").read_text()), json.loads(Path(args.report).read_text()))
    if args.extra:
        card += "\n" + Path(args.extra).read_text()
    (models / "README.md").write_text(card)
    print(f"wrote {models / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
