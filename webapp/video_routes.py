"""The video page and API: upload -> job (bounded) -> analyze_video off the event loop -> JSON or CSV."""

from __future__ import annotations

import io
import logging

from flask import Blueprint, Response, current_app, jsonify, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from webapp import socketio_of
from webapp.body_limits import SLOT
from webapp.concurrency import on_hang_up, run_blocking, run_in_background
from webapp.config import body_limit
from webapp.errors import error_body, from_video_error
from webapp.form_view import BufferReader, file_in_form
from webapp.video_jobs import JobResult, JobsBusy, VideoJob, VideoJobs
from webapp.vision.video import VideoError, analyze_video, available

blueprint = Blueprint("video", __name__)
log = logging.getLogger(__name__)
MAX_FPS = 30.0
REPLY_FORMATS = ("json", "csv")


@blueprint.get("/video")
def page():
    """The video page."""
    return render_template("video.html", emotions=_pipeline().classes, max_video_mb=current_app.config["MAX_VIDEO_MB"])


def _jobs() -> VideoJobs:
    return current_app.extensions["video_jobs"]


def _pipeline():
    pipelines = current_app.extensions["pipelines"]
    return pipelines.get("video") or pipelines["stream"]


def _bad(code: str, message: str, status: int = 400, headers: dict | None = None):
    return jsonify(error_body(code, message)), status, headers or {}


def _bad_format(reply_format: str):
    return _bad("bad_parameter", f"format must be json or csv, got {reply_format!r}")


@blueprint.post("/api/v1/analyze-video")
def analyze():
    """Analyse a video sent as multipart field `video` or as the raw body.

    `?fps=` frames analysed per second (default 5), `?format=csv` a CSV reply, `?async=1` a job to poll (202).
    """
    if not available():
        return _bad(
            "video_unavailable", "this server was installed without PyAV (requirements-live.txt): no video files", 501
        )
    request.max_content_length = body_limit(current_app.config["MAX_VIDEO_MB"])
    try:
        fps = float(request.args.get("fps", 5))
    except ValueError:
        fps = -1.0
    if not 0 < fps <= MAX_FPS:
        return _bad("bad_parameter", f"fps must be a number above 0 and at most {MAX_FPS:g}")
    reply_format = request.args.get("format", "json")
    if reply_format not in REPLY_FORMATS:
        return _bad_format(reply_format)
    if request.args.get("async", "0") not in ("0", "1"):
        return _bad("bad_parameter", "async must be 0 or 1")
    if (request.content_length or 0) > request.max_content_length:
        raise RequestEntityTooLarge()  # before the body is read; the raw body below is taken without Werkzeug
    if SLOT not in request.environ and (request.content_length or request.headers.get("Transfer-Encoding")):
        # every video body is read by BodyLimits, in a job slot and within its deadline: this one came by a
        # path it did not know as the video route's, and reading it here would escape both
        return _bad("bad_request", "send videos to /api/v1/analyze-video")
    if request.mimetype == "multipart/form-data":
        source = _video_in_place()
        if source is None:
            source = _video_from_form()
            if source is None:
                return _bad("missing_video", "send the video as the multipart field 'video'")
        _drop_body()
    elif isinstance(request.environ["wsgi.input"], io.BytesIO):
        source = request.environ["wsgi.input"]  # the body as BodyLimits buffered it: a copy would double it
    else:
        source = io.BytesIO()  # no body: any other was buffered by BodyLimits or refused above
    source.seek(0, io.SEEK_END)
    if source.tell() == 0:
        return _bad("empty", "the video is empty (0 bytes)")
    source.seek(0)
    try:
        job = _jobs().start(request.environ.get(SLOT))  # the slot BodyLimits read the body in, if any
    except JobsBusy as busy:
        return _bad("busy", str(busy), 503, {"Retry-After": str(busy.retry_after_s)})
    config = current_app.config
    settings = (source, _pipeline(), fps, float(config["MAX_VIDEO_SECONDS"]), int(config["MAX_PIXELS"]))
    if request.args.get("async") == "1":
        # a client that never learnt the job's id (it left while the 202 was on its way) cannot poll or cancel it
        give_up_after = float(config["VIDEO_POLL_TIMEOUT_S"])
        socketio_of(current_app).start_background_task(
            _run, current_app._get_current_object(), job, *settings, give_up_after
        )
        return jsonify({**job.to_dict(), "url": url_for("video.job", job_id=job.id)}), 202
    try:
        # a client that gives up waiting (or nginx's read timeout) must not keep the video slot to the end
        with on_hang_up(request.environ, job.cancel):
            _run(current_app._get_current_object(), job, *settings)
    finally:
        # its id was never given out: kept, it would only crowd out async results a client is polling
        _jobs().forget(job)
    if job.state == "cancelled":  # nobody reads this
        return _bad("cancelled", "the client closed the connection before the answer", 410)
    if job.error is not None:
        return _job_error(job)
    if reply_format == "csv":
        return _csv(job)
    return Response(job.result.json_body, mimetype="application/json")


