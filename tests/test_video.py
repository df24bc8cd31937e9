"""Video files: the Flask-free core, the API (JSON, CSV, jobs), every bad input, the concurrency cap."""

from __future__ import annotations

import csv
import io
import threading
import time

import numpy as np
import pytest

from tests.harness import SHIPPED_CLASSES, ReadWatcher, audio_only_bytes, video_bytes, video_frames_delayed
from webapp.vision import video
from webapp.vision.video import VideoError, analyze_video

VIDEO_API = "/api/v1/analyze-video"


@pytest.fixture(scope="module")
def face_mp4(grace_rgb) -> bytes:
    """Two seconds of the face photo drifting right, H.264 in MP4, 30 fps."""
    return video_bytes(grace_rgb, seconds=2.0)


@pytest.fixture()
def video_app(app):
    """An app sharing the session's pipelines, with small video limits."""
    from webapp import create_app

    def make(**config):
        settings = {"TESTING": True, "PIPELINES": app.extensions["pipelines"], "MAX_UPLOAD_MB": 2}
        return create_app({**settings, **config})

    return make


def analysed_with_progress(app, data: bytes):
    """The video pipeline's analysis of `data` at 5 fps, and every (video_s, fraction) progress report."""
    reports = []
    result = analyze_video(
        io.BytesIO(data),
        app.extensions["pipelines"]["video"],
        fps=5,
        progress=lambda *report: reports.append(report),
    )
    return result, reports


def test_analyze_video_samples_at_fps_and_tracks_the_face(face_mp4, app):
    result, reports = analysed_with_progress(app, face_mp4)
    video_s, progress = zip(*reports, strict=True)
    assert list(video_s) == pytest.approx([frame.t for frame in result.frames])
    assert [frame.t for frame in result.frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8])
    assert all(len(frame.faces) == 1 for frame in result.frames)
    assert {frame.faces[0].track_id for frame in result.frames} == {1}  # one face, one track
    assert list(progress) == sorted(progress) and progress[-1] > 0.85
    assert result.summary()["tracks"][0]["frames"] == 10


def test_analyze_video_stops_when_cancelled(face_mp4, app):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    assert analyze_video(io.BytesIO(face_mp4), app.extensions["pipelines"]["video"], cancelled=cancelled) is None
    assert len(calls) == 3


def test_frames_say_how_many_faces_were_found_where_more_than_labelled(grace_rgb, app):
    import copy

    pair = np.concatenate([grace_rgb, grace_rgb[:, ::-1]], axis=1)
    two_faces = video_bytes(pair, seconds=0.4, size=(1280, 480))
    pipeline = app.extensions["pipelines"]["video"]
    all_labelled = analyze_video(io.BytesIO(two_faces), pipeline, fps=5)
    assert [(len(frame.faces), frame.faces_found) for frame in all_labelled.frames] == [(2, 2), (2, 2)]
    assert all_labelled.summary()["frames_over_face_limit"] == 0
    one_labelled = copy.copy(pipeline)  # as MAX_FACES=1 builds it
    one_labelled.max_faces = 1
    result = analyze_video(io.BytesIO(two_faces), one_labelled, fps=5)
    assert [(len(frame.faces), frame.faces_found) for frame in result.frames] == [(1, 2), (1, 2)]
    assert result.summary()["frames_over_face_limit"] == 2
    assert [frame["faces_found"] for frame in result.to_dict()["frames"]] == [2, 2]


