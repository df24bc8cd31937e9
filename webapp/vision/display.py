"""How players show a stored video frame: the display matrix phones write, its quarter turns and mirrors.

Phones store a portrait video as landscape frames with a matrix that players apply; analysed as
stored, every face would lie on its side. A front camera's recording can carry a mirror too: read as
a rotation angle alone, a mirrored frame came out upside down (its faces lost).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av
    import numpy as np


@dataclass(frozen=True)
class Display:
    """A stored frame as shown: transposed (a quarter turn, with `mirror_x` or `mirror_y` saying which
    way), then mirrored left to right and/or top to bottom. The default shows it as stored."""

    transposed: bool = False
    mirror_x: bool = False
    mirror_y: bool = False

    @classmethod
    def from_matrix(cls, a: float, b: float, c: float, d: float) -> Display:
        """From the matrix's 2x2 part, which maps a stored point (x, y) to (a x + c y, b x + d y) on
        screen (FFmpeg's and ISO's row-vector convention). A turn that is not a quarter turn is shown as
        the nearest one; a matrix of zeros (no turn at all) as stored."""
        if abs(a) + abs(d) >= abs(b) + abs(c):
            return cls(False, a < 0, d < 0)
        return cls(True, c < 0, b < 0)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Width and height as shown, of a frame stored `width` x `height`."""
        return (height, width) if self.transposed else (width, height)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` (rows, columns, ...) as shown."""
        import numpy as np

        if not (self.transposed or self.mirror_x or self.mirror_y):
            return pixels
        shown = pixels.swapaxes(0, 1) if self.transposed else pixels
        shown = shown[:, ::-1] if self.mirror_x else shown
        return np.ascontiguousarray(shown[::-1] if self.mirror_y else shown)


def frame_display(frame: av.VideoFrame) -> Display:
    """How players show `frame`, from the display matrix among its side data (none: as stored)."""
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX" and len(matrix := bytes(data)) == 36:
            a, b, _, c, d, *_ = struct.unpack("=9i", matrix)  # 16.16 fixed point: only signs and sizes matter
            return Display.from_matrix(a, b, c, d)
    return Display()
