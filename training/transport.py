"""Move the training data to a borrowed GPU machine and trained models back, within its file limits.

    python -m training.transport pack-data ../shared/datasets/fer2013 .device/faces.npz
    python -m training.transport unpack-data .device/faces.npz /tmp/fer2013          # on the GPU machine
    python -m training.transport pack-models /tmp/students $OUT                       # on the GPU machine
    python -m training.transport unpack-models /work/.device/<n> runs/gpu-students

Such a machine takes a working tree of at most 64 MiB and gives back at most 8 files of 16 MiB.
FER-2013's 32,298 JPEG files are 59 MiB, but a tree of small files weighs far more than their
bytes, so `pack-data` puts the files' bytes, unchanged, in one `.npz` (with `ferplus_votes.csv`
beside it, if the folder has one), and `unpack-data` writes the same folder back. `pack-models`
stores each `.keras` file's weights as float16 (a width-64 CNN: 9 MB, not 19), and
`unpack-models` rebuilds each model here from its compact-CNN recipe, written beside the weights.
The faces never enter the repository: keep the pack in an ignored folder (`.device/`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

VOTES_FILE = "ferplus_votes.csv"
MAX_RETURNED_FILE = 16 * 2**20


def pack_data(folder: Path, pack: Path, limit_per_split: dict[str, int] | None = None, seed: int = 0) -> int:
    """Pack the image files under `folder` (its `<split>/<emotion>/` files) into `pack`; with
    `limit_per_split`, keep a random sample of that many files of a split. Returns the file count.

    Only the folder layout travels: fer2013.csv holds the faces as text, over the 64 MiB a GPU
    machine takes, while the folder's JPEG files fit."""
    if folder.is_file():
        raise ValueError(
            f"{folder} is a file: pack-data packs a dataset folder (<split>/<emotion>/ images, as "
            "../shared/datasets/fer2013 has), not fer2013.csv"
        )
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.parent.parent.parent == folder)
    if not files:
        raise ValueError(f"{folder} holds no <split>/<emotion>/ image files")
    rng = np.random.default_rng(seed)
    for split, limit in (limit_per_split or {}).items():
        in_split = [path for path in files if path.relative_to(folder).parts[0] == split]
        if len(in_split) > limit:
            dropped = {in_split[i] for i in rng.choice(len(in_split), len(in_split) - limit, replace=False)}
            files = [path for path in files if path not in dropped]
    contents = [path.read_bytes() for path in files]
    names = "\n".join(path.relative_to(folder).as_posix() for path in files).encode()
    pack.parent.mkdir(parents=True, exist_ok=True)  # (.device/ on a fresh checkout)
    np.savez(
        pack,
        blob=np.frombuffer(b"".join(contents), np.uint8),
        offsets=np.cumsum([0] + [len(content) for content in contents]),
        names=np.frombuffer(names, np.uint8),
    )
    copy_votes(folder, pack.parent)
    return len(files)


def copy_votes(source: Path, destination: Path) -> None:
    """Copy the FER+ vote table, if `source` has one, into `destination`, unless it is that folder."""
    if (source / VOTES_FILE).exists() and source.resolve() != destination.resolve():
        shutil.copy(source / VOTES_FILE, destination / VOTES_FILE)


def unpack_data(pack: Path, folder: Path) -> int:
    """Write the files packed in `pack` (and the vote table beside it) into `folder`."""
    packed = np.load(pack)
    blob, offsets = packed["blob"], packed["offsets"]
    names = packed["names"].tobytes().decode().split("\n")
    outside = [name for name in names if ".." in Path(name).parts or Path(name).is_absolute()]
    if outside:
        raise ValueError(f"{pack}: {outside[0]!r} is not a path inside the dataset")
    _refuse_existing(folder / name for name in names)
    for index, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob[offsets[index] : offsets[index + 1]].tobytes())
    copy_votes(pack.parent, folder)
    return len(names)


