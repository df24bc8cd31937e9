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
    """Attach the handlers to an app's `socketio`."""
    socketio.on_event("connect", on_connect)
    socketio.on_event("disconnect", on_disconnect)
    socketio.on_event("frame", on_frame)
    socketio.on_event("reset", on_reset)


def _is_open() -> bool:
    """Whether this connection is connected and not being torn down.

    A client can send an ordinary event named "connect" or "disconnect", and
    python-socketio dispatches it to the same handlers as the real ones. During the
    real connect the manager still has the connection pending, and during the real
    disconnect it already has it pending removal; in both cases it is not "connected".
    An event sent by the client arrives only on an open connection.
    """
    return socketio_server().manager.is_connected(request.sid, request.namespace or "/")


def socketio_server():
    """The python-socketio server behind Flask-SocketIO."""
    return current_app.extensions["socketio"].server


def _reserved(name: str) -> dict:
    log.warning("refused a client event named %r (reserved)", name)
    return error_body("reserved_event", f"{name!r} is a reserved event name and cannot be emitted")


def on_connect(auth=None):
    if _is_open():  # an event named "connect": the state stays as it is
        return _reserved("connect")
    config = current_app.config
    _clients.setdefault(request.sid, StreamClient(config["MAX_FRAME_KB"] * 1024, config["MAX_FPS_PER_CLIENT"]))
    return None


def on_disconnect(reason=None, *_):
    if _is_open():  # an event named "disconnect" from a connected client: its limits must survive it
        return _reserved("disconnect")
    _clients.pop(request.sid, None)
    return None


def on_reset(*_):
    """Forget tracked faces (e.g. after switching cameras)."""
    client = _clients.get(request.sid)
    if client is None:
        return _not_connected()
    client.reset()
    return {"ok": True}


def _not_connected() -> dict:
    return error_body("not_connected", "this connection has no stream state; reconnect")


def on_frame(data=None, *_):
    """Analyse one JPEG frame; the return value is the client's ack (analysis or error)."""
    client = _clients.get(request.sid)
    if client is None:  # state exists only between the real connect and disconnect
        return _not_connected()
    try:
        with client.admit(data) as frame:
            # the tracker of when the frame came: a reset during its analysis (a camera switch)
            # must leave the new tracker to the new camera's frames
            tracker = client.tracker
            analysis = run_blocking(pipeline("stream").analyze_bytes, frame)
            return replace(analysis, faces=tracker.update(analysis.faces)).to_dict()
    except FrameRefused as refusal:
        return error_body(refusal.code, refusal.message)
    except ImageError as error:
        return from_image_error(error)[0]
    except Exception:  # answer the ack whatever happens, or the client waits forever
        log.exception("frame analysis failed")
        return error_body("internal_error", "the server could not analyse this frame")
