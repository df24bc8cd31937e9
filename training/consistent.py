"""Train several compact CNNs at once, optionally as students of teachers that see the same view.

    python -m training.consistent --data ../shared/datasets/fer2013 --out runs/teachers --widths 96 96 --epochs 60
    python -m training.consistent --data ../shared/datasets/fer2013 --out runs/students --widths 40 40 \\
        --teachers runs/teachers/w96-s0.keras runs/teachers/w96-s1.keras --teacher-weight 0.7 --epochs 120

`training.train` feeds one model from a TensorFlow input pipeline; this trainer keeps the
data in numpy arrays and does everything else inside one Keras model, so it runs on any
Keras backend: TensorFlow on a CPU (slowly), JAX or PyTorch on a GPU (`KERAS_BACKEND=jax`).
That one model augments a batch (`training.augment`, then mixup), runs the teachers on the
augmented batch, and feeds the same batch to every model being trained.

Teachers matter here because they see the augmented face: a distilled target for a shifted,
rotated or blended face is the teacher's reading of that face, not the label of the original
(function matching, Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and
consistent"). `training.distill` gives a student the teacher's reading of the unaugmented
faces instead, computed once, which is all a CPU can afford.

Each model is saved as `<out>/w<width>-s<seed>.keras` (models train with seeds --seed,
--seed + 1, ...), with `run.json` recording the options, the epochs and their time, and val
accuracy against the FER+ majority when val is there. `--time-budget SECONDS` replaces --epochs
with the number of epochs that end within that many seconds from the start, less `--reserve` for
saving and scoring, judged by the second epoch (the first also compiles); the learning rate warms
up meanwhile, so the schedule is set in time. `--save-teacher` also writes the ensemble's
probabilities for the training faces as `<out>/teacher.npz`, which `training.train --teacher`
accepts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training.augment import AUGMENT_MODES
from training.data import DataError
from training.ferplus import LABEL_MODES


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="fer2013.csv, or a folder with train/ (and val/) emotion folders")
    parser.add_argument("--votes", default=None, help="FER+ vote table (default: ferplus_votes.csv beside --data)")
    parser.add_argument("--out", required=True, help="folder for the trained models and run.json")
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("--widths", type=int, nargs="+", help="train one new compact CNN per width")
    models.add_argument("--init-from", nargs="+", metavar="MODEL", help="fine-tune these trained models instead")
    parser.add_argument(
        "--stem-convs", type=int, default=1, help="new compact CNNs: convolutions at 48x48, before the first pooling"
    )
    parser.add_argument("--teachers", nargs="*", default=[], help="trained models whose mean output is distilled")
    parser.add_argument("--teacher-weight", type=float, default=0.7, help="share of each target from the teachers")
    parser.add_argument("--labels", choices=LABEL_MODES, default="ferplus-votes")
    parser.add_argument("--classes", type=int, choices=(7, 8), default=8)
    parser.add_argument("--fer2013-weight", type=float, default=0.2, help="FER+ labels: share of FER-2013's label")
    parser.add_argument("--augment", choices=AUGMENT_MODES, default="full")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup with Beta(ALPHA, ALPHA)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--time-budget", type=float, default=None, metavar="SECONDS", help="replace --epochs with what fits"
    )
    parser.add_argument(
        "--reserve", type=float, default=30, metavar="SECONDS", help="of the budget, kept for the work after training"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    parser.add_argument("--warmup-epochs", type=int, default=3, help="the rate is set once per epoch")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--dropout", type=float, default=0.4)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N training images (smoke tests)")
    parser.add_argument("--save-teacher", action="store_true", help="write the teachers' train probabilities")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.teacher_weight <= 1:
        parser.error("--teacher-weight must be in [0, 1]")
    if args.stem_convs < 1:
        parser.error("--stem-convs must be at least 1")
    if args.stem_convs != 1 and args.init_from:
        parser.error("--stem-convs shapes new students (a fine-tune keeps its model's stem)")
    if args.save_teacher and not args.teachers:
        parser.error("--save-teacher needs --teachers")
    if args.classes == 8 and args.labels == "fer2013":
        parser.error("--classes 8 (contempt) needs FER+ labels: --labels ferplus-majority or ferplus-votes")
    if args.time_budget is not None and args.warmup_epochs < 2:
        parser.error("--time-budget needs --warmup-epochs >= 2: the run's length is decided after its second epoch")
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be positive")
    names = [student_name(path) for path in args.init_from or []]
    if len(set(names)) != len(names):
        parser.error(f"--init-from: two models would be saved under one name ({', '.join(names)})")
    return args


def load_faces(args):
    """Train faces with their targets, and val faces with FER+ majority labels (None when
    training on FER-2013 labels or without a val split: the GPU machine may carry only train)."""
    from training.train import load_splits

    train, val = load_splits(args, require_val=False)
    if args.limit:
        train = train.sample(args.limit, args.seed)
    if val is None or args.labels == "fer2013":
        return train, None
    return train, (val.images, val.targets.argmax(1))


def make_mixup_layer(alpha: float, seed: int):
    """A layer blending each (image, target) of a training batch with another of the batch; identity otherwise."""
    import keras
    from keras import ops

    class Mixup(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, inputs, training=None):
            images, targets = inputs
            if not training or not alpha:
                return images, targets
            size = ops.shape(images)[0]
            lam = keras.random.beta((size,), alpha, alpha, seed=self.seed_generator)
            lam = ops.maximum(lam, 1 - lam)  # each image keeps most of itself
            partner = keras.random.shuffle(ops.arange(size), seed=self.seed_generator)

            def blend(tensor):
                share = ops.reshape(lam, (-1,) + (1,) * (len(tensor.shape) - 1))
                return share * tensor + (1 - share) * ops.take(tensor, partner, axis=0)

            return blend(images), blend(targets)

    return Mixup(name="mixup")


def mean_prediction(models, images):
    """The models' mean probabilities, each averaged over the image and its mirror (as served)."""
    from keras import ops

    mirrored = ops.flip(images, axis=2)
    outputs = [model(view, training=False) for model in models for view in (images, mirrored)]
    return ops.stop_gradient(ops.mean(ops.stack(outputs), axis=0))


