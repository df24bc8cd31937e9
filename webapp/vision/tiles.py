"""Small faces in large photos: detection on overlapping tiles of the photo and of its halvings."""

from __future__ import annotations

import cv2
import numpy as np

from webapp.vision.detector import BlazeFaceDetector, KeptFaces
from webapp.vision.types import Box, FaceDetection

# BlazeFace finds faces down to ~7% of what it is shown: a level whose shorter side is under this
# many pixels holds no face it would find in a tile
MIN_LEVEL_SIDE = 32
# A face found in a tile is looked at again on a square this many times its side, where it fills a
# third of the detector's input, the scale it is surest at. Texture that passed for a small face at
# the tile's scale (cloth, foliage, JPEG noise of an enlarged photo) is not found there again.
SECOND_LOOK_CONTEXT = 3.0
# A second look costs ~4 ms: a photo of 1,600 small faces took 6.5 s for them all. Past this many, in a
# crowd that large, faces are kept as the tiles found them: the larger ones, on the coarser levels,
# have been looked at by then.
MAX_SECOND_LOOKS = 300


class TiledFaceDetector:
    """A whole-image pass, then full-range BlazeFace on overlapping tiles of a large photo.

    BlazeFace sees the whole image at 192 px, so a face narrower than ~7% of the image's
    longer side is a few pixels wide there and is lost: a group photo at phone resolution
    came back with its few largest faces. Each tile is seen at 192 px too, so small faces
    in it are found. Tiles are `tile` px, overlapping by a quarter, on a pyramid of the
    image halved each level, down to the whole-image pass: a face fits inside some tile on
    a level where it is large enough to be found (at least ~7% of a tile). The finest level
    has at most `max_pixels` (the photo's own size when smaller) and sets the smallest face
    found: ~7% of a tile at that level. By default that is every photo the app analyses
    (decoding halves any side over 4095 px), so faces are found down to ~36 px at any size:
    capped at 3.1 MP, a 12 MP phone photo lost every face under ~70 px. The cost is at most
    155 tiles: ~0.65 s for 12 MP on 2 cores, 1.8 s for a 4095x4095 photo of 1,600 small faces
    (`python -m bench.detection_bench --only large`; `bench/RESULTS.md`).

    Faces found again on a finer level are dropped (`KeptFaces`), as are faces
    cut by a tile's inner edge: the face is whole in a neighbouring tile or on a coarser level.
    A tile's face is kept only if a second look, closer up, finds it again (`SECOND_LOOK_CONTEXT`):
    tiles see more than 100 windows of a 12 MP photo, and each is a chance of a false face.

    Args:
        whole: the detector for the whole image (e.g. `RangeFaceDetector`).
        tiles: full-range BlazeFace, run on each tile.
        tile: tile side in pixels of its level.
        max_pixels: the finest level's size at most.
    """

    name = "blazeface-tiled"

    def __init__(self, whole, tiles: BlazeFaceDetector, tile: int = 512, max_pixels: int = 4096 * 4096):
        self.whole, self.tiles, self.tile, self.max_pixels = whole, tiles, tile, max_pixels

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Find faces in an RGB uint8 image; boxes are in that image's pixels."""
        faces = KeptFaces(self.whole.detect(rgb))
        looks_left = MAX_SECOND_LOOKS
        height, width = rgb.shape[:2]
        for level_width, level_height in self._levels(height, width):
            image = rgb
            if (level_width, level_height) != (width, height):
                image = cv2.resize(rgb, (level_width, level_height), interpolation=cv2.INTER_AREA)
            for face in self._tiled(image):
                in_photo = face.moved(fx=width / level_width, fy=height / level_height)
                # the second look is the dearest step: only for a face not found already
                if faces.covers(in_photo.box):
                    continue
                looks_left -= 1
                if looks_left < 0 or self._seen_again(image, face.box):
                    faces.add(in_photo)
        return faces.faces

    def _levels(self, height: int, width: int) -> list[tuple[int, int]]:
        """Each pyramid level's (width, height), from the coarsest above the whole image down to the finest."""
        scale = min(1.0, (self.max_pixels / (height * width)) ** 0.5)
        levels = []
        while max(height, width) * scale > self.tile:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            if min(size) >= MIN_LEVEL_SIDE:
                levels.append(size)
            scale /= 2
        return levels[::-1]

    def _tiled(self, image: np.ndarray) -> list[FaceDetection]:
        height, width = image.shape[:2]
        margin = 0.01 * self.tile
        found = []
        for top in tile_origins(height, self.tile):
            for left in tile_origins(width, self.tile):
                bottom, right = min(height, top + self.tile), min(width, left + self.tile)
                for face in self.tiles.detect(image[top:bottom, left:right]):
                    box = face.box
                    # a box at an inner edge is part of a face that goes on in the next tile
                    if (
                        (left > 0 and box.x < margin)
                        or (top > 0 and box.y < margin)
                        or (right < width and box.x + box.width > right - left - margin)
                        or (bottom < height and box.y + box.height > bottom - top - margin)
                    ):
                        continue
                    found.append(face.moved(left, top))
        return found

    def _seen_again(self, image: np.ndarray, box: Box) -> bool:
        """Whether the tiles' detector finds a face at `box` again on a square around it, `SECOND_LOOK_CONTEXT` x its side."""
        side = max(1, round(max(box.width, box.height) * SECOND_LOOK_CONTEXT))
        left, top = round(box.x + box.width / 2 - side / 2), round(box.y + box.height / 2 - side / 2)
        height, width = image.shape[:2]
        # the part of the square outside the image stays black, as the detector's own letterbox does
        square = np.zeros((side, side, 3), np.uint8)
        x0, y0, x1, y1 = max(0, left), max(0, top), min(width, left + side), min(height, top + side)
        square[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
        expected = box.moved(-left, -top)
        return any(face.box.iou(expected) > 0.3 for face in self.tiles.detect(square))


def tile_origins(length: int, tile: int) -> list[int]:
    """Tile origins along one side: `tile` apart less a quarter of overlap, the last flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - tile // 4
    count = -(-(length - tile) // stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]
