"""Per-connection state of the live stream: which frames a client may send, and its face tracker."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from webapp.vision.tracker import FaceTracker


class FrameRefused(Exception):
    """A frame the client may not send now; `code` and `message` go into the error ack."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class StreamClient:
    """One Socket.IO connection: admits its frames one at a time and within its limits.

    Args:
        max_frame_bytes: larger frames are refused.
        max_fps: frames per second (over the last second) the client may send.
    """

    def __init__(self, max_frame_bytes: int, max_fps: int):
        self.max_frame_bytes = max_frame_bytes
        self.max_fps = max_fps
        self.tracker = FaceTracker()
        self._busy = threading.Lock()
        # the threaded server (`python -m webapp`) runs one client's events on several threads at once
        self._window_lock = threading.Lock()
        self._recent: deque[float] = deque()

    @contextmanager
    def admit(self, data) -> Iterator[bytes]:
        """Hold the client's one analysis slot for `data` while the `with` block runs.

        Raises:
            FrameRefused: "bad_payload" (not binary), "too_large", "rate_limited" or "busy"
                (a frame of this client is still being analysed).
        """
        if not isinstance(data, (bytes, bytearray)):
            raise FrameRefused(
                "bad_payload", f"a frame must be binary image data (ArrayBuffer/Blob), got {type(data).__name__}"
            )
        if len(data) > self.max_frame_bytes:
            raise FrameRefused("too_large", f"the frame is {len(data):,} bytes; the limit is {self.max_frame_bytes:,}")
        with self._window_lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.max_fps:
                raise FrameRefused("rate_limited", f"more than {self.max_fps} frames per second; wait for each ack")
            self._recent.append(now)
        if not self._busy.acquire(blocking=False):
            raise FrameRefused("busy", "the previous frame is still being analysed; send one frame at a time")
        try:
            yield bytes(data)
        finally:
            self._busy.release()

    def reset(self) -> None:
        """Forget the tracked faces (e.g. after the client switched cameras)."""
        self.tracker = FaceTracker()