def make_teacher_layer(teachers, weight: float):
    """A layer turning (augmented images, label targets) into the targets blended with the
    teachers' reading of those images. The teachers are its frozen sublayers, so every
    backend passes their weights to the training step like the students'."""
    import keras

    class TeacherTargets(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.teachers = list(teachers)
            for teacher in self.teachers:
                teacher.trainable = False  # also keeps AdamW's weight decay off them

        def call(self, inputs):
            images, targets = inputs
            return weight * mean_prediction(self.teachers, images) + (1 - weight) * targets

    return TeacherTargets(name="teacher_targets")


def build_trainer(students, teachers, args, classes: int):
    """One Keras model over (images, targets) whose i-th output is student i's probabilities
    next to the target it is trained towards: the batch is augmented (and mixed) once for all."""
    import keras
    from keras import layers

    from training.augment import make_augmenter
    from webapp.vision.preprocess import INPUT_SHAPE

    images = keras.Input(INPUT_SHAPE, name="images")
    targets = keras.Input((classes,), name="targets")
    x = images
    if args.augment != "none":
        augmenter = make_augmenter(args.seed, args.augment)
        if keras.backend.backend() == "jax":
            # Keras marks RandomRotation, RandomZoom and RandomTranslation as not compilable (for
            # TensorFlow's XLA) and then runs the whole training step op by op: 765 ms a step on an
            # H200. JAX compiles them: 367 -> 103 ms a step for a width-8 model on this CPU.
            for layer in augmenter.layers:
                layer.supports_jit = True
        x = augmenter(images)
    x, y = make_mixup_layer(args.mixup, args.seed + 5)([x, targets])
    if teachers:
        y = make_teacher_layer(teachers, args.teacher_weight)([x, y])
    outputs = [layers.Concatenate(name=f"student_{i}")([student(x), y]) for i, student in enumerate(students)]
    return keras.Model([images, targets], outputs, name="trainer")


def student_loss(classes: int):
    """Cross-entropy of a trainer output: the student's probabilities, then its target."""
    from keras import ops

    def loss(_, output):
        probabilities, target = output[:, :classes], output[:, classes:]
        return -ops.sum(target * ops.log(ops.clip(probabilities, 1e-7, 1.0)), axis=-1)

    return loss


def compile_trainer(trainer, args, classes: int) -> None:
    """AdamW with a learning rate that `EpochSchedule` sets each epoch: one compile serves a run
    whose length is decided while it trains."""
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=0.0, weight_decay=args.weight_decay)
    trainer.compile(optimizer=optimizer, loss=[student_loss(classes)] * len(trainer.outputs))