def test_api_json(client, face_mp4):
    reply = client.post("/api/v1/analyze-video?fps=2", data={"video": (io.BytesIO(face_mp4), "face.mp4")})
    assert reply.status_code == 200, reply.json
    body = reply.json
    assert body["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert body["sampled_fps"] == 2
    assert [frame["t"] for frame in body["frames"]] == [0.0, 0.5, 1.0, 1.5]
    face = body["frames"][0]["faces"][0]
    assert face["id"] == 1 and set(face["probabilities"]) == set(SHIPPED_CLASSES) and face["box"]["width"] > 50
    summary = body["summary"]
    assert summary["sampled_frames"] == 4 and summary["frames_with_faces"] == 4
    assert summary["frames_over_face_limit"] == 0 and body["frames"][0]["faces_found"] == 1
    assert summary["dominant"] in SHIPPED_CLASSES and len(summary["tracks"]) == 1


def test_a_video_form_is_read_in_place_and_answered_as_the_raw_body_is(client, face_mp4, monkeypatch):
    from webapp import video_routes
    from webapp.form_view import BufferReader

    sources = []

    def recording(source, *args):
        sources.append(type(source))
        return analyze_video(source, *args)

    monkeypatch.setattr(video_routes, "analyze_video", recording)
    as_form = client.post("/api/v1/analyze-video?fps=2", data={"video": (io.BytesIO(face_mp4), "face.mp4")})
    raw = client.post("/api/v1/analyze-video?fps=2", data=face_mp4, content_type="video/mp4")
    assert as_form.status_code == raw.status_code == 200
    # no copy of the video: a view of the body BodyLimits buffered, as the raw body is that body
    assert sources == [BufferReader, io.BytesIO]
    assert as_form.json["frames"] == raw.json["frames"] and as_form.json["summary"] == raw.json["summary"]


def test_api_raw_body_and_webm(client, grace_rgb):
    webm = video_bytes(grace_rgb, seconds=1.0, codec="libvpx-vp9", container="webm")
    reply = client.post("/api/v1/analyze-video", data=webm, content_type="video/webm")
    assert reply.status_code == 200, reply.json
    assert len(reply.json["frames"]) == 5 and reply.json["frames"][0]["faces"]


@pytest.mark.parametrize("container, mimetype", [("mov", "video/quicktime"), ("matroska", "video/x-matroska")])
def test_api_mov_and_mkv(client, grace_rgb, container, mimetype):
    data = video_bytes(grace_rgb, seconds=1.0, container=container)
    reply = client.post("/api/v1/analyze-video", data=data, content_type=mimetype)
    assert reply.status_code == 200, reply.json
    assert len(reply.json["frames"]) == 5 and reply.json["frames"][0]["faces"]


def test_api_csv(client, face_mp4):
    reply = client.post("/api/v1/analyze-video?format=csv", data=face_mp4, content_type="video/mp4")
    assert reply.status_code == 200 and reply.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(reply.get_data(as_text=True))))
    assert len(rows) == 10
    assert rows[0]["id"] == "1" and rows[0]["emotion"] in SHIPPED_CLASSES
    assert sum(float(rows[0][e]) for e in SHIPPED_CLASSES) == pytest.approx(1.0, abs=0.01)


def _mangled(data: bytes) -> bytes:
    head = bytearray(data)
    head[40:400] = bytes(360)  # the first boxes' insides
    return bytes(head)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda rgb, mp4: b"", 400, "empty"),
        (lambda rgb, mp4: b"this is not a video at all" * 40, 415, "not_a_video"),
        (lambda rgb, mp4: mp4[: len(mp4) // 2], 400, "corrupt_video"),
        (lambda rgb, mp4: _mangled(mp4), 400, "corrupt_video"),
        (lambda rgb, mp4: audio_only_bytes(), 400, "no_video_stream"),
        (lambda rgb, mp4: video_bytes(rgb, seconds=0, container="matroska"), 400, "no_frames"),
        (lambda rgb, mp4: video_bytes(rgb, seconds=0.5, codec="ffv1", container="matroska"), 415, "unsupported_codec"),
        (lambda rgb, mp4: video_bytes(rgb, seconds=0.5, codec="mpeg4", container="avi"), 415, "not_a_video"),
    ],
    ids=["empty", "not-video", "truncated", "corrupt", "audio-only", "zero-frames", "ffv1", "avi"],
)
def test_bad_videos_get_their_own_json_errors(client, grace_rgb, face_mp4, make, status, code):
    reply = client.post("/api/v1/analyze-video", data=make(grace_rgb, face_mp4), content_type="video/mp4")
    assert reply.status_code == status, reply.json
    assert reply.json["error"]["code"] == code and reply.json["error"]["message"]


def test_png_is_not_a_video(client, grace_jpeg):
    reply = client.post("/api/v1/analyze-video", data={"video": (io.BytesIO(grace_jpeg), "face.jpg")})
    assert reply.status_code == 415 and reply.json["error"]["code"] == "not_a_video"


@pytest.mark.parametrize("query", ["fps=0", "fps=abc", "fps=100", "format=xml", "async=2"])
def test_bad_parameters(client, face_mp4, query):
    reply = client.post(f"/api/v1/analyze-video?{query}", data=face_mp4, content_type="video/mp4")
    assert reply.status_code == 400 and reply.json["error"]["code"] == "bad_parameter"


