"""Pages, the JSON API and the health check (thin: parse -> pipeline -> to_dict)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webapp.concurrency import pipeline, run_in_background
from webapp.errors import RETRY_AFTER_S, error_body, from_image_error
from webapp.vision.imaging import ImageError

blueprint = Blueprint("main", __name__)
# ?faces=: "detect" finds the faces; "whole" takes the image as one face crop
FACES_MODES = ("detect", "whole")


@blueprint.get("/")
def live():
    """The webcam page."""
    return render_template(
        "live.html", emotions=pipeline("stream").classes, max_frame_bytes=current_app.config["MAX_FRAME_KB"] * 1024
    )


@blueprint.get("/upload")
def upload():
    """The still-image page."""
    return render_template(
        "upload.html", emotions=pipeline("image").classes, max_upload_mb=current_app.config["MAX_UPLOAD_MB"]
    )


@blueprint.post("/api/v1/analyze")
def analyze():
    """Analyse an image sent as multipart field `image` or as the raw request body.

    `?faces=whole` classifies the whole image as one face crop, without detection.
    """
    faces = request.args.get("faces", "detect")
    if faces not in FACES_MODES:
        return jsonify(
            error_body("bad_parameter", f"faces must be one of {', '.join(FACES_MODES)}, got {faces!r}")
        ), 400
    if request.mimetype == "multipart/form-data":
        file = request.files.get("image")
        if file is None:
            return jsonify(error_body("missing_image", "send the image as the multipart field 'image'")), 400
        data = file.read()
    else:  # any other body is the image itself (curl --data-binary sends it as form-urlencoded)
        data = request.get_data(cache=False)
    try:
        analysis = run_in_background(
            pipeline("image").analyze_bytes, data, faces == "whole", turn=request.remote_addr or ""
        )
    except ImageError as error:
        body, status = from_image_error(error)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}
        return jsonify(body), status, headers
    return jsonify(analysis.to_dict())


@blueprint.get("/healthz")
def healthz():
    """Readiness, this instance's name, the emotions the live stream answers with and the models in use."""
    pipelines = current_app.extensions["pipelines"]
    return jsonify(
        {
            "status": "ok",
            "ready": True,
            "instance": current_app.config["INSTANCE"],
            "emotions": list(pipelines["stream"].classes),
            "models": {kind: p.describe() for kind, p in pipelines.items()},
        }
    )


@blueprint.app_errorhandler(HTTPException)
def http_error(error: HTTPException):
    """JSON errors for API clients, the usual page for browsers."""
    if request.path.startswith("/api/") or request.path == "/healthz" or not request.accept_mimetypes.accept_html:
        code = {413: "too_large"}.get(error.code, error.name.lower().replace(" ", "_"))
        message = error.description
        if error.code == 413 and message == RequestEntityTooLarge.description:  # the body size, not a form limit
            message = f"the upload exceeds {(request.max_content_length or 0) // (1024 * 1024)} MB"
        reply = jsonify(error_body(code, message))
        # keep what the error adds beyond its HTML body, e.g. the Allow header of a 405
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                reply.headers[name] = value
        return reply, error.code
    return error


@blueprint.app_errorhandler(Exception)
def internal_error(error: Exception):
    """Unexpected failures: logged, answered with a JSON 500, the server keeps serving."""
    current_app.logger.exception("request failed")
    return jsonify(error_body("internal_error", "the server could not handle this request")), 500
