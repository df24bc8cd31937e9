"""Which faces each detector configuration finds, from across the room to close-ups and crops.

    python -m bench.detection_bench [--only detect|large|align|frames|browser] [--val-per-class 30]

Tables, every configuration in the same run (the machine is shared: compare rows, not runs):
1. faces-in-scenes (../shared): recall at IoU >= 0.3 and false positives, at the photos' own
   size and letterboxed into 640x480 as a webcam sends it; detect ms per 640x480 frame.
   Configurations include today's short range and Haar as baselines. An independent scene
   (Grace Hopper at six sizes on one canvas, not in ../shared) checks the same numbers.
2. Close-up sweep: one face from 20% to 100% of a 640x480 frame's height.
3. Crop-upload sweep: tight face crops (FER-2013 val faces, Grace Hopper) at 48, 112, 224 px,
   through the upload pipeline's detection (with and without the padded retry).
4. Tilted heads: classifier accuracy on val faces rotated by 0, +-15, +-30 degrees, with and
   without eye-keypoint alignment.
5. Server ms per 640x480 frame with one and six faces (stream pipeline, batched vs per-face).
6. Real Chromium through the production server, one face and a six-face video.
7. Large photos (--only large): faces-in-scenes side by side and scaled up, and independent
   crowds, through the whole-image detector and the tiled one (UPLOAD_DETECTOR's default).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
from PIL import Image

from tests.harness import FER2013, grace_hopper_rgb
from tests.scenes import FRAME_H, FRAME_W, SCENES, letterbox, load_scenes, match, place_face, six_face_frame
from webapp.vision.detector import BlazeFaceDetector, HaarFaceDetector, RangeFaceDetector
from webapp.vision.margin import detect_with_margin
from webapp.vision.pipeline import EmotionPipeline
from webapp.vision.types import Box

FER_VAL = FER2013 / "val"
# a tight crop's face box is at least this share of the crop's side (FER-2013's 26-43 of 48 px)
FACE_SHARE_OF_CROP = 0.35


class Alternating:
    """Candidate: full range on even frames, short range on odd ones (the tracker would bridge)."""

    name = "alternate full/short"

    def __init__(self, full, short):
        self.detectors, self.frame = (full, short), 0

    def detect(self, rgb):
        self.frame += 1
        return self.detectors[self.frame % 2].detect(rgb)


def configurations() -> list[tuple[str, object]]:
    """(label, detector) for every candidate, baselines first."""
    short, full = BlazeFaceDetector("short"), BlazeFaceDetector("full")
    return [
        ("short range (old DETECTOR default)", short),
        ("Haar (reference)", HaarFaceDetector()),
        ("full range", full),
        ("full range, min score 0.4", BlazeFaceDetector("full", min_score=0.4)),
        ("full + short always", RangeFaceDetector(full, short, close_up=0.0)),
        ("auto: full + short if none/>0.3", RangeFaceDetector(full, short, close_up=0.3)),
        ("auto: full + short if none/>0.4 *", RangeFaceDetector(full, short, close_up=0.4)),
        ("auto: full + short if none/>0.5", RangeFaceDetector(full, short, close_up=0.5)),
        ("auto: full + short if none", RangeFaceDetector(full, short, close_up=float("inf"))),
        ("alternate full/short per frame", Alternating(full, short)),
    ]


def timed_detect(detector, image: np.ndarray) -> tuple[list[Box], float]:
    start = time.perf_counter()
    found = detector.detect(image)
    return [d.box for d in found], (time.perf_counter() - start) * 1000


def scene_rows(configs, scenes, independent) -> None:
    """Table 1: recall / false positives at native size and letterboxed, ms per 640x480 frame."""
    total = sum(len(b) for _, _, b in scenes)
    boxed = [letterbox(image, boxes) for _, image, boxes in scenes]
    print(
        f"faces-in-scenes: {len(scenes)} photos, {total} faces; letterboxed into {FRAME_W}x{FRAME_H}; "
        f"independent: {len(independent[1])} faces (Grace Hopper, 25-110 px) on one {FRAME_W}x{FRAME_H} frame"
    )
    header = (
        f"{'configuration':<36}{'own size rec/FP':>17}{'640x480 rec/FP':>16}{'indep. rec/FP':>15}{'ms/frame med':>14}"
    )
    print(header)
    print("-" * len(header))
    for label, detector in configs:
        cells = []
        for images in ([(image, boxes) for _, image, boxes in scenes], boxed, [independent]):
            found = fp = 0
            for image, boxes in images:
                hit, false = match(timed_detect(detector, image)[0], boxes)
                found, fp = found + hit, fp + false
            cells.append(f"{found / max(1, sum(len(b) for _, b in images)):6.1%}/{fp:<3d}")
        times = [timed_detect(detector, image)[1] for _ in range(5) for image, _ in boxed]
        print(f"{label:<36}{cells[0]:>17}{cells[1]:>16}{cells[2]:>15}{np.median(times):>14.2f}")


CLOSE_UP_POSITIONS = tuple((x, y) for y in (0.35, 0.5, 0.65) for x in (0.3, 0.5, 0.7))


def close_up_rows(
    configs, fractions=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), positions=CLOSE_UP_POSITIONS
) -> None:
    """Table 2: one face from 20% to 100% of the frame height, on a 3x3 grid of positions; found = IoU >= 0.3.

    Off-centre large faces run past the frame's edge, as when someone leans into a laptop camera.
    """
    print(
        f"\nClose-up sweep: one face (Grace Hopper) of height f x {FRAME_H} px in a {FRAME_W}x{FRAME_H} frame, centred on a 3x3 grid "
        f"(30/50/70% across, 35/50/65% down; large faces run off the frame); found/{len(positions)}"
    )
    header = f"{'configuration':<36}" + "".join(f"{f:>6.0%}" for f in fractions) + f"{'all':>6}"
    print(header)
    print("-" * len(header))
    frames = {f: [place_face(f * FRAME_H, centre=c) for c in positions] for f in fractions}
    for label, detector in configs:
        counts = [sum(match(timed_detect(detector, image)[0], [box])[0] for image, box in frames[f]) for f in fractions]
        print(
            f"{label:<36}"
            + "".join(f"{c:>6d}" for c in counts)
            + f"{'yes' if min(counts) == len(positions) else 'no':>6}"
        )


def fer_faces(per_class: int) -> list[np.ndarray]:
    """The first `per_class` FER-2013 val faces of each emotion, as 48x48 gray arrays; [] without them."""
    if not FER_VAL.is_dir():
        return []
    faces = []
    for folder in sorted(p for p in FER_VAL.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg"))[:per_class]:
            faces.append(np.asarray(Image.open(path).convert("L")))
    return faces


def crop_rows(configs, per_class: int) -> None:
    """Table 3: tight face crops at 48 / 112 / 224 px: found by the detector alone and with the padded retry
    (a box at least `FACE_SHARE_OF_CROP` of the crop's side tall, as the upload pipeline finds faces)."""
    grace = grace_hopper_rgb()
    left, top, side = 165, 140, 205  # a tight square portrait crop around the hand-made box
    portrait = grace[top : top + side, left : left + side]
    fer = [cv2.cvtColor(face, cv2.COLOR_GRAY2RGB) for face in fer_faces(per_class)]
    sizes = (48, 112, 224)
    print(
        f"\nCrop-upload sweep: {len(fer)} FER-2013 val faces ({per_class} per emotion) and Grace Hopper's portrait crop, resized to each size"
    )
    header = (
        f"{'configuration':<36}{'retry':>6}"
        + "".join(f"{'FER ' + str(s):>10}" for s in sizes)
        + "".join(f"{'Grace ' + str(s):>10}" for s in sizes)
    )
    print(header)
    print("-" * len(header))
    for label, detector in configs:
        for retry in (False, True):
            cells = []
            for images in (fer, [portrait]):
                for size in sizes:
                    found = 0
                    for image in images:
                        resized = cv2.resize(
                            image,
                            (size, size),
                            interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR,
                        )
                        # as the upload pipeline finds them: boxes too small to be faces dropped, then the retry
                        faces = EmotionPipeline(detector, classifier=None, padded_retry=retry).find_faces(resized)
                        # found: a box on the face, over a third of a tight crop's side (the box of an eye or
                        # the chin that detectors drew beside or instead of the face is under a quarter)
                        found += any(face.box.height >= FACE_SHARE_OF_CROP * size for face in faces)
                    cells.append(f"{found / max(1, len(images)):10.1%}")
            print(f"{label:<36}{'yes' if retry else 'no':>6}" + "".join(cells))


def fer_labelled(per_class: int) -> tuple[list[np.ndarray], list[int]]:
    """(48x48 gray faces, label indices) from FER-2013 val, `per_class` per emotion."""
    from webapp.vision.labels import EMOTIONS

    faces, labels = [], []
    for label, emotion in enumerate(EMOTIONS):
        for path in sorted((FER_VAL / emotion).glob("*.jpg"))[:per_class]:
            faces.append(np.asarray(Image.open(path).convert("L")))
            labels.append(label)
    return faces, labels


def align_rows(detector, classifier, per_class: int, angles=(-30, -15, 0, 15, 30)) -> None:
    """Table 4: accuracy on val faces rotated on a padded canvas, plain crop vs eye-aligned crop.

    Each face sits on a canvas with a 50% margin (as the padded retry makes it) and is rotated
    about its centre; the detector's box and eyes then give the crop. Faces the detector misses
    at an angle are left out of that angle's accuracy for every arm alike.
    """
    from webapp.vision.align import upright_face_input
    from webapp.vision.margin import pad_image
    from webapp.vision.preprocess import face_to_input, to_grayscale

    faces, labels = fer_labelled(per_class)
    if not faces:
        print(f"\n(FER-2013 val not found at {FER_VAL}: alignment table skipped)")
        return
    print(
        f"\nTilted heads: {len(faces)} FER-2013 val faces ({per_class} per emotion) rotated on a padded canvas; detector {detector.name}"
    )
    thresholds = (0.0, 8.0, 12.0, 16.0, 20.0)
    arms = (
        "unrotated original",
        "plain crop",
        *tuple(f"align >= {t:g} deg" + (" *" if t == 20 else "") for t in thresholds),
    )
    header = f"{'angle':>6}{'found':>7}" + "".join(f"{arm:>19}" for arm in arms) + f"{'align ms':>10}"
    print(header)
    print("-" * len(header))
    for angle in angles:
        inputs = {arm: [] for arm in arms}
        truth, align_ms = [], []
        for face, label in zip(faces, labels, strict=True):
            canvas, _pad = pad_image(cv2.cvtColor(face, cv2.COLOR_GRAY2RGB), 0.5)
            centre = (canvas.shape[1] / 2, canvas.shape[0] / 2)
            rotated = cv2.warpAffine(
                canvas,
                cv2.getRotationMatrix2D(centre, angle, 1.0),
                canvas.shape[1::-1],
                borderMode=cv2.BORDER_REPLICATE,
            )
            found = detector.detect(rotated) or detect_with_margin(detector, rotated)
            if not found:
                continue
            best = max(found, key=lambda d: d.box.width * d.box.height)
            gray = to_grayscale(rotated)
            inputs[arms[0]].append(face)
            inputs[arms[1]].append(face_to_input(gray, (best.box.x, best.box.y, best.box.width, best.box.height)))
            start = time.perf_counter()
            upright_face_input(gray, best, min_tilt=0.0)
            align_ms.append((time.perf_counter() - start) * 1000)
            for threshold, arm in zip(thresholds, arms[2:], strict=True):
                inputs[arm].append(upright_face_input(gray, best, min_tilt=threshold))
            truth.append(label)
        truth = np.array(truth)
        cells = "".join(
            f"{np.mean(classifier.predict_probabilities(np.stack(inputs[arm])).argmax(1) == truth):>19.4f}"
            for arm in arms
        )
        print(f"{angle:>6}{len(truth) / len(faces):>7.1%}{cells}{np.median(align_ms):>10.3f}")


class PerFace:
    """The classifier called once per face, to compare with the pipeline's one batched call."""

    def __init__(self, classifier):
        self.classifier, self.name = classifier, classifier.name

    def classify(self, faces):
        return [emotion for face in faces for emotion in self.classifier.classify(face[np.newaxis])]


def frame_rows(classifier, frames: int) -> None:
    """Table 5: server ms per 640x480 JPEG frame (decode, detect, classify) with 0, 1 and 6 faces."""
    from bench.pipeline_bench import time_pipeline
    from tests.harness import jpeg_bytes, webcam_frame
    from webapp.vision.detector import make_detector
    from webapp.vision.pipeline import EmotionPipeline

    scenes = [
        ("no face", np.full((FRAME_H, FRAME_W, 3), 90, np.uint8)),
        ("one face", webcam_frame()),
        ("six faces", six_face_frame()[0]),
    ]
    tta = "flip TTA" if classifier.flip_tta else "no TTA"
    print(
        f"\nServer ms per 640x480 JPEG frame, stream pipeline ({tta}, as served; no padded retry), {frames} frames each"
    )
    header = f"{'frame':<11}{'detector':<17}{'classify':<10}{'detect med':>11}{'classify med':>13}{'total med/p95':>15}{'faces':>7}"
    print(header)
    print("-" * len(header))
    detectors = [make_detector("blazeface"), make_detector("blazeface-auto")]
    for scene, rgb in scenes:
        jpeg = jpeg_bytes(rgb, quality=80)
        for detector in detectors:
            for label, used in (("batched", classifier), ("per face", PerFace(classifier))):
                if label == "per face" and scene != "six faces":
                    continue
                stages = time_pipeline(EmotionPipeline(detector, used, padded_retry=False), jpeg, frames)
                total = f"{np.median(stages['total']):.2f}/{np.percentile(stages['total'], 95):.2f}"
                print(
                    f"{scene:<11}{detector.name:<17}{label:<10}{np.median(stages['detect']):>11.2f}{np.median(stages['classify']):>13.2f}{total:>15}{stages['faces_per_frame'][0]:>7.2f}"
                )


def browser_rows(seconds: float) -> None:
    """Table 6: real Chromium through the production server, one face and the six-face video."""
    from bench.stream_bench import browser_run
    from tests.harness import start_production_server, stop_production_server, webcam_frame

    print(f"\nReal Chromium (fake 30 fps camera) -> gunicorn + eventlet, DETECTOR default, {seconds:g} s each")
    header = f"{'video':<12}{'fps':>7}{'rtt med':>9}{'rtt p95':>9}{'faces':>7}{'errors':>8}"
    print(header)
    print("-" * len(header))
    process, url = start_production_server()
    try:
        for label, frame in (("one face", webcam_frame()), ("six faces", six_face_frame()[0])):
            run = browser_run(url, seconds, frame)
            print(
                f"{label:<12}{run['fps']:>7.1f}{run['rtt_median']:>9.1f}{run['rtt_p95']:>9.1f}{run['faces']:>7d}{run['errors']:>8d}"
            )
    finally:
        stop_production_server(process)


def mosaic(scenes, columns: int, scale: float) -> tuple[np.ndarray, list[Box]]:
    """The faces-in-scenes photos side by side, each 520x400, `columns` a row, then scaled: a group photo's small faces."""
    cell_w, cell_h = 520, 400
    rows = -(-len(scenes) // columns)
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 90, np.uint8)
    boxes = []
    for i, (_, image, faces) in enumerate(scenes):
        row, column = divmod(i, columns)
        canvas[row * cell_h : (row + 1) * cell_h, column * cell_w : (column + 1) * cell_w] = cv2.resize(
            image, (cell_w, cell_h), interpolation=cv2.INTER_AREA
        )
        sx, sy = cell_w / image.shape[1], cell_h / image.shape[0]
        boxes += [Box(column * cell_w + b.x * sx, row * cell_h + b.y * sy, b.width * sx, b.height * sy) for b in faces]
    size = (round(canvas.shape[1] * scale), round(canvas.shape[0] * scale))
    canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return canvas, [Box(b.x * scale, b.y * scale, b.width * scale, b.height * scale) for b in boxes]


def large_photo_rows(scenes, repeats: int = 3) -> None:
    """Table 7: large photos whose faces are small beside the photo: the whole-image pass against tiles."""
    from tests.scenes import crowd
    from webapp.vision.detector import make_detector

    photos = []
    if scenes:
        photos += [(f"scenes {c} a row x{k:g}", *mosaic(scenes, c, k)) for c, k in ((1, 1), (2, 1), (3, 1), (3, 2))]
    photos += [(f"crowd {r}x{c}, {h} px faces", *crowd(r, c, h, w, hh)) for r, c, h, w, hh in CROWDS]
    detectors = [(name, make_detector(name)) for name in ("blazeface-auto", "blazeface-tiled")]
    print(
        "\nLarge photos: faces-in-scenes side by side (one a row: the photos stacked) and scaled, and independent crowds"
    )
    print("(Grace Hopper on a grid); found / faces, false positives, ms per photo (median of the repeats)")
    header = f"{'photo':<30}{'size':>11}" + "".join(f"{name + ' found/FP':>26}{'ms':>7}" for name, _ in detectors)
    header += f"{'tiles cost, ms':>16}"
    print(header)
    print("-" * len(header))
    for label, image, boxes in photos:
        cells, times = "", []
        for _, detector in detectors:
            runs = [timed_detect(detector, image) for _ in range(repeats)]
            hit, false = match(runs[0][0], boxes)
            times.append(float(np.median([ms for _, ms in runs])))
            cells += f"{f'{hit}/{len(boxes)}, {false}':>26}{times[-1]:>7.0f}"
        print(f"{label:<30}{f'{image.shape[1]}x{image.shape[0]}':>11}{cells}{f'+{times[1] - times[0]:.0f}':>16}")


# rows, columns, face height, photo width, photo height
# the last: the largest a photo is analysed at (larger ones are decoded at a half or less)
CROWDS = (
    (2, 4, 50, 2048, 1200),
    (3, 5, 40, 2000, 1400),
    (3, 6, 60, 3000, 2000),
    (4, 8, 90, 4000, 3000),
    (4, 8, 60, 4000, 3000),  # a 12 MP phone photo's group
    (5, 10, 45, 4000, 3000),
    (6, 8, 110, 4095, 4095),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("detect", "large", "align", "frames", "browser"), help="run one part")
    parser.add_argument(
        "--val-per-class", type=int, default=30, help="FER-2013 val faces per emotion for the crop sweep"
    )
    parser.add_argument(
        "--align-per-class", type=int, default=100, help="FER-2013 val faces per emotion for the tilted-heads table"
    )
    parser.add_argument("--frames", type=int, default=100, help="frames per row of the server-time table")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per Chromium run")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPU cores; * = the shipped DETECTOR default (blazeface-auto)\n")
    if args.only in (None, "detect"):
        configs = configurations()
        scenes = load_scenes()
        if not scenes:
            print(f"(faces-in-scenes not found at {SCENES}: scene table skipped)")
        scene_rows(configs, scenes, six_face_frame())
        close_up_rows(configs)
        crop_rows([c for c in configs if not isinstance(c[1], Alternating)], args.val_per_class)
    if args.only in (None, "large"):
        large_photo_rows(load_scenes())
    if args.only in (None, "align"):
        from webapp.config import DEFAULT_MODEL
        from webapp.vision.classifier import EmotionClassifier
        from webapp.vision.detector import make_detector

        align_rows(make_detector("blazeface-auto"), EmotionClassifier(str(DEFAULT_MODEL)), args.align_per_class)
    if args.only in (None, "frames"):
        from webapp.config import DEFAULT_MODEL
        from webapp.vision.classifier import EmotionClassifier

        frame_rows(EmotionClassifier(str(DEFAULT_MODEL)), args.frames)
    if args.only in (None, "browser"):
        browser_rows(args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
