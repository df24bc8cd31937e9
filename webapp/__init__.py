"""Moodlens web app: Flask pages, the JSON API and the Socket.IO frame stream.

`create_app` builds the app; nothing heavy happens at import time.
"""
from __future__ import annotations

import io
import logging

from flask import Flask, Request
from flask_socketio import SocketIO

from webapp import config as settings

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
        config: overrides of the environment settings (tests pass these). The key
            PIPELINES may hold ready pipelines {"stream": ..., "image": ...}; otherwise
            they are loaded from MODEL_PATH, DETECTOR and UPLOAD_DETECTOR.
    """
    app = Flask(__name__, static_folder="../static", template_folder="../templates")
    app.request_class = InMemoryRequest
    app.config.from_mapping(settings.from_env())
    app.config.from_mapping(config or {})
    settings.check(app.config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_MB"] * 1024 * 1024

    app.extensions["pipelines"] = app.config.get("PIPELINES") or _load_pipelines(app.config)

    from webapp import events, routes

    app.register_blueprint(routes.blueprint)
    events.register(socketio)
    socketio.init_app(
        app,
        async_mode=app.config.get("ASYNC_MODE"),
        max_http_buffer_size=max(app.config["MAX_FRAME_KB"] * 1024, app.config["MAX_CONTENT_LENGTH"]) + 4096,
        cors_allowed_origins=app.config["CORS_ALLOWED_ORIGINS"],
    )
    return app


def _load_pipelines(config) -> dict:
    from webapp.vision.pipeline import build_pipeline

    stream = build_pipeline(config["MODEL_PATH"], config["DETECTOR"], config["FLIP_TTA"], config["MAX_FACES"], config["MAX_PIXELS"], padded_retry=False)
    image = build_pipeline(config["MODEL_PATH"], config["UPLOAD_DETECTOR"], max_faces=config["MAX_FACES"], max_pixels=config["MAX_PIXELS"], classifier=stream.classifier)
    pipelines = {"stream": stream, "image": image}
    log.info("pipelines ready: %s", {kind: p.describe() for kind, p in pipelines.items()})
    return pipelines
