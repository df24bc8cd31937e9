"""Moodlens web app: Flask pages, the JSON API and the Socket.IO frame stream.

`create_app` builds the app; nothing heavy happens at import time.
"""

from __future__ import annotations

import io
import logging

from flask import Flask, Request
from flask_socketio import SocketIO

from webapp import config as settings
from webapp.concurrency import lock_factory

socketio = SocketIO()
log = logging.getLogger("webapp")


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: Werkzeug would spool large ones to a temporary file,
    and no upload may ever touch the disk. MAX_UPLOAD_MB bounds the memory used."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def create_app(config: dict | None = None) -> Flask:
    """Build the app.

    Args:
        config: overrides of the environment settings (tests and entry points pass
            these; ASYNC_MODE comes from the entry point). The key PIPELINES may hold
            ready pipelines {"stream": ..., "image": ...}; otherwise they are loaded from
            MODEL_PATH, DETECTOR and UPLOAD_DETECTOR.
    """
    app = Flask(__name__, static_folder="../static", template_folder="../templates")
    app.request_class = InMemoryRequest
    app.config.from_mapping(settings.from_env())
    app.config.from_mapping(config or {})
    settings.check(app.config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_MB"] * 1024 * 1024

    app.extensions["pipelines"] = app.config.get("PIPELINES") or _load_pipelines(
        app.config, lock_factory(app.config["ASYNC_MODE"])
    )

    from webapp import events, routes

    app.register_blueprint(routes.blueprint)
    events.register(socketio)
    socketio.init_app(
        app,
        async_mode=app.config["ASYNC_MODE"],
        max_http_buffer_size=max(app.config["MAX_FRAME_KB"] * 1024, app.config["MAX_CONTENT_LENGTH"]) + 4096,
        cors_allowed_origins=app.config["CORS_ALLOWED_ORIGINS"],
        message_queue=app.config["MESSAGE_QUEUE"],
    )
    return app


def _load_pipelines(config, new_lock) -> dict:
    """The live-stream and upload pipelines: one classifier, each pipeline with its own detector."""
    from webapp.vision.classifier import EmotionClassifier
    from webapp.vision.pipeline import build_pipeline

    classifier = EmotionClassifier(config["MODEL_PATH"], flip_tta=config["FLIP_TTA"], lock=new_lock())
    shared = {
        "classifier": classifier,
        "max_faces": config["MAX_FACES"],
        "max_pixels": config["MAX_PIXELS"],
        "new_lock": new_lock,
    }
    # no padded retry on the stream: it would double the cost of every frame without a face
    pipelines = {
        "stream": build_pipeline(detector=config["DETECTOR"], padded_retry=False, **shared),
        "image": build_pipeline(detector=config["UPLOAD_DETECTOR"], **shared),
    }
    log.info("pipelines ready: %s", {kind: p.describe() for kind, p in pipelines.items()})
    return pipelines
