"""Socket.IO handlers: a client emits `frame` with JPEG bytes and gets the analysis in the ack."""

from __future__ import annotations

import logging
from dataclasses import replace

from flask import current_app, request

from webapp.concurrency import pipeline, run_blocking
from webapp.errors import error_body, from_image_error
from webapp.stream_client import FrameRefused, StreamClient
from webapp.vision.imaging import ImageError

_clients: dict[str, StreamClient] = {}
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


def _client() -> StreamClient:
    """This connection's state, made on first use."""
    client = _clients.get(request.sid)
    if client is None:
        config = current_app.config
        client = _clients[request.sid] = StreamClient(config["MAX_FRAME_KB"] * 1024, config["MAX_FPS_PER_CLIENT"])
    return client


def on_connect(auth=None):
    _client()


def on_disconnect(reason=None):
    _clients.pop(request.sid, None)


def on_reset(*_):
    """Forget tracked faces (e.g. after switching cameras)."""
    _client().reset()
    return {"ok": True}


def on_frame(data=None, *_):
    """Analyse one JPEG frame; the return value is the client's ack (analysis or error)."""
    client = _client()
    try:
        with client.admit(data) as frame:
            analysis = run_blocking(pipeline("stream").analyze_bytes, frame)
            return replace(analysis, faces=client.tracker.update(analysis.faces)).to_dict()
    except FrameRefused as refusal:
        return error_body(refusal.code, refusal.message)
    except ImageError as error:
        return from_image_error(error)[0]
    except Exception:  # answer the ack whatever happens, or the client waits forever
        log.exception("frame analysis failed")
        return error_body("internal_error", "the server could not analyse this frame")
