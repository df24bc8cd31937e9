"""Moodlens web app: Flask pages, the JSON API and the Socket.IO frame stream.

`create_app` builds the app; nothing heavy happens at import time. Each app has its own Socket.IO
server (`socketio_of(app)`), so two apps in one process never share sessions.
"""

from __future__ import annotations

import io
import logging
import os

from flask import Flask, Request
from flask_socketio import SocketIO
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp import config as settings
from webapp.background import BackgroundThreads
from webapp.body_budget import BodyBudget
from webapp.body_limits import BodyLimits, MinimumRate
from webapp.concurrency import (
    body_deadline,
    green_pause,
    green_timeout,
    lock_factory,
    off_the_event_loop,
    without_waiting,
)
from webapp.log_limit import limit_repeats
from webapp.security import add_security_headers
from webapp.sessions import SessionCap
from webapp.socket_packets import BoundedPacket
from webapp.vision.budget import MB, release_free_memory

log = logging.getLogger("webapp")


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: Werkzeug would spool large ones to a temporary file,
    and no upload may ever touch the disk. MAX_UPLOAD_MB bounds the memory used."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()

    def _load_form_data(self):
        try:
            super()._load_form_data()
        except RequestEntityTooLarge as error:
            if self.content_length is not None and self.content_length > (self.max_content_length or 0):
                raise
            # the body is within its size limit: a form limit was hit, and the reply should name it
            field = "video" if self.path.endswith("/analyze-video") else "image"
            raise RequestEntityTooLarge(
                f"the form has too many parts (at most {self.max_form_parts}) or a text field over "
                f"{self.max_form_memory_size:,} bytes; send one part, the field {field!r}"
            ) from error


def create_app(config: dict | None = None) -> Flask:
    """Build the app.

    Args:
        config: overrides of the environment settings (tests and entry points pass
            these; ASYNC_MODE comes from the entry point). The key PIPELINES may hold
            ready pipelines {"stream": ..., "image": ..., "video": ... (optional: else the
            stream's)}, like `EmotionPipeline` (the pages and /healthz read their `classes`);
            otherwise they are loaded from MODEL_PATH, DETECTOR and UPLOAD_DETECTOR.
    """
    app = Flask(__name__, static_folder="../static", template_folder="../templates")
    app.request_class = InMemoryRequest
    # keys in the order they are built (a model's classes in its order), as the Socket.IO acks and video
    # replies have them: one wire format, whichever way it is sent
    app.json.sort_keys = False
    app.config.from_mapping(settings.from_env())
    app.config.from_mapping(config or {})
    settings.check(app.config)
    app.config["MAX_CONTENT_LENGTH"] = settings.body_limit(app.config["MAX_UPLOAD_MB"])

    new_lock = lock_factory(app.config["ASYNC_MODE"])
    # photos on as many threads as there are cores, each video job on its own
    app.extensions["background"] = BackgroundThreads(
        (os.cpu_count() or 1) + app.config["MAX_VIDEO_JOBS"],
        app.config["BACKGROUND_NICE"],
        green=app.config["ASYNC_MODE"] == "eventlet",
    )
    app.extensions["pipelines"] = app.config.get("PIPELINES") or _load_pipelines(
        app.config, new_lock, app.extensions["background"]
    )

    from webapp import events, routes, video_routes
    from webapp.video_jobs import VideoJobs

    give_back_memory = off_the_event_loop(app.config["ASYNC_MODE"], release_free_memory)
    app.extensions["video_jobs"] = VideoJobs(app.config["MAX_VIDEO_JOBS"], new_lock(), release_memory=give_back_memory)
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(video_routes.blueprint)
    app.after_request(add_security_headers)
    socketio = SocketIO()
    events.register(socketio)
    max_body = max(app.config["MAX_FRAME_KB"] * 1024, app.config["MAX_CONTENT_LENGTH"]) + 4096
    socketio.init_app(
        app,
        async_mode=app.config["ASYNC_MODE"],
        # a frame's message, base64 in a polling request (4/3 of it): photos never come this way, so a
        # message the size of an upload would only let a client make the server parse megabytes of JSON
        max_http_buffer_size=app.config["MAX_FRAME_KB"] * 1024 * 4 // 3 + 4096,
        serializer=BoundedPacket,
        cors_allowed_origins=app.config["CORS_ALLOWED_ORIGINS"],
        # an abandoned session expires ~15 s after its handshake, not 45 s (Engine.IO's 25 + 20)
        ping_interval=10,
        ping_timeout=5,
        message_queue=app.config["MESSAGE_QUEUE"],
    )
    # outermost first: bodies arrive in full and in time before Engine.IO or Flask reads them
    app.wsgi_app = SessionCap(app.wsgi_app, socketio.server, app.config["MAX_SESSIONS_PER_ADDRESS"])
    app.wsgi_app = BodyLimits(
        app.wsgi_app,
        max_body,
        body_deadline(app.config["ASYNC_MODE"], app.config["BODY_TIMEOUT_S"]),
        {
            "/api/v1/analyze-video": (
                settings.body_limit(app.config["MAX_VIDEO_MB"]) + 4096,
                body_deadline(app.config["ASYNC_MODE"], app.config["VIDEO_BODY_TIMEOUT_S"]),
            )
        },
        # a video's body is read only in a free job slot: one that would be refused as busy is refused unread
        slots={"/api/v1/analyze-video": app.extensions["video_jobs"].reserve},
        budget=BodyBudget(
            app.config["MAX_HELD_BODIES_MB"] * MB,
            app.config["MAX_HELD_BODIES_MB"] * MB // 2,
            without_waiting(app.config["ASYNC_MODE"], release_free_memory),
            schedule_s=app.config["BODY_TIMEOUT_S"],
        ),
        min_rate=_minimum_rate(app.config),
        pause=green_pause(app.config["ASYNC_MODE"]),
    )
    if app.config["TRUSTED_PROXIES"]:  # outermost: every layer below sees the client's own address
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"], x_proto=app.config["TRUSTED_PROXIES"]
        )
    limit_repeats("engineio.server", "socketio.server", "webapp.events", "webapp.body_limits")
    return app


