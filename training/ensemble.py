"""Average several trained classifiers into one Keras model, which exports and serves like any other.

    python -m training.ensemble --members runs/A/best.keras runs/B/best.keras --out runs/ensemble.keras --data ../shared/datasets/fer2013

The ensemble's output is the mean of its members' softmax outputs. Each member keeps its
own `InferenceBlur` (on for members trained on softened images, off for sharp ones), so
every member sees faces as it was trained to. Given --data, each member and the ensemble
are scored on the val split (with flip TTA, as the server runs them), so the gain is
measured before the ensemble is exported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_ensemble(members: list) -> keras.Model:
    """One model whose output is the mean of `members`' outputs (all take the shared face input)."""
    import keras
    from keras import layers

    from webapp.vision.layers import EmotionClasses, model_classes
    from webapp.vision.preprocess import INPUT_SHAPE

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    classes = {model_classes(member) for member in members}
    if len(classes) > 1:
        raise ValueError(f"the members output different classes: {' / '.join(', '.join(c) for c in classes)}")
    inputs = keras.Input(INPUT_SHAPE, name="face")
    outputs = []
    for index, member in enumerate(members):
        # rebuild each member under a unique name: two runs of one architecture share a model name
        copy = keras.Model(member.inputs[0], member.outputs[0], name=f"member_{index}_{member.name}")
        outputs.append(copy(inputs))
    mean = layers.Average(name="emotion")(outputs)
    named = EmotionClasses(classes.pop(), name="classes")(mean)
    return keras.Model(inputs, named, name=f"ensemble_of_{len(members)}")


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name one file, however spelled (relative, through links, hard-linked)."""
    first, second = Path(first), Path(second)
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.ensemble",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--members", nargs="+", required=True, help="two or more trained .keras models")
    parser.add_argument("--out", required=True, help="where to write the ensemble .keras model")
    parser.add_argument("--data", help="dataset (CSV or folder): score members and ensemble on --split")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    args = parser.parse_args(argv)

    from training.data import DataError, load_split
    from training.model_files import ModelFileError, read_model

    if len(args.members) < 2:
        print("error: an ensemble needs at least two --members", file=sys.stderr)
        return 2
    overwritten = next((path for path in args.members if same_file(path, args.out)), None)
    if overwritten is not None:
        print(f"error: --out {args.out} is the member {overwritten}: write the ensemble to a new file", file=sys.stderr)
        return 2
    try:
        members = [read_model(path) for path in args.members]
        held_out = load_split(args.data, args.split) if args.data else None
        ensemble = make_ensemble(members)  # (members of different classes are refused here)
    except (ModelFileError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ensemble.save(args.out)
    print(f"wrote {args.out} ({len(args.members)} members, {ensemble.count_params():,} parameters)")
    if held_out is not None:
        from training.evaluate import evaluate

        print("accuracy on the held-out faces, against their FER-2013 labels (training.evaluate reports FER+ too):")
        for path in [*args.members, args.out]:
            print(f"{evaluate(path, held_out).accuracy:.4f}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
