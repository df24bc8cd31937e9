"""Measure how soft augmented training images are; checks training.augment.AUGMENTATION_BLUR_SIGMA.

    python -m bench.augmentation_blur [--count 2000]

Sharpness is the mean squared Laplacian (border excluded). Training images are passed
through the augmenter's geometric layers (contrast is left out: it scales the energy,
not the sharpness) and compared with the same images under Gaussian blurs of known
sigma; the sigma whose energy matches is the blur that serving should reproduce.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import keras
import numpy as np

from tests.harness import FER2013
from training.augment import AUGMENTATION_BLUR_SIGMA, make_augmenter
from training.data import load_split
from webapp.vision.layers import InferenceBlur
from webapp.vision.preprocess import to_model_input


def laplacian_energy(images: np.ndarray) -> float:
    return float(np.mean([np.mean(cv2.Laplacian(image, cv2.CV_32F)[4:-4, 4:-4] ** 2) for image in images]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(FER2013), help="a folder with train/ (or fer2013.csv's Training rows)")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train = load_split(args.data, "train")
    x = to_model_input(
        train.images[np.random.default_rng(args.seed).choice(len(train), min(args.count, len(train)), replace=False)]
    )
    rows = []
    for mode in ("full", "sharp"):
        geometric = keras.Sequential(
            [layer for layer in make_augmenter(args.seed, mode).layers if "contrast" not in layer.name]
        )
        rows.append(
            (f"training images, --augment {mode}", laplacian_energy(np.asarray(geometric(x, training=True))[..., 0]))
        )
    rows.append(("training images, as stored", laplacian_energy(x[..., 0])))
    for sigma in (0.5, 0.6, 0.7, 0.8, 0.9):
        rows.append(
            (
                f"as stored, Gaussian sigma {sigma}",
                laplacian_energy(np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in x[..., 0]])),
            )
        )
    rows.append(
        (
            f"as stored, InferenceBlur({AUGMENTATION_BLUR_SIGMA:.3f})",
            laplacian_energy(np.asarray(InferenceBlur(AUGMENTATION_BLUR_SIGMA)(x))[..., 0]),
        )
    )
    print(f"{'images':<40}{'Laplacian energy':>18}")
    for name, energy in rows:
        print(f"{name:<40}{energy:>18.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