def _refuse_existing(paths) -> None:
    """Raise ValueError naming the first of `paths` that exists: unpacking never writes over a file."""
    taken = next((path for path in paths if path.exists()), None)
    if taken is not None:
        raise ValueError(f"{taken} exists: unpack into a new folder, or move it away")


def model_from_recipe(recipe: dict):
    """A fresh compact CNN as a packed model's recipe describes it (packing checks that one exists)."""
    from training.model import make_compact_cnn

    return make_compact_cnn(
        recipe["width"],
        blur_sigma=recipe["blur_sigma"],
        classes=tuple(recipe["classes"]),
        stem_convs=recipe.get("stem_convs", 1),  # packs made before the option had one
    )


def pack_models(folder: Path, out: Path) -> list[str]:
    """Each compact CNN in `folder` as `<name>.npz`: its weights in float16 and its recipe."""
    from training.model import stem_conv_count
    from training.train import first_conv_filters
    from webapp.vision.layers import inference_blur_sigma, load_model, model_classes

    packed = []
    for path in sorted(folder.glob("*.keras")):
        model = load_model(path)
        try:
            width, stem_convs = first_conv_filters(model), stem_conv_count(model)
        except (StopIteration, ValueError):
            raise ValueError(f"{path} is not a compact CNN: it has no convolution or no pooling") from None
        recipe = {
            "width": width,
            "stem_convs": stem_convs,
            "classes": list(model_classes(model)),
            "blur_sigma": inference_blur_sigma(model),
        }
        rebuilt = model_from_recipe(recipe)
        if [w.shape for w in rebuilt.get_weights()] != [w.shape for w in model.get_weights()]:
            raise ValueError(f"{path} is not a compact CNN: it could not be rebuilt from its weights")
        weights = {f"w{index}": weight.astype(np.float16) for index, weight in enumerate(model.get_weights())}
        np.savez(out / f"{path.stem}.npz", recipe=np.frombuffer(json.dumps(recipe).encode(), np.uint8), **weights)
        if (out / f"{path.stem}.npz").stat().st_size > MAX_RETURNED_FILE:
            print(f"warning: {path.stem}.npz is over 16 MiB: the GPU machine will not send it back", file=sys.stderr)
        packed.append(path.stem)
    return packed


def unpack_models(folder: Path, out: Path) -> list[Path]:
    """Rebuild every model packed in `folder` (see `pack_models`) as `<out>/<name>.keras`."""
    import keras

    _refuse_existing(out / f"{path.stem}.keras" for path in sorted(folder.glob("*.npz")))
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for path in sorted(folder.glob("*.npz")):
        packed = np.load(path)
        if "recipe" not in packed:
            continue  # not a model (teacher probabilities travel as .npz too)
        recipe = json.loads(packed["recipe"].tobytes())
        model = model_from_recipe(recipe)
        model.set_weights([packed[f"w{index}"].astype(np.float32) for index in range(len(model.get_weights()))])
        model = keras.Model(model.input, model.output, name=path.stem)
        model.save(out / f"{path.stem}.keras")
        saved.append(out / f"{path.stem}.keras")
    return saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("pack-data", help="pack a dataset folder into one .npz")
    data.add_argument("folder", type=Path)
    data.add_argument("pack", type=Path)
    data.add_argument("--val", type=int, default=None, help="keep a random sample of this many val files")
    for name, help_text in (
        ("unpack-data", "write a packed dataset out as its folder"),
        ("pack-models", "pack a folder's .keras models as float16 weights"),
        ("unpack-models", "rebuild packed models as .keras files"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("source", type=Path)
        command.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack-data":
            count = pack_data(args.folder, args.pack, {"val": args.val} if args.val is not None else None)
            print(f"packed {count} files into {args.pack} ({args.pack.stat().st_size / 2**20:.1f} MiB)")
        elif args.command == "unpack-data":
            print(f"unpacked {unpack_data(args.source, args.out)} files into {args.out}")
        elif args.command == "pack-models":
            print(f"packed {', '.join(pack_models(args.source, args.out)) or 'no models'} into {args.out}")
        else:
            print("\n".join(str(path) for path in unpack_models(args.source, args.out)))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
