"""Write a Y4M video for Chromium's fake camera from a real face photo."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_y4m(path: str | Path, frame_rgb: np.ndarray, frames: int = 30, fps: int = 30) -> Path:
    """Write `frames` frames of `frame_rgb` (H, W, 3; even sizes), drifting a few pixels so the video moves."""
    height, width = frame_rgb.shape[:2]
    path = Path(path)
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            shift = int(round(4 * np.sin(2 * np.pi * i / frames)))
            moved = np.roll(frame_rgb, shift, axis=1)
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(moved, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path