def _job_error(job: VideoJob):
    body, status = from_video_error(*job.error)
    return jsonify(body), status


def _video_in_place() -> BufferReader | None:
    """The form's video part, read in place from the body BodyLimits buffered (`webapp.form_view`); None when
    the form is not one that reading is sure of."""
    body = request.environ["wsgi.input"]
    if not isinstance(body, io.BytesIO):
        return None
    # a 200 MB body is searched in ~0.1 s, in C; off the event loop all the same
    return run_blocking(file_in_form, body, request.content_type, "video", request.max_form_parts)


def _video_from_form():
    """The form's video part as Werkzeug parses it (a copy), or None without one."""
    # parsing a 200 MB form takes 0.6 s of pure Python: off the event loop, or every live frame waits
    form = request._get_current_object()
    # the form limits are read from the app's config, which the native thread has no context for
    form.max_form_memory_size, form.max_form_parts = form.max_form_memory_size, form.max_form_parts
    file = run_blocking(lambda: form.files.get("video"))
    if file is None:
        return None
    # InMemoryRequest's BytesIO, not copied again; the request closes its files when it ends, so the
    # job takes this one and leaves the request an empty one to close
    source, file.stream = file.stream, io.BytesIO()
    return source


def _drop_body() -> None:
    """Let the request's hold on the multipart body go: the job keeps what it reads (a view of the body, or
    Werkzeug's copy of the part, beside which the body would double a 200 MB upload's memory). Werkzeug
    caches the input stream on the request."""
    request.environ["wsgi.input"] = io.BytesIO()
    request.__dict__.pop("stream", None)


def _run(
    app,
    job: VideoJob,
    source,
    pipeline,
    fps: float,
    max_seconds: float,
    max_pixels: int,
    give_up_after: float | None = None,
) -> None:
    """Analyse on a background thread (decoding and inference would stall the event loop, and must leave
    the CPU to the live frames first), then serialise the result off the event loop too. With
    `give_up_after`, a job nobody has polled within that many seconds of its start is cancelled: its
    client never learnt its id, and it would hold a video slot for minutes with no one to read it."""

    def progress(video_s: float, fraction: float | None) -> None:
        job.video_s, job.progress = video_s, fraction

    def cancelled() -> bool:  # on the background thread: no logging here (its locks are green under eventlet)
        if give_up_after is not None and job.never_polled_for() > give_up_after:
            job.cancel()
        return job.cancel_requested

    with app.app_context():
        try:
            analysis = run_in_background(
                analyze_video, source, pipeline, fps, max_seconds, progress, cancelled, max_pixels
            )
            if analysis is None and give_up_after is not None and not job.polled:  # a DELETE polls it
                log.info("video job %s: not polled within %.0f s, cancelled", job.id, give_up_after)
            # A long video's result takes seconds to serialise, which on the event loop would stall every
            # client. It is pure Python, holding the GIL the event loop needs: on a niced thread, beside other
            # busy processes, it would hold it for longer. Only the bytes are kept, not the result's objects.
            result = None if analysis is None else run_blocking(JobResult.of, analysis)
            del analysis
            _jobs().finish(job, result=result)
        except VideoError as error:
            _jobs().finish(job, error=(error.code, error.message))
        except Exception:
            log.exception("video job %s failed", job.id)
            _jobs().finish(job, error=("internal_error", "the server could not analyse this video"))


def _csv(job: VideoJob) -> Response:
    return Response(
        job.result.csv_body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="moodlens-{job.id}.csv"'},
    )


@blueprint.get("/api/v1/jobs/<job_id>")
def job(job_id: str):
    """A video job's state, progress and, once done, its result (`?format=csv`: the CSV)."""
    reply_format = request.args.get("format", "json")
    if reply_format not in REPLY_FORMATS:
        return _bad_format(reply_format)
    found = _jobs().get(job_id)
    if found is None:
        return _bad("not_found", "no such job (finished jobs are forgotten after a while)", 404)
    if reply_format == "csv":
        # a CSV only a running job can still have: a client retrying on 409 must not wait on an ended one
        if found.state == "running":
            return _bad("not_ready", "the job is running", 409)
        if found.state == "cancelled":
            return _bad("cancelled", "the job was cancelled: it has no result", 410)
        if found.error is not None:
            return _job_error(found)
        return _csv(found)
    return Response(found.json_parts(), mimetype="application/json")


@blueprint.delete("/api/v1/jobs/<job_id>")
def cancel(job_id: str):
    """Ask a running job to stop (202; it ends within one decoded frame). An ended job stays as it is (200)."""
    found = _jobs().get(job_id)
    if found is None:
        return _bad("not_found", "no such job", 404)
    if found.state != "running":
        return jsonify(found.to_dict()), 200
    found.cancel()
    return jsonify(found.to_dict()), 202
