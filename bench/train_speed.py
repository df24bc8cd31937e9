"""Where a training epoch's time goes: images/s of the input pipeline alone and of a training step alone.

    python -m bench.train_speed [--batches 60] [--width 40]

The input pipeline is `training.train.make_datasets` (shuffle, batch, augment) drained
without a model; the training step is `model.train_on_batch` on one batch already in
memory, so neither waits for the other. An epoch takes about
FER-2013's 28,709 images / min(pipeline, step) images/s, when the two overlap.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tests.harness import FER2013

TRAIN_IMAGES = 28_709


def pipeline_rate(train, augment: str, batches: int, batch_size: int) -> float:
    """Images per second that the tf.data pipeline alone delivers for `augment`."""
    from training.train import make_datasets, parse_args

    args = parse_args(["--data", "-", "--augment", augment, "--batch-size", str(batch_size)])
    train_ds, _ = make_datasets(args, train, train, None)
    iterator = iter(train_ds)
    next(iterator)  # builds the pipeline and fills the shuffle buffer
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def step_rate(width: int, xla: bool, batches: int, batch_size: int, classes: int) -> float:
    """Images per second of `train_on_batch` alone for the compact CNN of `width`."""
    from training.model import make_model
    from training.train import compile_model, parse_args
    from webapp.vision.labels import classes_for

    args = parse_args(["--data", "-", "--batch-size", str(batch_size), "--epochs", "30"])
    model = make_model("compact", width=width, classes=classes_for(classes))
    compile_model(model, args, steps_per_epoch=450, prior=np.full(classes, 1 / classes))
    model.jit_compile = xla
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 48, 48, 1), dtype=np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch_size)]
    for _ in range(3):  # traces (and with XLA compiles) the step
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(x, y)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(FER2013))
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 40])
    args = parser.parse_args(argv)

    import tensorflow as tf

    from training.data import load_split
    from training.train import LabeledFaces

    data = load_split(args.data, "train")
    train = LabeledFaces(data.images, np.eye(7, dtype=np.float32)[data.labels])
    print(
        f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, batch {args.batch_size}, {args.batches} batches each"
    )
    header = f"{'stage':<42}{'images/s':>10}{'s/epoch':>9}"
    print(header)
    print("-" * len(header))
    for augment in ("none", "sharp", "full"):
        rate = pipeline_rate(train, augment, args.batches, args.batch_size)
        print(f"{'input pipeline, augment ' + augment:<42}{rate:>10.0f}{TRAIN_IMAGES / rate:>9.0f}")
    for width in args.widths:
        for xla in (False, True):
            rate = step_rate(width, xla, args.batches, args.batch_size, 8)
            name = f"train step, width {width}" + (", XLA" if xla else "")
            print(f"{name:<42}{rate:>10.0f}{TRAIN_IMAGES / rate:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
