"""Where a training epoch's time goes: images/s of the input pipeline alone, of the training step
alone, and of the two together, as `training.train` runs them.

    python -m bench.train_speed [--batches 40] [--widths 32 40]

- input pipeline: `training.train.make_datasets` (shuffle, batch, augment) drained with no model;
- training step: `model.fit` on one batch already in memory, repeated, so it never waits for data;
  at 2 threads (one run) and at 1 thread (`--threads 1`, as when two runs share the two cores);
- together: `model.fit` on the real pipeline with full augmentation.

s/epoch is FER-2013's 28,709 training images at that rate. Pause training runs first (or
compare rows of one run only): the figures are throughputs of a shared CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tests.harness import FER2013

TRAIN_IMAGES = 28_709
REPEATS = 3
MIN_BATCHES = 20


def train_args(**options):
    from training.train import parse_args

    flags = ["--data", "-", "--epochs", "30"]
    for name, value in options.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return parse_args(flags)


def pipeline_rate(train, augment: str, batches: int, batch_size: int) -> float:
    """Images per second that the tf.data pipeline alone delivers for `augment`."""
    from training.train import make_datasets

    train_ds, _ = make_datasets(train_args(augment=augment, batch_size=batch_size), train, train, None)
    iterator = iter(train_ds.repeat())
    next(iterator)  # builds the pipeline and fills the shuffle buffer
    best = float("inf")
    for _ in range(REPEATS):  # the best of several, as for the step: the two are compared
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        best = min(best, time.perf_counter() - start)
    return batches * batch_size / best


def fit_rate(width: int, xla: bool, batches: int, batch_size: int, train=None) -> float:
    """Images per second of `model.fit` for the compact CNN of `width`: on one in-memory batch
    repeated (the step alone), or on the real fully augmented pipeline over `train`."""
    import tensorflow as tf

    from training.model import make_model
    from training.train import compile_model, make_datasets
    from webapp.vision.labels import EMOTIONS_WITH_CONTEMPT

    args = train_args(batch_size=batch_size)
    model = make_model("compact", width=width, classes=EMOTIONS_WITH_CONTEMPT)
    compile_model(model, args, steps_per_epoch=450, prior=np.full(8, 1 / 8))
    model.jit_compile = xla
    if train is None:
        rng = np.random.default_rng(0)
        x = rng.random((batch_size, 48, 48, 1), dtype=np.float32)
        y = np.eye(8, dtype=np.float32)[rng.integers(0, 8, batch_size)]
        data = tf.data.Dataset.from_tensors((x, y)).repeat()
    else:
        data = make_datasets(args, train, train, None)[0].repeat()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # traces (and with XLA compiles) the step
    best = float("inf")
    for _ in range(REPEATS):  # the best of several: other work on a shared CPU only ever slows a run
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=batches, epochs=1, verbose=0, shuffle=False)
        best = min(best, time.perf_counter() - start)
    return batches * batch_size / best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", default=str(FER2013))
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 40])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    parser.add_argument("--step-only", action="store_true", help="only the training-step rows (used for --threads 1)")
    args = parser.parse_args(argv)
    if args.batches < MIN_BATCHES:
        # a few batches are mostly start-up and scheduling noise: rows came out in the wrong order
        parser.error(f"--batches must be at least {MIN_BATCHES} for rates worth comparing")

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    threads = args.threads or os.cpu_count()

    from training.data import load_split
    from training.train import LabeledFaces

    def row(name: str, rate: float) -> None:
        print(f"{name:<52}{rate:>10.0f}{TRAIN_IMAGES / rate:>9.0f}", flush=True)

    if not args.step_only:
        print(
            f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, batch {args.batch_size}, {args.batches} batches"
        )
        header = f"{'stage':<52}{'images/s':>10}{'s/epoch':>9}"
        print(f"{header}\n{'-' * len(header)}")
        data = load_split(args.data, "train")
        train = LabeledFaces(data.images, np.eye(8, dtype=np.float32)[data.labels], data.keys)
        for augment in ("none", "sharp", "full"):
            row(
                f"input pipeline alone, augment {augment}", pipeline_rate(train, augment, args.batches, args.batch_size)
            )
        for width in args.widths:
            for xla in (False, True):
                rate = fit_rate(width, xla, args.batches, args.batch_size, train)
                row(f"pipeline (full) + step, width {width}{', XLA' if xla else ''}, {threads} threads", rate)
    for width in args.widths:
        for xla in (False, True):
            rate = fit_rate(width, xla, args.batches, args.batch_size)
            row(f"training step alone, width {width}{', XLA' if xla else ''}, {threads} thread(s)", rate)
    if not args.step_only and threads > 1:
        # the thread count is fixed once TensorFlow starts: the 1-thread rows come from a second process
        flags = ["--threads", "1", "--step-only", "--batches", str(args.batches), "--batch-size", str(args.batch_size)]
        subprocess.run(
            [sys.executable, "-m", "bench.train_speed", *flags, "--widths", *map(str, args.widths)], check=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