def make_epoch_schedule(args, started: float):
    """A callback setting each epoch's learning rate: a linear warm-up over `args.warmup_epochs`,
    then a cosine whose middle-of-epoch value it takes, so the last epoch runs near 0. With
    `args.time_budget`, the last epoch is the last that ends within the budget (less
    `args.reserve`) from `started`, judged by the second epoch (the first one also compiles)."""
    import math

    import keras

    class EpochSchedule(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = None if args.time_budget is not None else args.epochs
            self.epoch_started = 0.0

        def rate(self, epoch: int) -> float:
            # a run too short for its warm-up warms up in all but its last epoch
            warmup = args.warmup_epochs if self.epochs is None else min(args.warmup_epochs, self.epochs - 1)
            if epoch < warmup:
                return args.lr * (epoch + 1) / (warmup + 1)
            decay_epochs = (self.epochs or epoch + 2) - warmup
            return 0.5 * args.lr * (1 + math.cos(math.pi * min(1.0, (epoch - warmup + 0.5) / decay_epochs)))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()
            self.model.optimizer.learning_rate = self.rate(epoch)

        def on_epoch_end(self, epoch, logs=None):
            if self.epochs is None and epoch == 1:
                seconds = time.perf_counter() - self.epoch_started
                left = args.time_budget - args.reserve - (time.perf_counter() - started)
                self.epochs = max(2, 2 + int(left / seconds))
                print(f"{seconds:.1f} s per epoch: {self.epochs} epochs fit in the budget", flush=True)
            if self.epochs is not None and epoch + 1 >= self.epochs:
                self.model.stop_training = True

    return EpochSchedule()


def val_accuracy(models, val) -> dict[str, float]:
    """FER+ majority accuracy on val of each model and of their mean, with flip TTA."""
    images, labels = val
    from webapp.vision.preprocess import to_model_input

    x = to_model_input(images)

    def predict(model):
        return (
            model.predict(x, batch_size=512, verbose=0) + model.predict(x[:, :, ::-1], batch_size=512, verbose=0)
        ) / 2

    probabilities = [predict(model) for model in models]
    scores = {
        f"{index}:{model.name}": float((p.argmax(1) == labels).mean())
        for index, (model, p) in enumerate(zip(models, probabilities, strict=True))
    }
    if len(models) > 1:
        scores["mean"] = float((np.mean(probabilities, 0).argmax(1) == labels).mean())
    return scores


def student_name(path) -> str:
    """The name a fine-tuned model is saved under: `<folder>-<file>` of the original."""
    return f"{Path(path).parent.name}-{Path(path).stem}"


def student_names(args) -> list[str]:
    """The name each model is trained and saved under: `w<width>-s<seed>` (`w<width>-stem<n>-s<seed>`
    with a deeper stem) for a new one, `<folder>-<file>` of the original for a fine-tune."""
    if args.init_from:
        return [student_name(path) for path in args.init_from]
    stem = f"-stem{args.stem_convs}" if args.stem_convs > 1 else ""
    return [f"w{width}{stem}-s{args.seed + index}" for index, width in enumerate(args.widths)]


def check_out_is_free(args) -> None:
    """Refuse a run that would overwrite models: a student file or run.json already in --out (as
    `training.train` refuses an existing run folder), a teacher above all.

    Raises:
        ValueError: naming the first such file.
    """
    out = Path(args.out)
    teachers = {Path(path).resolve() for path in args.teachers}
    for path in [out / f"{name}.keras" for name in student_names(args)]:
        if path.resolve() in teachers:
            raise ValueError(f"a student would be saved over its teacher {path}: pick another --out")
        if path.exists():
            raise ValueError(f"{path} exists: pick another --out, or move it away")
    if (out / "run.json").exists():
        raise ValueError(f"{out / 'run.json'} exists: {out} holds another run; pick another --out")


def make_students(args, classes: tuple[str, ...]) -> list:
    """The models to train, named as `student_names` says: new compact CNNs (`args.widths`, seeded
    `args.seed`, +1, ...), or the `args.init_from` models with the blur this run's augmentation needs
    and a head for `classes`.

    Raises:
        ModelFileError: for an --init-from file that is missing or not a model.
    """
    import keras

    from training.model import blur_sigma_for, make_model, with_blur_sigma, with_classes
    from training.model_files import read_model

    sigma = blur_sigma_for(args.augment)
    names = student_names(args)
    if args.init_from:
        models = [with_classes(with_blur_sigma(read_model(path), sigma), classes) for path in args.init_from]
    else:
        models = []
        for index, width in enumerate(args.widths):
            keras.utils.set_random_seed(args.seed + index)
            models.append(
                make_model(
                    "compact",
                    width=width,
                    dropout=args.dropout,
                    blur_sigma=sigma,
                    classes=classes,
                    stem_convs=args.stem_convs,
                )
            )
    return [keras.Model(model.input, model.output, name=name) for model, name in zip(models, names, strict=True)]


def load_teachers(paths, classes: tuple[str, ...]) -> list:
    """The teacher models, each checked to output `classes` in that order (their columns are
    averaged and blended with the targets as they stand)."""
    from training.model_files import read_model
    from webapp.vision.layers import model_classes

    teachers = [read_model(path) for path in paths]
    for path, teacher in zip(paths, teachers, strict=True):
        if model_classes(teacher) != tuple(classes):
            raise ValueError(
                f"{path} outputs {', '.join(model_classes(teacher))}; this run trains {', '.join(classes)}"
            )
    return teachers


def batched_mean_prediction(models, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """`mean_prediction` over `x` in batches, as numpy (for the teachers' `teacher.npz`)."""
    import keras

    batches = range(0, len(x), batch_size)
    return np.concatenate([keras.ops.convert_to_numpy(mean_prediction(models, x[i : i + batch_size])) for i in batches])


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import keras

    from training.model import blur_sigma_for, with_blur_sigma
    from training.model_files import ModelFileError
    from webapp.vision.labels import classes_for
    from webapp.vision.preprocess import to_model_input

    keras.utils.set_random_seed(args.seed)
    try:
        check_out_is_free(args)  # before the data loads: a refused run costs nothing
        train, val = load_faces(args)
    except (ValueError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classes = classes_for(args.classes)
    try:
        teachers = load_teachers(args.teachers, classes)
    except (OSError, ValueError) as error:
        print(f"error: --teachers: {error}", file=sys.stderr)
        return 2
    try:
        students = make_students(args, classes)
    except ModelFileError as error:
        print(f"error: --init-from: {error}", file=sys.stderr)
        return 2
    # the augmented faces are already as soft as the teachers' training faces: no second blur
    sigma = blur_sigma_for(args.augment)
    trainer = build_trainer(students, [with_blur_sigma(t, 0.0) if sigma else t for t in teachers], args, len(classes))
    inputs = [to_model_input(train.images), train.targets.astype(np.float32)]
    print(
        f"keras {keras.__version__} on {keras.backend.backend()}; train: {len(train.images)} faces; "
        f"models: {', '.join(s.name for s in students)}; teachers: {len(teachers)}",
        flush=True,
    )
    compile_trainer(trainer, args, len(classes))
    schedule = make_epoch_schedule(args, started)
    fit_started = time.perf_counter()
    dummy = [np.zeros((len(train.images), 1), np.float32)] * len(students)
    history = trainer.fit(
        inputs,
        dummy,
        batch_size=args.batch_size,
        epochs=10_000 if args.time_budget is not None else args.epochs,
        shuffle=True,
        callbacks=[schedule],
        verbose=2,
    )
    args.epochs = len(history.history["loss"])
    fit_seconds = time.perf_counter() - fit_started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for student in students:
        student.save(out / f"{student.name}.keras")
    record = {
        "args": vars(args),
        "backend": keras.backend.backend(),
        "fit_seconds": round(fit_seconds, 1),
        "final_loss": float(history.history["loss"][-1]),
        "val_ferplus": val_accuracy(students, val) if val is not None else None,
    }
    if teachers and val is not None:
        record["teachers_val_ferplus"] = val_accuracy(teachers, val)
    if args.save_teacher:
        from training.distill import save_teacher

        x = to_model_input(train.images)
        probabilities = batched_mean_prediction(teachers, x)
        save_teacher(out / "teacher.npz", train.keys, probabilities, classes, " ".join(args.teachers))
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({key: record[key] for key in ("fit_seconds", "final_loss", "val_ferplus")}), flush=True)
    if "teachers_val_ferplus" in record:
        print(f"teachers: {json.dumps(record['teachers_val_ferplus'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
