"""Socket.IO handlers: a client emits `frame` with JPEG bytes and gets the analysis in the ack."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace

from flask import current_app, request

from webapp.errors import error_body, from_image_error
from webapp.inference import pipeline, run_blocking
from webapp.vision.imaging import ImageError
from webapp.vision.tracker import FaceTracker


class ClientState:
    """Per-connection state: the face tracker, the frame in flight, recent frame times."""

    def __init__(self):
        self.tracker = FaceTracker()
        self.busy = threading.Lock()
        self.recent: deque[float] = deque()


_clients: dict[str, ClientState] = {}
log = logging.getLogger(__name__)


def register(socketio) -> None:
    """Attach the handlers to `socketio` (once per process)."""
    if getattr(socketio, "_moodlens_events", False):
        return
    socketio._moodlens_events = True
    socketio.on_event("connect", on_connect)
    socketio.on_event("disconnect", on_disconnect)
    socketio.on_event("frame", on_frame)
    socketio.on_event("reset", on_reset)


def on_connect(auth=None):
    _clients[request.sid] = ClientState()


def on_disconnect(reason=None):
    _clients.pop(request.sid, None)


def on_reset(*_):
    """Forget tracked faces (e.g. after switching cameras)."""
    state = _clients.get(request.sid)
    if state:
        state.tracker = FaceTracker()
    return {"ok": True}


def on_frame(data=None):
    """Analyse one JPEG frame; the return value is the client's ack (analysis or error)."""
    state = _clients.get(request.sid) or _clients.setdefault(request.sid, ClientState())
    if not isinstance(data, (bytes, bytearray)):
        return error_body("bad_payload", f"a frame must be binary image data (ArrayBuffer/Blob), got {type(data).__name__}")
    limit = current_app.config["MAX_FRAME_KB"] * 1024
    if len(data) > limit:
        return error_body("too_large", f"the frame is {len(data):,} bytes; the limit is {limit:,}")
    now = time.monotonic()
    while state.recent and now - state.recent[0] > 1.0:
        state.recent.popleft()
    if len(state.recent) >= current_app.config["MAX_FPS_PER_CLIENT"]:
        return error_body("rate_limited", f"more than {current_app.config['MAX_FPS_PER_CLIENT']} frames per second; wait for each ack")
    state.recent.append(now)
    if not state.busy.acquire(blocking=False):
        return error_body("busy", "the previous frame is still being analysed; send one frame at a time")
    try:
        analysis = run_blocking(pipeline("stream").analyze_bytes, bytes(data))
        return replace(analysis, faces=state.tracker.update(analysis.faces)).to_dict()
    except ImageError as error:
        return from_image_error(error)[0]
    except Exception:  # answer the ack whatever happens, or the client waits forever
        log.exception("frame analysis failed")
        return error_body("internal_error", "the server could not analyse this frame")
    finally:
        state.busy.release()