def socketio_of(app: Flask) -> SocketIO:
    """The app's Flask-SocketIO object: `.run(app)` serves it, `.test_client(app)` talks to it."""
    return app.extensions["socketio"]


def _minimum_rate(config) -> MinimumRate | None:
    """MIN_BODY_KBPS as `BodyLimits` takes it; None without a way to time reads (the threaded server)."""
    timeout = green_timeout(config["ASYNC_MODE"])
    return MinimumRate(config["MIN_BODY_KBPS"] * 1024, timeout) if timeout and config["MIN_BODY_KBPS"] else None


def _load_pipelines(config, new_lock, background: BackgroundThreads) -> dict:
    """The live-stream, upload and video pipelines, each with its own detector.

    The photo and video pipelines share a second classifier, and both are built on a background thread,
    so their interpreters' worker threads start at its lower priority and a photo never holds the live
    frames' classifier.
    """
    from webapp.vision.budget import DecodeLimits, HeavySlots
    from webapp.vision.classifier import EmotionClassifier
    from webapp.vision.pipeline import build_pipeline

    mb = 1024 * 1024
    shared = {
        "max_faces": config["MAX_FACES"],
        "max_pixels": config["MAX_PIXELS"],
        "new_lock": new_lock,
        "limits": DecodeLimits(max_pixels=config["MAX_PIXELS"], max_bytes=config["MAX_DECODE_MB"] * mb),
        # one cap for uploads and frames alike: memory is what it protects
        "heavy_slots": HeavySlots(config["MAX_HEAVY_ANALYSES"], config["HEAVY_DECODE_MB"] * mb, new_lock()),
    }

    def classifier():
        return EmotionClassifier(config["MODEL_PATH"], flip_tta=config["FLIP_TTA"], lock=new_lock())

    def photos_and_videos() -> dict:
        photos_classifier = classifier()
        return {
            "image": build_pipeline(
                detector=config["UPLOAD_DETECTOR"],
                classifier=photos_classifier,
                **{**shared, "max_faces": config["UPLOAD_MAX_FACES"]},
            ),
            # video jobs get their own detector (and its lock), so a long job never queues the photos behind it
            "video": build_pipeline(
                detector=config["DETECTOR"], classifier=photos_classifier, padded_retry=False, **shared
            ),
        }

    # no padded retry on the stream: it would double the cost of every frame without a face
    pipelines = {
        "stream": build_pipeline(detector=config["DETECTOR"], classifier=classifier(), padded_retry=False, **shared),
        **background.run(photos_and_videos),
    }
    log.info("pipelines ready: %s", {kind: p.describe() for kind, p in pipelines.items()})
    return pipelines
