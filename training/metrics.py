"""Classification metrics and the confusion-matrix figure used by evaluate and export."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from webapp.vision.labels import EMOTIONS, NUM_CLASSES


@dataclass(frozen=True)
class Report:
    """Accuracy, per-class recall, macro-F1 and the confusion matrix (rows: truth)."""

    accuracy: float
    per_class_accuracy: dict[str, float]
    macro_f1: float
    confusion: list[list[int]]
    count: int

    def to_dict(self) -> dict:
        return asdict(self)


def score(labels: np.ndarray, predictions: np.ndarray) -> Report:
    """Compare integer labels with integer predictions."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_counts, predicted_counts, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    recall = hits / np.maximum(true_counts, 1)
    precision = hits / np.maximum(predicted_counts, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    present = true_counts > 0
    return Report(
        accuracy=float(hits.sum() / max(1, len(labels))),
        per_class_accuracy={
            name: round(float(r), 4) for name, r, p in zip(EMOTIONS, recall, present, strict=True) if p
        },
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        confusion=confusion.tolist(),
        count=len(labels),
    )


def format_report(report: Report) -> str:
    """A plain-text table: per-class accuracy, then the confusion matrix."""
    lines = [f"images: {report.count}   macro-F1: {report.macro_f1:.4f}", "", f"{'class':<10}{'accuracy':>9}"]
    lines += [f"{name:<10}{acc:>9.4f}" for name, acc in report.per_class_accuracy.items()]
    lines += [
        "",
        "confusion (rows: truth, columns: predicted)",
        " " * 10 + "".join(f"{name[:7]:>8}" for name in EMOTIONS),
    ]
    lines += [
        f"{name:<10}" + "".join(f"{n:>8}" for n in row) for name, row in zip(EMOTIONS, report.confusion, strict=True)
    ]
    return "\n".join(lines)


def save_confusion_png(report: Report, path: str, title: str = "") -> None:
    """Draw the row-normalised confusion matrix with counts to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.array(report.confusion)
    normalised = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(NUM_CLASSES), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(NUM_CLASSES), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}\n{counts[i, j]}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    ax.set_title(title or f"accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