def test_missing_field(client, face_mp4):
    reply = client.post("/api/v1/analyze-video", data={"image": (io.BytesIO(face_mp4), "face.mp4")})
    assert reply.status_code == 400 and reply.json["error"]["code"] == "missing_video"


def test_too_long_from_the_container(video_app, grace_rgb):
    client = video_app(MAX_VIDEO_SECONDS=1).test_client()
    reply = client.post(
        "/api/v1/analyze-video", data=video_bytes(grace_rgb, seconds=2.0, fps=5), content_type="video/mp4"
    )
    assert reply.status_code == 413 and reply.json["error"]["code"] == "too_long"


def test_too_large_video_while_images_keep_their_limit(video_app, grace_rgb):
    client = video_app(MAX_VIDEO_MB=3).test_client()
    big = bytes(4 * 1024 * 1024)
    reply = client.post("/api/v1/analyze-video", data=big, content_type="video/mp4")
    assert reply.status_code == 413 and reply.json["error"]["code"] == "too_large"
    assert "3 MB" in reply.json["error"]["message"]
    # a 2.5 MB video is over MAX_UPLOAD_MB (2) yet within MAX_VIDEO_MB: it reaches the decoder
    reply = client.post("/api/v1/analyze-video", data=bytes(2_500_000), content_type="video/mp4")
    assert reply.json["error"]["code"] == "not_a_video"
    reply = client.post("/api/v1/analyze", data=bytes(2_500_000), content_type="image/jpeg")
    assert reply.status_code == 413 and "2 MB" in reply.json["error"]["message"]
    # a file of exactly the limit fits in its multipart form (the pages say "up to N MB")
    for path, field, megabytes in (("/api/v1/analyze-video", "video", 3), ("/api/v1/analyze", "image", 2)):
        # built here: the test client would spool a form this large to a temporary file
        form = (
            (
                f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="exact.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + bytes(megabytes * 1024 * 1024)
            + b"\r\n--b--\r\n"
        )
        reply = client.post(path, data=form, content_type="multipart/form-data; boundary=b")
        assert reply.status_code in (400, 415), (path, reply.json)  # refused as no image or video: read


def test_a_video_that_declares_no_duration_reports_the_seconds_done(app, grace_rgb):
    recorded = video_bytes(grace_rgb, seconds=1.0, codec="libvpx", container="webm", declare_duration=False)
    result, reports = analysed_with_progress(app, recorded)
    assert result.info.duration_s is None
    assert reports == [(0.0, None)] + [(pytest.approx(frame.t), None) for frame in result.frames]


def test_an_async_job_nobody_polls_is_cancelled_and_frees_its_slot(video_app, face_mp4):
    # a page that left while the 202 was on its way never learnt the id: it cannot poll or cancel the job
    app = video_app(MAX_VIDEO_JOBS=1, VIDEO_POLL_TIMEOUT_S=1)
    client = app.test_client()
    with video_frames_delayed(app, lambda: time.sleep(0.3)):
        forgotten = client.post("/api/v1/analyze-video?async=1", data=face_mp4, content_type="video/mp4").json["url"]
        time.sleep(2.5)  # never polled, for longer than VIDEO_POLL_TIMEOUT_S
        assert client.get(forgotten).json["state"] == "cancelled"

        # polled once, then left alone (a hidden tab whose timers the browser suspends): it runs to its end
        polled = client.post("/api/v1/analyze-video?async=1", data=face_mp4, content_type="video/mp4").json["url"]
        assert client.get(polled).json["state"] == "running"
        time.sleep(2.5)
        deadline = time.monotonic() + 30
        while (state := client.get(polled).json)["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert state["state"] == "done" and state["video_s"] == pytest.approx(1.8)


def test_async_job_progress_result_csv_and_expiry(client, face_mp4):
    reply = client.post("/api/v1/analyze-video?async=1", data=face_mp4, content_type="video/mp4")
    assert reply.status_code == 202 and reply.json["state"] == "running"
    url = reply.json["url"]
    deadline = time.monotonic() + 60
    while (state := client.get(url).json)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["state"] == "done" and state["progress"] == 1.0 and state["video_s"] == pytest.approx(1.8)
    assert len(state["result"]["frames"]) == 10
    assert client.get(url + "?format=csv").mimetype == "text/csv"
    assert client.get("/api/v1/jobs/nope").json["error"]["code"] == "not_found"


def test_cancel_and_the_busy_cap(video_app, face_mp4):
    app = video_app(MAX_VIDEO_JOBS=1)
    client = app.test_client()
    gate = threading.Event()
    with video_frames_delayed(app, lambda: gate.wait(10)):
        url = client.post("/api/v1/analyze-video?async=1", data=face_mp4, content_type="video/mp4").json["url"]
        busy = client.post("/api/v1/analyze-video", data=face_mp4, content_type="video/mp4")
        assert busy.status_code == 503 and busy.json["error"]["code"] == "busy"
        assert int(busy.headers["Retry-After"]) > 0
        assert client.delete(url).status_code == 202
        gate.set()
        deadline = time.monotonic() + 30
        while client.get(url).json["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(url).json["state"] == "cancelled"
        # an ended job: its CSV will never come, and cancelling again changes nothing
        assert client.get(url + "?format=csv").status_code == 410
        assert client.get(url + "?format=csv").json["error"]["code"] == "cancelled"
        assert client.delete(url).status_code == 200 and client.get(url).json["state"] == "cancelled"
        # the slot is free again
        assert client.post("/api/v1/analyze-video?fps=1", data=face_mp4, content_type="video/mp4").status_code == 200


@pytest.mark.parametrize("job_id", ["x" * 5000, "%00", "..%2f..%2fetc", "%ff%fe", "1' or '1'='1"])
def test_job_ids_of_any_shape_are_not_found_in_json(client, job_id):
    for method in ("get", "delete"):
        for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/csv"):
            reply = getattr(client, method)(path)
            assert reply.status_code in (404, 405) and reply.is_json, (method, path, reply.status_code)


def test_video_error_codes_are_distinct():
    with pytest.raises(VideoError) as caught:
        analyze_video(io.BytesIO(b"\x1a\x45\xdf\xa3" + bytes(100)), None)
    assert caught.value.code == "corrupt_video"


def test_body_limits_give_the_video_route_its_own_size_and_deadline():
    from contextlib import contextmanager

    from webapp.body_limits import BodyLimits

    used = []

    def deadline(name):
        @contextmanager
        def context():
            used.append(name)
            yield

        return context

    def echo(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    limits = BodyLimits(echo, 100, deadline("default"), {"/api/v1/analyze-video": (1000, deadline("video"))})

    def call(path, size):
        seen = {}
        environ = {"PATH_INFO": path, "CONTENT_LENGTH": str(size), "wsgi.input": io.BytesIO(b"v" * size)}
        body = b"".join(limits(environ, lambda status, headers: seen.update(status=status)))
        return seen["status"], len(body)

    assert call("/api/v1/analyze-video", 900) == ("200 OK", 900) and used == ["video"]
    assert call("/api/v1/analyze", 90) == ("200 OK", 90) and used == ["video", "default"]
    # over the limit: passed on unread, for the app to refuse with its own message
    assert call("/api/v1/analyze", 900)[0] == "200 OK" and used == ["video", "default"]
    # the path as the router matches it: a doubled slash still reaches the video route
    assert call("//api/v1//analyze-video", 900) == ("200 OK", 900) and used[-1] == "video"


def test_body_limits_give_other_clients_a_turn_after_each_chunk():
    from webapp.body_limits import CHUNK, BodyLimits

    turns = []

    def echo(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    limits = BodyLimits(echo, 10 * CHUNK, pause=lambda: turns.append(1))
    size = 4 * CHUNK + 1
    environ = {"PATH_INFO": "/api/v1/analyze", "CONTENT_LENGTH": str(size), "wsgi.input": io.BytesIO(b"v" * size)}
    assert len(b"".join(limits(environ, lambda *_: None))) == size and len(turns) == 5


def test_a_video_body_that_escaped_the_body_limits_is_refused_unread(video_app, face_mp4):
    from webapp.body_limits import SLOT

    app = video_app()
    view = app.view_functions["video.analyze"]
    never_read = io.BytesIO(face_mp4)
    with app.test_request_context(
        "/api/v1/analyze-video", method="POST", input_stream=never_read, content_type="video/mp4"
    ) as context:
        context.request.environ["wsgi.input"] = never_read  # a socket's stream, not BodyLimits' buffer
        context.request.environ.pop(SLOT, None)
        reply = app.make_response(view())
    assert reply.status_code == 400 and reply.json["error"]["code"] == "bad_request"
    assert never_read.tell() == 0


# --- frame size: MAX_PIXELS, cancelling between samples, shrinking large frames


class RecordingPipeline:
    """The video pipeline, noting the shape of every frame it is given."""

    def __init__(self, pipeline):
        self.pipeline, self.classes, self.shapes = pipeline, pipeline.classes, []

    def analyze(self, rgb):
        self.shapes.append(rgb.shape)
        return self.pipeline.analyze(rgb)


def test_frames_over_max_pixels_are_refused_before_any_is_analysed(video_app, face_mp4, monkeypatch):
    app = video_app(MAX_PIXELS=640 * 480 - 1)
    recording = RecordingPipeline(app.extensions["pipelines"]["video"])
    monkeypatch.setitem(app.extensions["pipelines"], "video", recording)
    reply = app.test_client().post(VIDEO_API, data=face_mp4, content_type="video/mp4")
    assert reply.status_code == 413 and reply.json["error"]["code"] == "too_large"
    assert "640x480" in reply.json["error"]["message"] and "307,199" in reply.json["error"]["message"]
    assert recording.shapes == []


def test_a_decoded_frame_over_max_pixels_is_refused(face_mp4):
    # the headers can declare a small size and the stream switch to a larger one: each frame is checked
    import av

    with av.open(io.BytesIO(face_mp4)) as container:
        frames = video.sampled_frames(container, container.streams.video[0], 5, 60, max_pixels=1000)
        with pytest.raises(VideoError) as caught:
            next(frames)
    assert caught.value.code == "too_large"


def test_cancelling_is_seen_between_sampled_frames(face_mp4, app):
    # at 0.01 fps only the first of the 60 frames is sampled: the rest are decoded between two samples
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) >= 5

    pipeline = app.extensions["pipelines"]["video"]
    assert analyze_video(io.BytesIO(face_mp4), pipeline, fps=0.01, cancelled=cancelled) is None
    assert len(calls) == 5


def test_large_frames_are_analysed_shrunk_with_boxes_in_full_size_pixels(face_mp4, app, monkeypatch):
    pipeline = app.extensions["pipelines"]["video"]
    full = analyze_video(io.BytesIO(face_mp4), pipeline, fps=2)
    monkeypatch.setattr(video, "ANALYSED_SIDE", 320)
    recording = RecordingPipeline(pipeline)
    shrunk = analyze_video(io.BytesIO(face_mp4), recording, fps=2)
    assert set(recording.shapes) == {(240, 320, 3)}
    assert (shrunk.info.width, shrunk.info.height) == (640, 480)
    for big, small in zip(full.frames, shrunk.frames, strict=True):
        assert len(small.faces) == len(big.faces) == 1
        expected, found = big.faces[0].box, small.faces[0].box
        assert found.width == pytest.approx(expected.width, rel=0.1)
        assert (found.x, found.y) == pytest.approx((expected.x, expected.y), abs=0.05 * expected.width)


# --- uploads wait for a job slot before their bodies are read


def _post_stream(client, body: ReadWatcher, query: str = ""):
    headers = {"Content-Length": str(len(body.getbuffer()))}
    return client.post(VIDEO_API + query, input_stream=body, content_type="video/mp4", headers=headers)


def test_a_busy_server_refuses_a_video_before_reading_its_body(video_app, face_mp4):
    app = video_app(MAX_VIDEO_JOBS=1)
    jobs, client = app.extensions["video_jobs"], app.test_client()
    running = jobs.start()
    body = ReadWatcher(face_mp4)
    reply = _post_stream(client, body)
    assert reply.status_code == 503 and reply.json["error"]["code"] == "busy"
    assert reply.headers["Retry-After"] == "5" and body.bytes_read == 0
    jobs.finish(running, error=("internal_error", "ended by the test"))
    assert _post_stream(client, ReadWatcher(face_mp4), "?fps=1").status_code == 200


def test_an_upload_being_read_holds_the_only_slot_and_a_refused_one_gives_it_back(video_app, face_mp4):
    from webapp.video_jobs import JobsBusy

    app = video_app(MAX_VIDEO_JOBS=1)
    jobs, client = app.extensions["video_jobs"], app.test_client()
    refused = []

    def second_upload():
        with pytest.raises(JobsBusy):
            jobs.reserve()
        refused.append(True)

    # refused by the route after the body was read (bad fps): the slot must come back
    reply = _post_stream(client, ReadWatcher(face_mp4, on_first_read=second_upload), "?fps=0")
    assert reply.status_code == 400 and refused == [True]
    with jobs.reserve():  # free again
        pass
    # an undecodable upload becomes a failed job, which frees the slot too
    reply = client.post(VIDEO_API, data=b"not a video" * 100, content_type="video/mp4")
    assert reply.status_code == 415
    reply = _post_stream(client, ReadWatcher(face_mp4, on_first_read=second_upload), "?fps=1")
    assert reply.status_code == 200 and refused == [True, True]


def test_body_limits_read_a_slotted_path_only_in_a_slot():
    from webapp.body_limits import SLOT, BodyLimits
    from webapp.video_jobs import VideoJobs

    jobs, seen = VideoJobs(limit=1), []

    def app(environ, start_response):
        seen.append(environ.get(SLOT))
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    limits = BodyLimits(app, 1000, slots={VIDEO_API: jobs.reserve})

    def call(path, body):
        status = {}
        environ = {"PATH_INFO": path, "CONTENT_LENGTH": str(len(body.getbuffer())), "wsgi.input": body}
        reply = b"".join(limits(environ, lambda line, headers: status.update(line=line, headers=dict(headers))))
        return status["line"], status["headers"], reply

    assert call(VIDEO_API, io.BytesIO(b"v" * 10))[::2] == ("200 OK", b"v" * 10)
    assert seen[-1] is not None and not seen[-1].held  # given back once answered
    running = jobs.start()
    body = ReadWatcher(b"v" * 10)
    line, headers, reply = call(VIDEO_API, body)
    assert line.startswith("503") and headers["Retry-After"] == "5" and b'"busy"' in reply and body.bytes_read == 0
    assert call("/api/v1/analyze", io.BytesIO(b"i" * 10))[0] == "200 OK"  # other paths take no slot
    jobs.finish(running, error=("internal_error", "ended by the test"))
    assert call(VIDEO_API, io.BytesIO(b"v" * 10))[0] == "200 OK"


# --- finished results are serialised once, off the event loop


def test_a_finished_result_is_serialised_once_in_the_job_not_at_each_poll(client, face_mp4, monkeypatch):
    from webapp import video_routes
    from webapp.vision.video import VideoAnalysis

    blocking, serialised = [False], []

    def run_blocking(function, *args):  # stands for eventlet's native thread
        blocking[0] = True
        try:
            return function(*args)
        finally:
            blocking[0] = False

    def noting(method):
        def wrapper(self):
            serialised.append((method.__name__, blocking[0]))
            return method(self)

        return wrapper

    monkeypatch.setattr(video_routes, "run_blocking", run_blocking)
    monkeypatch.setattr(VideoAnalysis, "to_dict", noting(VideoAnalysis.to_dict))
    monkeypatch.setattr(VideoAnalysis, "to_csv", noting(VideoAnalysis.to_csv))
    url = client.post(VIDEO_API + "?async=1&fps=2", data=face_mp4, content_type="video/mp4").json["url"]
    deadline = time.monotonic() + 60
    while (state := client.get(url).json)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(3):
        reply = client.get(url)
        assert reply.json["state"] == "done" and len(reply.json["result"]["frames"]) == 4
        assert int(reply.headers["Content-Length"]) == len(reply.get_data())
        assert client.get(url + "?format=csv").get_data(as_text=True).count("\n") == 5
    assert sorted(serialised) == [("to_csv", True), ("to_dict", True)]
    assert state["result"] == client.post(VIDEO_API + "?fps=2", data=face_mp4, content_type="video/mp4").json | {
        "timings_ms": state["result"]["timings_ms"]
    }


def _with_display_matrix(mp4: bytes, a: int, b: int, c: int, d: int) -> bytes:
    """`mp4` with its video track's display matrix set to (a b; c d), as a phone writes it: the frames
    stay stored as filmed, players turn them."""
    import struct

    data = bytearray(mp4)
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0, "no track matrix found"
    data[at : at + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 0x40000000)
    return bytes(data)


@pytest.mark.parametrize(
    "matrix, stored_as, size",
    [
        ((0, 1, -1, 0), lambda up: np.rot90(up, 1), (640, 480)),  # shown a quarter turn clockwise: a phone held upright
        ((0, -1, 1, 0), lambda up: np.rot90(up, -1), (640, 480)),  # counterclockwise
        ((-1, 0, 0, -1), lambda up: np.rot90(up, 2), (480, 640)),  # upside down
        ((0, 0, 0, 0), lambda up: up, (480, 640)),  # a matrix with no angle: shown as stored
        ((-1, 0, 0, 1), lambda up: up[:, ::-1], (480, 640)),  # mirrored (a front camera): read as 180 degrees before
        ((1, 0, 0, -1), lambda up: up[::-1], (480, 640)),  # upside down by a mirror, not a turn
        ((0, 1, 1, 0), lambda up: up.swapaxes(0, 1), (640, 480)),  # a quarter turn and a mirror
    ],
    ids=["clockwise", "counterclockwise", "upside-down", "no-angle", "mirrored", "flipped", "turned-mirrored"],
)
def test_a_phone_video_is_analysed_upright_with_boxes_as_players_show_it(grace_rgb, app, matrix, stored_as, size):
    import cv2
    import numpy as np

    pipeline = app.extensions["pipelines"]["video"]
    portrait = np.full((640, 480, 3), 90, np.uint8)
    face = cv2.resize(grace_rgb, (400, round(400 * grace_rgb.shape[0] / grace_rgb.shape[1])))
    portrait[40 : 40 + face.shape[0], 40:440] = face
    # stored as the phone stored it: turned so that the display matrix turns it back upright
    stored = np.ascontiguousarray(stored_as(portrait))
    mp4 = _with_display_matrix(video_bytes(stored, seconds=1.0, size=size), *matrix)
    result = analyze_video(io.BytesIO(mp4), pipeline, fps=5)
    assert (result.info.width, result.info.height) == (480, 640)
    straight = analyze_video(io.BytesIO(video_bytes(portrait, seconds=1.0, size=(480, 640))), pipeline, fps=5)
    for turned, upright in zip(result.frames, straight.frames, strict=True):
        assert len(turned.faces) == 1
        box, expected = turned.faces[0].box, upright.faces[0].box
        # the same face in the same place, give or take where each video pasted it (at most 34 px apart)
        assert abs(box.x - expected.x) < 45 and abs(box.y - expected.y) < 45, (box, expected)
        assert turned.faces[0].emotion.label == upright.faces[0].emotion.label


def test_decoder_threads_hold_a_bounded_number_of_large_frames():
    # FFmpeg's own choice for ordinary frames; fewer threads as frames grow, so 16 cores do not hold 17 8K frames
    assert video.decoder_threads(640 * 480, cores=16) == 16  # FFmpeg's cap
    assert video.decoder_threads(640 * 480, cores=2) == 3
    assert video.decoder_threads(640 * 480, cores=1) == 1
    assert video.decoder_threads(3840 * 2160, cores=16) == 8
    assert video.decoder_threads(7680 * 4320, cores=16) == 2
    assert video.decoder_threads(40_000_000, cores=16) == 1


def test_sampled_fps_is_the_rate_analysed_not_the_rate_asked(client, grace_rgb):
    ten_fps = video_bytes(grace_rgb, seconds=1.0, fps=10)
    body = client.post("/api/v1/analyze-video?fps=30", data=ten_fps, content_type="video/mp4").json
    assert len(body["frames"]) == 10 and body["sampled_fps"] == 10
    assert client.post("/api/v1/analyze-video?fps=4", data=ten_fps, content_type="video/mp4").json["sampled_fps"] == 4


def test_synchronous_requests_leave_no_job_behind_to_crowd_out_polled_ones(video_app, face_mp4):
    app = video_app()
    client, jobs = app.test_client(), app.extensions["video_jobs"]
    url = client.post("/api/v1/analyze-video?async=1", data=face_mp4, content_type="video/mp4").json["url"]
    deadline = time.monotonic() + 60
    while client.get(url).json["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(jobs.keep + 1):
        assert client.post("/api/v1/analyze-video?fps=1", data=face_mp4, content_type="video/mp4").status_code == 200
    assert client.get(url).json["state"] == "done"
    assert len(jobs._jobs) == 1


def test_a_failed_jobs_csv_answers_its_error(client):
    url = client.post("/api/v1/analyze-video?async=1", data=bytes(range(256)) * 8, content_type="video/mp4").json["url"]
    deadline = time.monotonic() + 30
    while client.get(url).json["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = client.get(url + "?format=csv")
    assert failed.status_code == 415 and failed.json["error"]["code"] == "not_a_video"
    assert client.get(url + "?format=xml").json["error"]["code"] == "bad_parameter"


def test_a_video_forms_part_limit_names_the_video_field(client):
    fields = {f"f{i}": "x" for i in range(1100)}
    reply = client.post("/api/v1/analyze-video", data=fields, content_type="multipart/form-data")
    assert reply.status_code == 413 and "'video'" in reply.json["error"]["message"]


def _growing_mkv(small: int, large: int, large_frames: int) -> bytes:
    """An MKV whose headers declare `small`x`small` frames: 20 of them, then `large_frames` of `large`x`large`."""
    import fractions

    import av

    def h264(side: int, count: int) -> bytes:
        out = io.BytesIO()
        with av.open(out, mode="w", format="h264") as muxer:
            stream = muxer.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
            stream.options = {"preset": "ultrafast", "keyint": "1"}
            frame = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
            for i in range(count):
                frame.pts = i
                muxer.mux(stream.encode(frame))
            muxer.mux(stream.encode())
        return out.getvalue()

    source = av.open(io.BytesIO(h264(small, 20) + h264(large, large_frames)), format="h264")
    out = io.BytesIO()
    with source, av.open(out, mode="w", format="matroska") as muxer:
        stream = muxer.add_stream_from_template(source.streams.video[0])
        for i, packet in enumerate(p for p in source.demux(source.streams.video[0]) if p.size):
            packet.stream, packet.time_base, packet.pts, packet.dts = (
                stream,
                fractions.Fraction(1, 1000),
                i * 33,
                i * 33,
            )
            muxer.mux(packet)
    return out.getvalue()


def test_frames_that_grow_past_what_the_decoder_threads_may_hold_are_refused(monkeypatch):
    import av

    growing = _growing_mkv(64, 1024, 3)
    monkeypatch.setattr(video, "FRAME_THREADS_BUDGET", 4 * 1024 * 1024)  # 1024x1024 frames: 2 threads at most
    with av.open(io.BytesIO(growing)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", 3
        assert video.frame_threads_limit(stream) == 4 * 1024 * 1024 * 2 // 9
        with pytest.raises(VideoError) as caught:
            list(video.sampled_frames(container, stream, 30, 60))
    assert caught.value.code == "too_large" and "grow to 1024x1024 mid-stream, from the 64x64" in caught.value.message
    # one thread holds one frame: the same stream is decoded whole
    with av.open(io.BytesIO(growing)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        sizes = {frame.width for _, frame in video.sampled_frames(container, stream, 30, 60)}
    assert sizes == {64, 1024}


def test_a_video_over_max_pixels_is_refused_from_its_headers_without_decoding_a_frame(tmp_path):
    import subprocess
    import sys

    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as muxer:
        stream = muxer.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt, stream.options = 8192, 6144, "yuv420p", {"preset": "ultrafast"}
        frame = av.VideoFrame.from_ndarray(np.zeros((6144, 8192, 3), np.uint8), format="rgb24")
        for pts in range(3):  # FFmpeg's probe decodes frames of a stream of several
            frame.pts = pts
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode())
    (tmp_path / "8k.mp4").write_bytes(out.getvalue())
    # a fresh process, so the peak is this open's alone (the kernel's VmHWM: ru_maxrss outlives exec)
    script = f"""
import io, os
from tests.harness import rss_mb
from webapp.vision import video
data = open({str(tmp_path / "8k.mp4")!r}, "rb").read()
import av
before = rss_mb(os.getpid(), "VmHWM")
try:
    video.analyze_video(io.BytesIO(data), pipeline=None, max_pixels=40_000_000)
except video.VideoError as error:
    print(error.code, int(rss_mb(os.getpid(), "VmHWM") - before))
"""
    code, growth_mb = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    # decoding one 8192x6144 frame while probing took +119 MB
    assert code == "too_large" and int(growth_mb) < 60
