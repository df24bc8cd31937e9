"""Video files: the Flask-free core, the API (JSON, CSV, jobs), every bad input, the concurrency cap."""

from __future__ import annotations

import csv
import io
import threading
import time

import pytest

from tests.harness import SHIPPED_CLASSES, audio_only_bytes, video_bytes
from webapp.vision.video import VideoError, analyze_video


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


def test_analyze_video_samples_at_fps_and_tracks_the_face(face_mp4, app):
    progress = []
    result = analyze_video(io.BytesIO(face_mp4), app.extensions["pipelines"]["video"], fps=5, progress=progress.append)
    assert [frame.t for frame in result.frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8])
    assert all(len(frame.faces) == 1 for frame in result.frames)
    assert {frame.faces[0].track_id for frame in result.frames} == {1}  # one face, one track
    assert progress == sorted(progress) and progress[-1] > 0.85
    assert result.summary()["tracks"][0]["frames"] == 10


def test_analyze_video_stops_when_cancelled(face_mp4, app):
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    assert analyze_video(io.BytesIO(face_mp4), app.extensions["pipelines"]["video"], cancelled=cancelled) is None
    assert len(calls) == 3


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
    assert summary["dominant"] in SHIPPED_CLASSES and len(summary["tracks"]) == 1


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


def test_async_job_progress_result_csv_and_expiry(client, face_mp4):
    reply = client.post("/api/v1/analyze-video?async=1", data=face_mp4, content_type="video/mp4")
    assert reply.status_code == 202 and reply.json["state"] == "running"
    url = reply.json["url"]
    deadline = time.monotonic() + 60
    while (state := client.get(url).json)["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["state"] == "done" and state["progress"] == 1.0
    assert len(state["result"]["frames"]) == 10
    assert client.get(url + "?format=csv").mimetype == "text/csv"
    assert client.get("/api/v1/jobs/nope").json["error"]["code"] == "not_found"


def test_cancel_and_the_busy_cap(video_app, face_mp4):
    app = video_app(MAX_VIDEO_JOBS=1)
    client = app.test_client()
    gate = threading.Event()
    pipeline = app.extensions["pipelines"]["video"]
    original = pipeline.analyze

    def slow(rgb, *args):
        gate.wait(10)
        return original(rgb, *args)

    pipeline.analyze = slow
    try:
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
        # the slot is free again
        assert client.post("/api/v1/analyze-video?fps=1", data=face_mp4, content_type="video/mp4").status_code == 200
    finally:
        del pipeline.analyze


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
