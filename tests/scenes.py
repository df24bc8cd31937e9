"""Labelled multi-face scenes for tests and benches: faces-in-scenes from ../shared and generated ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tests.harness import FACES_IN_SCENES, GRACE_FACE, grace_hopper_rgb
from webapp.vision.types import Box

SCENES = FACES_IN_SCENES
FRAME_W, FRAME_H = 640, 480


def load_scenes(folder: Path = SCENES) -> list[tuple[str, np.ndarray, list[Box]]]:
    """(name, RGB image, face boxes) for every photo of faces-in-scenes; [] without the folder."""
    if not (folder / "boxes.json").is_file():
        return []
    boxes = json.loads((folder / "boxes.json").read_text())
    return [
        (name, np.asarray(Image.open(folder / name).convert("RGB")), [Box(*map(float, b)) for b in faces])
        for name, faces in sorted(boxes.items())
    ]


def letterbox(
    rgb: np.ndarray, boxes: list[Box], width: int = FRAME_W, height: int = FRAME_H, fill: int = 0
) -> tuple[np.ndarray, list[Box]]:
    """Fit an image into a width x height frame (aspect kept, borders padded), moving its boxes."""
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    resized = cv2.resize(
        rgb,
        (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    frame = np.full((height, width, 3), fill, np.uint8)
    x0, y0 = (width - resized.shape[1]) // 2, (height - resized.shape[0]) // 2
    frame[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    return frame, [Box(x0 + b.x * scale, y0 + b.y * scale, b.width * scale, b.height * scale) for b in boxes]


def match(found: list[Box], truth: list[Box], min_iou: float = 0.3) -> tuple[int, int]:
    """(true faces found, false positives): greedy one-to-one matching by IoU."""
    pairs = sorted(((f.iou(t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    used_found, used_truth = set(), set()
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    return len(used_truth), len(found) - len(used_found)


def place_face(
    face_height: float,
    frame_w: int = FRAME_W,
    frame_h: int = FRAME_H,
    centre=(0.5, 0.5),
    canvas: np.ndarray | None = None,
) -> tuple[np.ndarray, Box]:
    """Grace Hopper's photo scaled so her face is `face_height` px tall, centred at `centre` (fractions of the frame)."""
    photo = grace_hopper_rgb()
    x, y, w, h = GRACE_FACE
    scale = face_height / h
    photo = cv2.resize(
        photo,
        (round(photo.shape[1] * scale), round(photo.shape[0] * scale)),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    frame = np.full((frame_h, frame_w, 3), 90, np.uint8) if canvas is None else canvas
    # shift so the face centre lands on `centre`; paste the overlapping part
    fx, fy = (x + w / 2) * scale, (y + h / 2) * scale
    dx, dy = round(centre[0] * frame_w - fx), round(centre[1] * frame_h - fy)
    src_x0, src_y0 = max(0, -dx), max(0, -dy)
    dst_x0, dst_y0 = max(0, dx), max(0, dy)
    cw = min(photo.shape[1] - src_x0, frame_w - dst_x0)
    ch = min(photo.shape[0] - src_y0, frame_h - dst_y0)
    frame[dst_y0 : dst_y0 + ch, dst_x0 : dst_x0 + cw] = photo[src_y0 : src_y0 + ch, src_x0 : src_x0 + cw]
    return frame, Box(dx + x * scale, dy + y * scale, w * scale, h * scale)


SIX_FACES = [
    ((0.17, 0.3), 110),
    ((0.5, 0.3), 90),
    ((0.83, 0.3), 70),
    ((0.17, 0.75), 55),
    ((0.5, 0.75), 40),
    ((0.83, 0.75), 25),
]


def six_face_frame(shift: int = 0) -> tuple[np.ndarray, list[Box]]:
    """An independent multi-face scene: Grace Hopper six times, 25-110 px tall, on one 640x480 frame."""
    frame = np.full((FRAME_H, FRAME_W, 3), 90, np.uint8)
    boxes = []
    for (cx, cy), height in SIX_FACES:
        frame, box = place_face(height, centre=(cx + shift / FRAME_W, cy), canvas=frame)
        boxes.append(box)
    return frame, boxes


def crowd(rows: int, columns: int, face_height: float, width: int, height: int) -> tuple[np.ndarray, list[Box]]:
    """An independent group photo: Grace Hopper `rows` x `columns` times, `face_height` px tall, spread over a large canvas."""
    frame = np.full((height, width, 3), 90, np.uint8)
    boxes = []
    for row in range(rows):
        for column in range(columns):
            centre = ((column + 0.5) / columns, (row + 0.5) / rows)
            frame, box = place_face(face_height, width, height, centre, canvas=frame)
            boxes.append(box)
    return frame, boxes


def group_photo() -> tuple[np.ndarray, list[Box]]:
    """A large group photo whose faces the whole-image pass misses: 18 faces 60 px tall in 3000x2000."""
    return crowd(3, 6, 60, 3000, 2000)
