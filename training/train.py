"""Train the emotion classifier on FER-2013, with FER-2013's labels or FER+'s votes.

    python -m training.train --data ../shared/datasets/fer2013 --epochs 30
    python -m training.train --data ../shared/datasets/fer2013 --labels ferplus-votes --classes 8 --fer2013-weight 0.25

--labels picks the targets: FER-2013's one label per image, FER+'s majority of ten
annotators (ties left out), or FER+'s vote distribution (see `training.ferplus`); FER+
labels are read from ferplus_votes.csv beside the data (or --votes). --classes 8 adds
contempt, which only FER+ has.

Each run writes to its own folder (default runs/<timestamp>): hparams.json,
model_summary.txt, log.csv, best.keras (highest val accuracy), last.keras (for
--resume) and history.json. Resume an interrupted run with --resume RUN_DIR.
Fine-tune a trained model with --init-from MODEL.keras (fresh optimizer and
schedule), e.g. on sharp faces:

    python -m training.train --data ../shared/datasets/fer2013 --init-from checkpoints/compact-w40-cwnone-e36/last.keras --augment sharp --lr 2e-4 --warmup-epochs 0.2 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import NamedTuple

import numpy as np

from training.augment import AUGMENT_MODES
from training.data import DataError
from training.ferplus import LABEL_MODES
from training.model_files import UNREADABLE_MODEL_ERRORS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", help="fer2013.csv, or a folder with train/ and val/ (or test/) emotion folders")
    parser.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default="fer2013",
        help="targets: FER-2013's label, FER+'s majority vote, or FER+'s vote distribution",
    )
    parser.add_argument("--classes", type=int, choices=(7, 8), default=7, help="8 adds contempt (FER+ labels only)")
    parser.add_argument(
        "--fer2013-weight",
        type=float,
        default=0.0,
        help="FER+ labels: share of each target given to the FER-2013 label (counters the votes' lean to neutral)",
    )
    parser.add_argument("--votes", default=None, help="FER+ vote table (default: ferplus_votes.csv beside --data)")
    parser.add_argument(
        "--logit-adjust",
        type=float,
        default=0.0,
        metavar="TAU",
        help="train on probabilities scaled by prior**TAU (logit-adjusted loss: rare classes gain at inference)",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        metavar="MODEL",
        help="distil: blend this trained model's probabilities (flip TTA, unaugmented faces) into the training targets",
    )
    parser.add_argument(
        "--teacher-weight", type=float, default=0.5, help="with --teacher: share of each target taken from the teacher"
    )
    parser.add_argument("--arch", choices=("compact", "mobilenetv2"), default="compact")
    parser.add_argument("--width", type=int, default=32, help="compact CNN: channels of the first stage")
    parser.add_argument(
        "--stem-convs",
        type=int,
        default=1,
        help="compact CNN: convolutions at full 48x48 resolution, before the first pooling",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="total epochs (default 30); with --resume, a new total re-fits the cosine schedule",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--weight-decay", type=float, default=0.05, help="decoupled AdamW weight decay")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.4)
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="MOMENTUM",
        help="validate and save an exponential moving average of the weights (e.g. 0.999); 0: off",
    )
    parser.add_argument(
        "--sam",
        type=float,
        default=0.0,
        metavar="RHO",
        help="sharpness-aware minimisation of radius RHO (e.g. 0.05; two forward and backward passes a step); 0: off",
    )
    parser.add_argument(
        "--class-weights",
        choices=("none", "sqrt", "balanced"),
        default="sqrt",
        help="loss weights per class: none, (N/(K*n_c))**0.5, or N/(K*n_c)",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_MODES,
        default="full",
        help="full: flip/rotate/zoom/shift/contrast (softens images: the model gets an InferenceBlur); sharp: flip/whole-pixel shift/contrast; none",
    )
    parser.add_argument(
        "--erase",
        type=float,
        default=0.0,
        metavar="PROB",
        help="random erasing: with this probability, hide a rectangle of each face (2-20%% of it) behind noise; 0: off",
    )
    parser.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="blend each image and its target with another of the batch, weight ~ Beta(ALPHA, ALPHA); 0: off",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="MODEL",
        help="fine-tune this trained .keras model (its architecture, width and dropout; an InferenceBlur is kept only for --augment full)",
    )
    parser.add_argument(
        "--widen",
        type=int,
        default=0,
        metavar="WIDTH",
        help="with --init-from a compact CNN: widen it to WIDTH first-stage channels, computing the same function (training.widen)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="train on N images drawn at random (by --seed) from the training split, for smoke tests; 0: all",
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    parser.add_argument("--name", default=None, help="run folder name (default: a timestamp)")
    parser.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from last.keras (--data, --votes and --epochs given here replace its recorded ones)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra-op threads (0: all cores); two 1-thread runs side by side beat one 2-thread run on 2 cores",
    )
    parser.add_argument(
        "--xla",
        action="store_true",
        help="compile the train step with XLA (slower with TensorFlow 2.21 on the 2-core dev CPU: see bench.train_speed)",
    )
    args = parser.parse_args(argv)
    if not args.data and not args.resume:
        parser.error("--data is required (unless --resume)")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.limit < 0:
        parser.error("--limit must be >= 0 (0: every training image)")
    if not 0 <= args.fer2013_weight <= 1:  # (NaN fails too)
        parser.error("--fer2013-weight must be in [0, 1]: the share of each target given to the FER-2013 label")
    if args.teacher and not 0 <= args.teacher_weight <= 1:
        parser.error("--teacher-weight must be in [0, 1]")
    if not 0 <= args.ema < 1:
        parser.error("--ema must be in [0, 1): the share of the average kept at each step")
    if not args.sam >= 0:  # (NaN fails too)
        parser.error("--sam must be >= 0: the radius of the sharpness-aware step")
    if args.stem_convs < 1:
        parser.error("--stem-convs must be at least 1")
    if not 0 <= args.erase <= 1:
        parser.error("--erase must be in [0, 1]: the share of faces that get a rectangle erased")
    if args.stem_convs != 1 and (args.init_from or args.arch != "compact"):
        parser.error("--stem-convs shapes a new compact CNN (a fine-tune keeps its model's stem)")
    if args.widen and not args.init_from:
        parser.error("--widen needs --init-from (a new model takes --width)")
    if args.classes == 8 and args.labels == "fer2013":
        parser.error("--classes 8 (contempt) needs FER+ labels: --labels ferplus-majority or ferplus-votes")
    return args


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray | None:
    """Per-class loss weights that counter FER-2013's imbalance (disgust is 1.5% of Training).

    `counts` may be fractional: the summed targets of soft labels. A class with no targets is
    weighted 0 and left out of K: it weighs no face, and counting it would scale the others' weights
    as if it shared their mass."""
    if mode == "none":
        return None
    present = counts > 0
    raw = np.where(present, counts.sum() / (present.sum() * np.where(present, counts, 1)), 0.0)
    return np.sqrt(raw) if mode == "sqrt" else raw


def warn_of_empty_classes(classes: tuple[str, ...], counts: np.ndarray) -> None:
    """Say which of the model's classes no training target names: the model cannot learn them."""
    empty = [name for name, count in zip(classes, counts, strict=True) if not count > 0]
    if empty:
        print(
            f"warning: no training targets for {', '.join(empty)}: the model cannot learn to recognise "
            + ("it" if len(empty) == 1 else "them"),
            file=sys.stderr,
        )


