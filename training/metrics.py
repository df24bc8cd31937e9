"""Classification metrics and the confusion-matrix figure used by evaluate and export."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np

from webapp.vision.labels import EMOTIONS, EMOTIONS_WITH_CONTEMPT

CALIBRATION_BINS = 10
# the confidence at which the app's answer should be right nearly always (issue 14: 94% at >= 80%)
CONFIDENT = 0.8


@dataclass(frozen=True)
class Report:
    """Accuracy, per-class recall, macro-F1, the confusion matrix (rows: truth, over `classes`)
    and, when probabilities were given, the expected calibration error and, for the faces
    whose top probability is at least `CONFIDENT`, their share and accuracy."""

    accuracy: float
    per_class_accuracy: dict[str, float]
    macro_f1: float
    confusion: list[list[int]]
    count: int
    classes: tuple[str, ...] = EMOTIONS
    ece: float | None = None
    confident_share: float | None = None
    confident_accuracy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """The gap between confidence and accuracy, averaged over equal-width confidence bins
    weighted by the share of faces in each (Guo et al. 2017)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(gap)


def mcnemar_p(only_first_right: int, only_second_right: int) -> float:
    """Exact two-sided McNemar test of two classifiers on the same faces: the probability, were
    both equally good, of a split of the faces that only one gets right at least this uneven."""
    n, k = only_first_right + only_second_right, min(only_first_right, only_second_right)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def score(labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None = None) -> Report:
    """Compare integer labels with integer predictions (indices in `EMOTIONS_WITH_CONTEMPT`).

    The classes are FER-2013's 7, or 8 when labels or predictions include contempt. Given
    the predicted probabilities (N, classes), the report includes the calibration error of
    the top class's probability.
    """
    size = max(len(EMOTIONS), int(labels.max(initial=0)) + 1, int(predictions.max(initial=0)) + 1)
    if probabilities is not None:
        size = max(size, probabilities.shape[1])
    classes = EMOTIONS_WITH_CONTEMPT[:size]
    confusion = np.zeros((size, size), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_counts, predicted_counts, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    recall = hits / np.maximum(true_counts, 1)
    precision = hits / np.maximum(predicted_counts, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    present = true_counts > 0
    confident = None if probabilities is None else probabilities.max(1) >= CONFIDENT
    return Report(
        accuracy=float(hits.sum() / max(1, len(labels))),
        per_class_accuracy={name: round(float(r), 4) for name, r, p in zip(classes, recall, present, strict=True) if p},
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        confusion=confusion.tolist(),
        count=len(labels),
        classes=classes,
        ece=None
        if probabilities is None
        else round(expected_calibration_error(probabilities.max(1), labels == predictions), 4),
        confident_share=None if confident is None else round(float(confident.mean()), 4) if len(labels) else 0.0,
        confident_accuracy=None
        if confident is None or not confident.any()
        else round(float((labels == predictions)[confident].mean()), 4),
    )


def format_report(report: Report) -> str:
    """A plain-text table: per-class accuracy, then the confusion matrix."""
    calibration = "" if report.ece is None else f"   ECE ({CALIBRATION_BINS} bins): {report.ece:.4f}"
    if report.confident_accuracy is not None:
        calibration += (
            f"\nat confidence >= {CONFIDENT:.0%}: {report.confident_share:.1%} of the faces,"
            f" right on {report.confident_accuracy:.4f} of them"
        )
    lines = [
        f"images: {report.count}   accuracy: {report.accuracy:.4f}   macro-F1: {report.macro_f1:.4f}{calibration}",
        "",
        f"{'class':<10}{'accuracy':>9}",
    ]
    lines += [f"{name:<10}{acc:>9.4f}" for name, acc in report.per_class_accuracy.items()]
    lines += [
        "",
        "confusion (rows: truth, columns: predicted)",
        " " * 10 + "".join(f"{name[:7]:>8}" for name in report.classes),
    ]
    lines += [
        f"{name:<10}" + "".join(f"{n:>8}" for n in row)
        for name, row in zip(report.classes, report.confusion, strict=True)
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
    size = len(report.classes)
    ax.set_xticks(range(size), report.classes, rotation=45, ha="right")
    ax.set_yticks(range(size), report.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i in range(size):
        for j in range(size):
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
