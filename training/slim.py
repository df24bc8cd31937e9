"""Keep a finished run's weights in checkpoints/: no optimizer state, each weight rounded to float16.

    python -m training.slim runs/NAME/best.keras checkpoints/NAME/best.keras

The result is an ordinary .keras file, half the size of the float32 weights (a sixth of a `last.keras`
that carries AdamW's two slots per weight). `webapp.vision.layers.load_model` reads it back into a
float32 model, so calibrate, export, choose and `--init-from` take it like any other. Rounding moves
a weight by at most 1 part in 2,048 (at most 3e-8 for weights under 6e-5), far finer than the int8
model the server runs; a weight beyond float16's range is refused rather than made infinite. With
`--data`, both files classify the val faces (flip TTA, as served) and the differences are printed
(the width-64 network: no face changes its top class).

A run in progress is kept the same way, with its record (hparams, log, state) beside it:

    python -m training.slim runs/NAME/last.keras checkpoints/NAME/last.keras --with-record

(with `--replace` in a later session: an existing destination is never written over without it).

`training.train --resume` goes on from a copy of that folder in runs/, with a fresh optimizer
(AdamW's slots are two more copies of the weights in float32: too big for the repository).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from training.distill import TEACHER_FILE

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WEIGHTS_ENTRY = "model.weights.h5"
# what explains a run, and lets `training.train --resume` go on with it
# (a distilled run's teacher probabilities included: its teacher model may not be kept)
RUN_RECORD = ("hparams.json", "log.csv", "state.json", "model_summary.txt", TEACHER_FILE)


def round_weights_to_float16(weights_h5: Path) -> int:
    """Rewrite every float32 array of a Keras weights file as float16; returns how many were rewritten."""
    import h5py

    with h5py.File(weights_h5, "r+") as store:
        arrays: list[str] = []
        store.visititems(lambda name, obj: arrays.append(name) if isinstance(obj, h5py.Dataset) else None)
        rewritten = 0
        for name in arrays:
            if store[name].dtype != np.float32:
                continue
            values = store[name][()]
            if not np.isfinite(values).all():
                raise ValueError(f"{name}: the weights hold NaN or infinity")
            with np.errstate(over="ignore"):  # checked just below, with the array's name
                rounded = values.astype(np.float16)
            if not np.isfinite(rounded).all():
                raise ValueError(f"{name}: a weight beyond float16's range (65,504); keep this model in float32")
            attributes = dict(store[name].attrs)
            del store[name]
            store.create_dataset(name, data=rounded).attrs.update(attributes)
            rewritten += 1
    return rewritten


def is_slim(keras_file: str | os.PathLike) -> bool:
    """Whether a .keras file is what `slim` makes: float16 weights and no optimizer state."""
    import h5py

    dtypes: set = set()
    with zipfile.ZipFile(keras_file) as archive:
        if WEIGHTS_ENTRY not in archive.namelist():
            return False
        with archive.open(WEIGHTS_ENTRY) as weights, h5py.File(weights) as store:
            if "optimizer" in store:
                return False
            store.visititems(lambda _, obj: dtypes.add(obj.dtype) if isinstance(obj, h5py.Dataset) else None)
    floats = {dtype for dtype in dtypes if np.issubdtype(dtype, np.floating)}
    return floats == {np.dtype(np.float16)}


def slim(source: Path, destination: Path) -> int:
    """Save `source`'s model without optimizer state and with float16 weights at `destination`."""
    import h5py

    from webapp.vision.layers import load_model

    model = load_model(source)  # uncompiled: saved without optimizer state
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "plain.keras"
        model.save(plain)
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(plain) as archive:
            entries = archive.namelist()
            archive.extractall(unpacked)
        rewritten = round_weights_to_float16(unpacked / WEIGHTS_ENTRY)
        # h5py leaves the deleted arrays' space in the file; copying it keeps only what is live
        packed = unpacked / "packed.h5"
        with h5py.File(unpacked / WEIGHTS_ENTRY, "r") as loose, h5py.File(packed, "w") as tight:
            for key in loose:
                loose.copy(loose[key], tight, name=key)
            for key, value in loose.attrs.items():
                tight.attrs[key] = value
        shutil.move(packed, unpacked / WEIGHTS_ENTRY)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in entries:
                archive.write(unpacked / entry, entry)
    return rewritten


def compare(source: Path, destination: Path, faces: np.ndarray) -> tuple[int, float]:
    """How many of `faces` change top class between the two models, and the largest probability change."""
    from training.evaluate import predict_probabilities
    from webapp.vision.classifier import EmotionClassifier

    before, after = (predict_probabilities(EmotionClassifier(str(path)), faces) for path in (source, destination))
    return int((before.argmax(1) != after.argmax(1)).sum()), float(np.abs(before - after).max())


def copy_record(run: Path, kept: Path) -> None:
    """Copy the run's record (`RUN_RECORD`) from `run` to `kept`, saying what was copied."""
    record = [name for name in RUN_RECORD if (run / name).is_file()]
    if record and kept.resolve() == run.resolve():  # a slim copy beside its source: a file is not copied onto itself
        print(f"{kept}: the record ({', '.join(record)}) is there already")
        return
    for name in record:
        shutil.copyfile(run / name, kept / name)
    print(f"{kept}: copied {', '.join(record) or 'no record (none beside the source)'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.slim", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a trained .keras model (optimizer state is dropped)")
    parser.add_argument("destination", type=Path, help="where the slim .keras goes")
    parser.add_argument("--data", type=Path, help="compare both on this dataset's val faces (fer2013.csv or a folder)")
    parser.add_argument(
        "--with-record",
        action="store_true",
        help=f"copy the run's record ({', '.join(RUN_RECORD)}) beside the destination",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="write over an existing destination (and, with --with-record, its record): a run kept across sessions",
    )
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source} is not a file")
    if args.destination.resolve() == args.source.resolve():
        parser.error("the destination must differ from the source (they are compared, and the source is the record)")
    if not args.replace:
        taken = [args.destination] if args.destination.exists() else []
        if args.with_record and args.destination.parent.resolve() != args.source.parent.resolve():
            taken += [
                args.destination.parent / name for name in RUN_RECORD if (args.destination.parent / name).exists()
            ]
        if taken:
            parser.error(f"{taken[0]} exists: add --replace to write over it, or pick another destination")
    try:
        rewritten = slim(args.source, args.destination)
    except ValueError as error:
        print(f"error: {args.source}: {error}", file=sys.stderr)
        return 2
    mb = args.destination.stat().st_size / 1e6
    print(f"{args.destination}: {rewritten} weight arrays in float16, {mb:.1f} MB")
    if args.with_record:
        copy_record(args.source.parent, args.destination.parent)
    if args.data:
        from training.data import load_split

        faces = load_split(args.data, "val").images
        changed, largest = compare(args.source, args.destination, faces)
        print(f"val: top class changed on {changed} of {len(faces)} faces; largest probability change {largest:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