class LabeledFaces(NamedTuple):
    """Faces, their target distributions over the model's classes, and their keys (see `FaceDataset`)."""

    images: np.ndarray
    targets: np.ndarray
    keys: tuple[str, ...]

    def sample(self, count: int, seed: int) -> LabeledFaces:
        """`count` faces drawn at random (for --limit smoke runs)."""
        order = np.random.default_rng(seed).permutation(len(self.images))[:count]
        return LabeledFaces(self.images[order], self.targets[order], tuple(np.asarray(self.keys)[order]))


def labeled(dataset, args, fer2013_weight: float) -> LabeledFaces:
    """`dataset`'s faces with the targets `args.labels` asks for (images without one are left out)."""
    from training.ferplus import training_targets
    from webapp.vision.labels import classes_for

    selection, targets = training_targets(dataset, args.labels, classes_for(args.classes), fer2013_weight)
    kept = dataset.subset(selection)
    return LabeledFaces(kept.images, targets, kept.keys)


def load_splits(args, require_val: bool = True) -> tuple[LabeledFaces, LabeledFaces | None]:
    """Train and val faces with their targets. Val is scored against FER+'s majority (ties
    left out) when training on FER+ labels, so the best checkpoint is the best at consensus.
    Without `require_val`, a data folder with no val split gives None for it."""
    from training.data import check_distinct_splits, has_split, load_split
    from training.ferplus import attach_votes, votes_table

    check_distinct_splits(args.data)
    train = load_split(args.data, "train")
    # only an absent split is optional: an unreadable one is still an error
    val = load_split(args.data, "val") if require_val or has_split(args.data, "val") else None
    if args.labels == "fer2013":
        return labeled(train, args, 0.0), labeled(val, args, 0.0) if val is not None else None
    table = votes_table(args.data, args.votes)
    if table is None:
        raise DataError(
            f"--labels {args.labels} needs FER+ votes: no ferplus_votes.csv beside {args.data}; pass --votes"
        )
    if val is not None:
        val_args = argparse.Namespace(**{**vars(args), "labels": "ferplus-majority"})
        val = labeled(attach_votes(val, table), val_args, 0.0)
    return labeled(attach_votes(train, table), args, args.fer2013_weight), val


