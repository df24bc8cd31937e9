"""Run the pipeline without blocking the server's event loop."""
from __future__ import annotations

from flask import current_app


def pipeline(kind: str):
    """The app's pipeline for "stream" (live frames) or "image" (uploads)."""
    return current_app.extensions["pipelines"][kind]


def run_blocking(function, *args):
    """Call `function(*args)`; under eventlet, in a native thread so other clients keep being served.

    TensorFlow Lite and OpenCV release the GIL but are invisible to eventlet's
    scheduler: called directly, they would stall every green thread for the duration.
    """
    from webapp import socketio

    if socketio.async_mode == "eventlet":
        from eventlet import tpool

        return tpool.execute(function, *args)
    return function(*args)
