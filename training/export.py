"""Export a trained Keras model to its serving forms: TFLite float32, float16 and int8.

    python -m training.export --model runs/NAME/best.keras --out models --data ../shared/datasets/fer2013

Writes emotion_float32.tflite, emotion_float16.tflite (float16 weights, computed in
float32: half the size) and emotion_int8.tflite (full-integer weights and
activations, calibrated on training images, float input/output) and, given --data,
checks each form's accuracy on the val split against the Keras model and writes
export.json with the figures. Every file carries the model's class list (7 FER-2013 classes,
or 8 with FER+'s contempt) and whether it is served with flip TTA (`--flip-tta off` for a model
chosen without it) in its metadata; see `with_metadata`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flatbuffers
import numpy as np

from training.data import DataError, load_split
from webapp.vision.preprocess import INPUT_SHAPE, to_model_input

FORMS = ("float32", "float16", "int8")
TENSOR_ALIGNMENT = 16


def convert(model, form: str, calibration: np.ndarray | None = None, flip_tta: bool = True) -> bytes:
    """Convert a Keras model to TFLite bytes with its class list and whether it is served with flip TTA;
    `calibration` (uint8 faces) is needed for int8."""
    import tempfile

    import tensorflow as tf

    from webapp.vision.layers import model_classes
    from webapp.vision.litert import CLASSES_METADATA, FLIP_TTA_METADATA

    with tempfile.TemporaryDirectory() as saved_model:
        model.export(
            saved_model,
            format="tf_saved_model",
            input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name="face")],
            verbose=False,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        metadata = {CLASSES_METADATA: list(model_classes(model)), FLIP_TTA_METADATA: flip_tta}
        return with_metadata(_finish(converter, form, calibration), metadata)


class _AlignedBuilder(flatbuffers.Builder):
    """Starts every vector on 16 bytes: the converter aligns tensor data so, and kernels may rely on it."""

    def StartVector(self, elemSize, numElems, alignment):
        return super().StartVector(elemSize, numElems, max(alignment, TENSOR_ALIGNMENT))


def with_metadata(tflite: bytes, entries: dict) -> bytes:
    """`tflite` with each of `entries` (name -> value) in its metadata, the value as UTF-8 JSON
    (`CLASSES_METADATA`: a list of names; `FLIP_TTA_METADATA`: true or false).

    The model is unpacked and packed again with the schema's object API; its tensors and
    operators are unchanged. Earlier entries of those names are replaced.
    """
    from webapp.vision.litert import schema

    fb = schema()
    model = fb.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    if any(buffer.offset > 1 for buffer in model.buffers or ()):
        raise ValueError("models with buffers stored outside the flatbuffer (over 2 GB) are not supported")
    for name, value in entries.items():
        entry = next((m for m in model.metadata or () if m.name in (name, name.encode())), None)
        if entry is None:
            entry = fb.MetadataT()
            entry.name, entry.buffer = name, len(model.buffers)
            model.buffers.append(fb.BufferT())
            model.metadata = [*(model.metadata or ()), entry]
        model.buffers[entry.buffer].data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    builder = _AlignedBuilder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _finish(converter, form: str, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    if form == "int8":
        if calibration is None:
            raise ValueError("int8 export needs calibration faces")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([to_model_input(face[np.newaxis])] for face in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif form == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif form != "float32":
        raise ValueError(f"unknown form {form!r}")
    return converter.convert()


def median_latency_ms(classifier, repeats: int = 300, faces: int = 1) -> float:
    """Median time of one batch of `faces` faces (default: batch 1) through a classifier's `predict_probabilities`."""
    batch = np.random.default_rng(0).integers(0, 256, (faces, 48, 48), dtype=np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_probabilities(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="trained .keras model (e.g. runs/NAME/best.keras)")
    parser.add_argument("--out", default="models", help="folder for the .tflite files and export.json")
    parser.add_argument("--data", help="dataset (CSV or folder): calibration from train, accuracy check on --split")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS), help="serving forms to write")
    parser.add_argument(
        "--calibration-size", type=int, default=500, help="training faces that set the int8 model's value ranges"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-repeats", type=int, default=300, help="batch-1 calls timed per form")
    parser.add_argument(
        "--flip-tta",
        choices=("on", "off"),
        default="on",
        help="recorded in each file: whether the server averages each face with its mirror image",
    )
    args = parser.parse_args(argv)
    if args.calibration_size < 1:
        parser.error("--calibration-size must be at least 1")
    flip_tta = args.flip_tta == "on"

    from training.evaluate import predict_probabilities, score_all, with_votes
    from training.model_files import ModelFileError, read_model
    from webapp.vision.classifier import EmotionClassifier

    try:
        model = read_model(args.model)
        train = load_split(args.data, "train") if args.data else None
        held_out = with_votes(load_split(args.data, args.split), args.data, None) if args.data else None
    except (ModelFileError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if train is not None:
        pick = np.random.default_rng(args.seed).choice(
            len(train), min(args.calibration_size, len(train)), replace=False
        )
        calibration = train.images[pick]
    else:
        print("no --data: calibrating int8 on random faces (accuracy will suffer); pass --data for a real export")
        calibration = np.random.default_rng(args.seed).integers(0, 256, (args.calibration_size, 48, 48), dtype=np.uint8)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": args.model, "flip_tta": flip_tta, "forms": {}}
    paths = {"keras": args.model}
    for form in args.forms:
        path = out / f"emotion_{form}.tflite"
        path.write_bytes(convert(model, form, calibration, flip_tta))
        paths[form] = str(path)
    print(f"{'form':<9}{'size KB':>9}{'accuracy':>10}{'vs keras':>10}{'FER+':>8}{'ms/face':>9}")
    for form, path in paths.items():
        classifier = EmotionClassifier(path, flip_tta=flip_tta)
        entry = {
            "path": path,
            "size_kb": round(os.path.getsize(path) / 1024, 1),
            "median_ms_per_face": round(median_latency_ms(classifier, args.latency_repeats), 3),
        }
        if held_out is not None:
            result = score_all(held_out, predict_probabilities(classifier, held_out.images))
            entry["accuracy"] = round(result.accuracy, 4)
            if result.ferplus is not None:
                entry["ferplus_accuracy"] = round(result.ferplus.accuracy, 4)
        summary["forms"][form] = entry
        base = summary["forms"]["keras"].get("accuracy")
        delta = f"{entry['accuracy'] - base:+.4f}" if held_out is not None else "-"
        accuracy = f"{entry['accuracy']:.4f}" if held_out is not None else "-"
        ferplus = f"{entry['ferplus_accuracy']:.4f}" if "ferplus_accuracy" in entry else "-"
        print(f"{form:<9}{entry['size_kb']:>9}{accuracy:>10}{delta:>10}{ferplus:>8}{entry['median_ms_per_face']:>9}")
    if held_out is not None:
        summary["data"] = held_out.source
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {', '.join(paths[f] for f in args.forms)} and {out / 'export.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