def with_teacher(train: LabeledFaces, args, run_dir: Path) -> LabeledFaces:
    """`train` with `args.teacher_weight` of each target from the teacher (unchanged without one).

    The teacher is a model, run once here, or its saved probabilities (`distill.TEACHER_FILE`);
    either way they are saved in `run_dir`, where a resumed run finds them."""
    from training.distill import TEACHER_FILE, blend, load_teacher, save_teacher, teacher_probabilities
    from webapp.vision.labels import classes_for

    if not args.teacher:
        return train
    classes, saved = classes_for(args.classes), run_dir / TEACHER_FILE
    if saved.exists() or args.teacher.endswith(".npz"):
        teacher = load_teacher(saved if saved.exists() else args.teacher, train.keys, classes)
    else:
        teacher = teacher_probabilities(args.teacher, train.images, classes)
    if not saved.exists():
        save_teacher(saved, train.keys, teacher, classes, args.teacher)
    agreement = (teacher.argmax(1) == train.targets.argmax(1)).mean()
    print(f"teacher {args.teacher}: agrees with the labels' top class on {agreement:.3f} of train")
    return LabeledFaces(train.images, blend(train.targets, teacher, args.teacher_weight), train.keys)


def make_loss(args, prior: np.ndarray):
    """Cross-entropy on soft or one-hot targets, logit-adjusted by `prior`**TAU when asked."""
    import keras

    from training.losses import LogitAdjustedCrossEntropy

    if not args.logit_adjust:
        return keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
    return LogitAdjustedCrossEntropy(prior, args.logit_adjust, label_smoothing=args.label_smoothing)


def draw_seed(seed: int, epochs_done: int) -> int:
    """The seed of one session's random draws (shuffle order, augmentation, mixup, dropout).

    Every session starts its draws from the seed, so a resumed session would replay the views the
    run's first epoch saw, in the same order; resumed after one epoch, it replays the epoch it just fit
    (a width-96 run's train accuracy jumped from 0.85 to 0.88 and back when it did). A fresh run keeps
    the seed, so its draws are as before."""
    return seed + 7919 * epochs_done


def make_datasets(args, train: LabeledFaces, val: LabeledFaces, weights: np.ndarray | None, seed: int | None = None):
    """tf.data pipelines: shuffled, weighted, augmented batches for training (drawn from `seed`, by
    default `args.seed`); plain batches for val."""
    import tensorflow as tf

    from training.augment import make_augmenter
    from webapp.vision.preprocess import to_model_input

    seed = args.seed if seed is None else seed
    tensors = (to_model_input(train.images), train.targets)
    if weights is not None:
        tensors += ((train.targets @ weights).astype(np.float32),)
    train_ds = (
        tf.data.Dataset.from_tensor_slices(tensors)
        .shuffle(len(train.images), seed=seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
    )
    if args.augment != "none":
        augmenter = make_augmenter(seed, args.augment)
        train_ds = train_ds.map(
            lambda x, *rest: (augmenter(x, training=True), *rest), num_parallel_calls=tf.data.AUTOTUNE
        )
    if args.erase:
        from training.augment import make_eraser

        eraser = make_eraser(args.erase, seed + 5)
        train_ds = train_ds.map(lambda x, *rest: (eraser(x, training=True), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    if args.mixup:
        from training.augment import add_mixup

        train_ds = add_mixup(train_ds, args.mixup, seed)
    val_ds = tf.data.Dataset.from_tensor_slices((to_model_input(val.images), val.targets)).batch(256)
    return train_ds.prefetch(tf.data.AUTOTUNE), val_ds


def first_conv_filters(classifier) -> int:
    """The compact CNN's width: the channels of its first convolution."""
    import keras

    return next(layer.filters for layer in classifier.layers if isinstance(layer, keras.layers.Conv2D))


def fine_tuned_architecture(model, path: str) -> tuple[str, int | None, int | None]:
    """(arch, width, stem_convs) of a model given to --init-from, as the run records them.

    Raises:
        ValueError: for a model that is neither a compact CNN nor MobileNetV2 (an ensemble: its
            members are whole models inside it, with no layers a fine-tune can record).
    """
    from training.model import compact_cnn_shape

    if "mobilenetv2" in model.name:
        return "mobilenetv2", None, None
    shape = compact_cnn_shape(model)
    if shape is None:
        raise ValueError(
            f"--init-from {path}: {model.name} is neither a compact CNN nor MobileNetV2 "
            "(an ensemble is not fine-tuned: fine-tune its members)"
        )
    return "compact", *shape


def build_model(args):
    """An untrained model for `args`, or the --init-from model with the blur this run's augmentation needs."""
    from training.model import blur_sigma_for, make_model, with_blur_sigma, with_classes
    from training.model_files import read_model
    from webapp.vision.labels import classes_for

    sigma, classes = blur_sigma_for(args.augment), classes_for(args.classes)
    if args.init_from:
        model = read_model(args.init_from)
        fine_tuned_architecture(model, args.init_from)  # before the copies below, which assume one
        model = with_classes(with_blur_sigma(model, sigma), classes)
        if args.widen:
            from training.widen import widen

            model = widen(model, args.widen, seed=args.seed)
        return model
    return make_model(
        args.arch, width=args.width, dropout=args.dropout, blur_sigma=sigma, classes=classes, stem_convs=args.stem_convs
    )


def compile_model(
    model, args, steps_per_epoch: int, prior: np.ndarray, start_step: int = 0, rewarm_steps: int = 0
) -> None:
    """Attach AdamW on a warm-up + cosine schedule over `args.epochs`, the loss and the metrics.

    `prior` is the share of each class in the training targets (for --logit-adjust);
    `start_step` and `rewarm_steps` continue a run with a fresh optimizer (`WarmupCosine`)."""
    import keras

    from training.schedule import WarmupCosine

    schedule = WarmupCosine(
        args.lr,
        steps_per_epoch * args.epochs,
        int(steps_per_epoch * args.warmup_epochs),
        start_step=start_step,
        rewarm_steps=rewarm_steps,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(
            schedule,
            weight_decay=args.weight_decay,
            use_ema=bool(args.ema),
            ema_momentum=args.ema or 0.99,
        ),
        loss=make_loss(args, prior),
        metrics=["accuracy"],
    )


def resume_model(checkpoint: Path, args, steps_per_epoch: int, prior: np.ndarray, epochs_done: int):
    """The checkpoint's model, with its optimizer state when it kept one, on a schedule re-fitted to `args.epochs`.

    A new epoch budget keeps the warm-up and stretches or shrinks the cosine to end at the
    new last step; the optimizer's moments and step count carry over. A checkpoint that kept
    only weights (`training.slim`: how `checkpoints/` keeps a run in progress) goes on with a
    fresh optimizer: the cosine resumes after `epochs_done`, ramped up again over a tenth of
    an epoch while Adam's moments refill. An --ema run goes on from its averaged weights then
    (its raw ones lived in the optimizer state).
    """
    import keras

    import training.losses  # (registers the logit-adjusted loss a checkpoint may name)
    import training.schedule  # noqa: F401  (registers WarmupCosine, which the checkpoint's optimizer names)
    import webapp.vision.layers  # noqa: F401  (registers InferenceBlur)

    model = keras.models.load_model(checkpoint)
    state = getattr(model, "optimizer", None)
    run_step = epochs_done * steps_per_epoch
    if state is None:  # load_model leaves a file saved without an optimizer uncompiled
        print(f"{checkpoint} holds weights only: going on with a fresh optimizer from step {run_step}")
        compile_model(model, args, steps_per_epoch, prior, start_step=run_step, rewarm_steps=steps_per_epoch // 10)
        return model
    # a run once continued with a fresh optimizer counts fewer optimizer steps than run steps
    compile_model(model, args, steps_per_epoch, prior, start_step=run_step - int(state.iterations))
    model.optimizer.build(model.trainable_variables)
    if len(model.optimizer.variables) != len(state.variables):
        raise ValueError(f"{checkpoint}: its optimizer state does not match this run's optimizer")
    for variable, saved in zip(model.optimizer.variables, state.variables, strict=True):
        variable.assign(saved)
    if args.ema:
        swap_raw_weights_back(model, checkpoint)
    return model


def swap_raw_weights_back(model, checkpoint: Path) -> None:
    """Put an --ema checkpoint's raw weights back in the model and its average in the slots.

    The checkpoint was saved with the averaged weights swapped into the model (`KeepRawWeights`)
    and the raw ones in the optimizer's average slots: an uninterrupted run has them the other way."""
    import keras

    pairs = list(zip(model.trainable_variables, model.optimizer._model_variables_moving_average, strict=True))
    as_arrays = [(keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(a)) for w, a in pairs]
    if all(np.array_equal(weights, average) for weights, average in as_arrays):
        # Keras's own swap callback, at a run's last epoch, wrote the average over the raw weights
        print(
            f"{checkpoint} holds the average in place of its raw weights (saved by an older version): going on from it"
        )
    for (weights, average), (weight_values, average_values) in zip(pairs, as_arrays, strict=True):
        weights.assign(average_values)
        average.assign(weight_values)


def logged_val_accuracy(run_dir: Path) -> list[float]:
    """Each finished epoch's val accuracy, from the run's log.csv (empty without one)."""
    import csv

    if not (run_dir / "log.csv").exists():
        return []
    with open(run_dir / "log.csv") as handle:
        return [float(row["val_accuracy"]) for row in csv.DictReader(handle)]


def restore_best(run_dir: Path) -> None:
    """Seed a missing best.keras from last.keras when the log's last epoch was its best.

    `checkpoints/` keeps a run in progress as its last weights only. When an earlier epoch was
    the best, its weights are gone: best.keras is then written only by an epoch that beats it,
    so it never claims the log's best for weights that are not that epoch's."""
    import shutil

    if (run_dir / "best.keras").exists():
        return
    scores = logged_val_accuracy(run_dir)
    if scores and scores[-1] >= max(scores):
        write_whole(run_dir / "best.keras", lambda partial: shutil.copyfile(run_dir / "last.keras", partial))
    elif scores:
        best = scores.index(max(scores))
        print(
            f"{run_dir}: best epoch {best + 1} ({max(scores):.4f}) was not kept; best.keras waits for one that beats it"
        )


def forget_unfinished_epoch(run_dir: Path, epochs_done: int) -> None:
    """Cut log.csv back to the `epochs_done` epochs that state.json counts.

    The log's row is written first at an epoch's end and state.json last (`EPOCH_RECORDS`): a run
    stopped in between logged an epoch it will run again, and would log it twice."""
    log = run_dir / "log.csv"
    if not log.exists():
        return
    lines = log.read_text().splitlines(keepends=True)
    if len(lines) > epochs_done + 1:
        log.write_text("".join(lines[: epochs_done + 1]))


def write_run_record(run_dir: Path, args, model) -> None:
    """hparams.json (the run's full configuration) and model_summary.txt."""
    (run_dir / "hparams.json").write_text(json.dumps(vars(args), indent=2) + "\n")
    with open(run_dir / "model_summary.txt", "w") as handle:
        model.summary(print_fn=lambda line, **_: handle.write(line + "\n"), expand_nested=True)


def make_callbacks(run_dir: Path, resume: bool, train_images: int, ema: bool = False) -> list:
    """CSV log, best and last checkpoints, and state.json (epochs done, seconds per epoch).

    With `ema`, the averaged weights are swapped in for validation and the checkpoints (the raw
    ones wait in the optimizer's average slots, where `resume_model` finds them, unless the
    checkpoint was slimmed)."""
    import keras

    class KeepRawWeights(keras.callbacks.SwapEMAWeights):
        """Swap the averaged weights in at each epoch's end, the raw ones into the average slots.

        Keras's own callback, at the last epoch, also copies the average over the slots (for fit's
        final overwrite of the weights with the slots), so the last.keras of a finished run held the
        average twice and an extended run (--resume with more --epochs) went on from it, its raw
        weights lost. Here every epoch's checkpoints hold both; the model left in memory after fit
        holds the raw weights, which nothing saves."""

        def on_epoch_end(self, epoch, logs=None):
            if not self._ema_weights_in_model:
                self._swap_variables()
                self._ema_weights_in_model = True

    class SaveState(keras.callbacks.Callback):
        """Record finished epochs and wall time, so --resume and the model card can use them."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            state_file = run_dir / "state.json"
            state = json.loads(state_file.read_text()) if state_file.exists() else {"epoch_seconds": []}
            state.update(epochs_done=epoch + 1, train_images=train_images)
            state["epoch_seconds"].append(round(time.time() - self.started, 1))
            write_whole(state_file, lambda partial: partial.write_text(json.dumps(state, indent=2) + "\n"))

    class SaveModel(keras.callbacks.Callback):
        """Save the model at each epoch's end (with `monitor`: only when it beats its best so far).

        Keras writes a .keras file in place, so a run killed while saving (or a full disk) lost its
        last good checkpoint; this writes beside it and renames, which replaces a file whole or not at all.
        """

        def __init__(self, path: Path, monitor: str | None = None, best: float = float("-inf")):
            super().__init__()
            self.path, self.monitor, self.best = path, monitor, best

        def on_epoch_end(self, epoch, logs=None):
            if self.monitor:
                score = (logs or {}).get(self.monitor)
                if score is None or not score > self.best:
                    return
                self.best = float(score)
            write_whole(self.path, self.model.save)

    # a resumed run's best checkpoint must know the best accuracy so far
    best_so_far = max(logged_val_accuracy(run_dir), default=float("-inf")) if resume else float("-inf")
    swap = [KeepRawWeights(swap_on_epoch=True)] if ema else []
    return [
        *swap,
        keras.callbacks.CSVLogger(str(run_dir / "log.csv"), append=resume),
        SaveModel(run_dir / "best.keras", monitor="val_accuracy", best=best_so_far),
        SaveModel(run_dir / "last.keras"),
        SaveState(),
    ]


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """`write(partial)` beside `path`, then rename it over `path`: a run stopped mid-write leaves the
    old file whole. Same folder, so the rename is atomic; same suffix, which Keras checks."""
    partial = path.with_name(f".partial-{path.name}")
    write(partial)
    os.replace(partial, path)


def default_args() -> dict:
    """Every option's default, as a run records its configuration (hparams.json)."""
    return vars(parse_args(["--data", "-"]))


# written, in this order, at the end of each epoch: a run goes on from both, as weights without the count
# of epochs behind them would restart the schedule from its start
EPOCH_RECORDS = ("last.keras", "state.json")


# what a --resume command may give: the rest is the run's
RESUME_OPTIONS = {"resume", "data", "votes", "epochs", "threads", "xla"}


def resumed_args(args) -> tuple[argparse.Namespace, int]:
    """The configuration of the run in `args.resume`, and its epochs done.

    This command's --data, --votes and --epochs replace the saved ones (a run trained on another
    machine goes on here, from the data as it lies here); --threads and --xla are this session's.

    Raises:
        ValueError: for a missing run folder, hparams.json, last.keras or state.json, or an --epochs
            the run has done.
    """
    run_dir = Path(args.resume)
    if not run_dir.is_dir():
        raise ValueError(f"--resume: no run folder {str(run_dir)!r}")
    for name in ("hparams.json", *EPOCH_RECORDS):
        if not (run_dir / name).is_file():
            raise ValueError(
                f"--resume: {run_dir} has no {name}: not a run folder, or its run stopped before an epoch ended"
            )
    epochs_done = json.loads((run_dir / "state.json").read_text())["epochs_done"]
    # runs recorded before an option existed ran with its default
    defaults = default_args()
    saved = {**defaults, **json.loads((run_dir / "hparams.json").read_text())}
    ignored = [
        name for name, value in vars(args).items() if name not in RESUME_OPTIONS and value != defaults.get(name, value)
    ]
    if ignored:
        print(
            f"--resume goes on with the run's own {', '.join('--' + name.replace('_', '-') for name in ignored)}: "
            "ignored here (start a new run, or --init-from its last.keras, to change them)",
            file=sys.stderr,
        )
    given = {name: getattr(args, name) for name in ("data", "votes", "epochs") if getattr(args, name) is not None}
    saved.update(given, resume=args.resume, threads=args.threads, xla=args.xla)
    if saved["epochs"] <= epochs_done:
        raise ValueError(
            f"--resume: {run_dir} has done {epochs_done} of its {saved['epochs']} epochs; "
            f"pass --epochs above {epochs_done} to go on"
        )
    return argparse.Namespace(**saved), epochs_done


def new_run_dir(args) -> Path:
    """The folder a fresh run will write to (made once its data loads).

    Raises:
        ValueError: when the folder exists already.
    """
    run_dir = Path(args.runs_dir) / (args.name or time.strftime("%Y%m%d-%H%M%S"))
    if all((run_dir / name).exists() for name in EPOCH_RECORDS):
        raise ValueError(f"run folder {run_dir} exists: go on with --resume {run_dir}, or pick another --name")
    if run_dir.exists():  # stopped before its first epoch ended: nothing to go on from
        raise ValueError(f"run folder {run_dir} exists without a finished epoch: delete it, or pick another --name")
    return run_dir


def failed_start(run_dir: Path, resumed: bool) -> int:
    """Exit status 2, after removing a fresh run's folder so that the same command can run again."""
    import shutil

    if not resumed:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 2


def go_on_with(run_dir: Path, args, steps_per_epoch: int, prior: np.ndarray, epochs_done: int):
    """The resumed run's model from its last.keras; only once it loads is the run's record brought up
    to this session (hparams.json rewritten, log.csv cut to the epochs done, best.keras restored), so
    a failed resume leaves the run as it was. None, after the error line, when it cannot be read back."""
    checkpoint = run_dir / "last.keras"
    try:
        model = resume_model(checkpoint, args, steps_per_epoch, prior, epochs_done)
    except UNREADABLE_MODEL_ERRORS as error:
        print(f"error: --resume: {checkpoint} cannot be read back ({error})", file=sys.stderr)
        return None
    (run_dir / "hparams.json").write_text(json.dumps(vars(args), indent=2) + "\n")
    forget_unfinished_epoch(run_dir, epochs_done)
    restore_best(run_dir)
    return model


def start_model(run_dir: Path, args, steps_per_epoch: int, prior: np.ndarray):
    """A fresh run's compiled model, its record written; None, after the error line, when it cannot be built."""
    try:
        model = build_model(args)
        if args.init_from:  # the run's record names the architecture it fine-tunes (as widened)
            args.arch, args.width, args.stem_convs = fine_tuned_architecture(model, args.init_from)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    compile_model(model, args, steps_per_epoch, prior)
    write_run_record(run_dir, args, model)
    return model


def cap_warmup(args) -> None:
    """Keep a fresh run's warm-up shorter than the run, saying so when it was not.

    A run no longer than its warm-up trains at a rising rate throughout and never decays (the
    first try's `--epochs 1` with the default one-epoch warm-up); like `training.consistent`,
    such a run warms up in all but its last epoch."""
    if args.warmup_epochs < args.epochs:
        return
    capped = float(args.epochs - 1)
    print(
        f"note: --warmup-epochs {args.warmup_epochs:g} is not shorter than the run's {args.epochs} epochs: "
        f"warming up over {capped:g} instead"
    )
    args.warmup_epochs = capped


def main(argv=None) -> int:
    args = parse_args(argv)
    initial_epoch = 0
    try:
        if args.resume:
            args, initial_epoch = resumed_args(args)
            run_dir = Path(args.resume)
        else:
            args.epochs = 30 if args.epochs is None else args.epochs
            run_dir = new_run_dir(args)
            cap_warmup(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import keras
    import tensorflow as tf

    from training.data import DataError
    from training.sam import sharpness_aware
    from webapp.vision.labels import classes_for

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    session_seed = draw_seed(args.seed, initial_epoch)
    keras.utils.set_random_seed(session_seed)
    try:
        train, val = load_splits(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # only a start whose data loads makes the run folder (a resumed run's record waits for its model)
    if not args.resume:
        run_dir.mkdir(parents=True)
    if args.limit:
        train = train.sample(args.limit, args.seed)
    try:
        train = with_teacher(train, args, run_dir)
    except UNREADABLE_MODEL_ERRORS as error:
        print(f"error: --teacher: {error}", file=sys.stderr)
        return failed_start(run_dir, bool(args.resume))
    classes = classes_for(args.classes)
    counts = train.targets.sum(0)
    prior = counts / counts.sum()
    weights = class_weights(counts, args.class_weights)
    print(f"labels: {args.labels}; train: {len(train.images)} images from {args.data}; val: {len(val.images)}")
    print(
        "target mass per class: "
        + ", ".join(f"{name} {count:.0f}" for name, count in zip(classes, counts, strict=True))
    )
    warn_of_empty_classes(classes, counts)
    if weights is not None:
        print("class weights: " + ", ".join(f"{name} {w:.2f}" for name, w in zip(classes, weights, strict=True)))

    train_ds, val_ds = make_datasets(args, train, val, weights, session_seed)
    steps_per_epoch = int(np.ceil(len(train.images) / args.batch_size))
    if args.resume:
        model = go_on_with(run_dir, args, steps_per_epoch, prior, initial_epoch)
        if model is None:
            return 2
    else:
        model = start_model(run_dir, args, steps_per_epoch, prior)
        if model is None:
            return failed_start(run_dir, resumed=False)
    sharpness_aware(model, args.sam)
    model.jit_compile = args.xla
    if initial_epoch:
        print(f"resuming {run_dir} after epoch {initial_epoch} of {args.epochs}")
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # train_ds shuffles itself
        callbacks=make_callbacks(run_dir, bool(args.resume), len(train.images), bool(args.ema)),
        verbose=1 if sys.stdout.isatty() else 2,
    )
    print(f"run folder: {run_dir}")
    print(f"best val accuracy this session: {max(history.history.get('val_accuracy', [float('nan')])):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
