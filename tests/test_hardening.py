"""Hardening of the app itself (Flask and Socket.IO test clients): decode budget, reserved events,
headers, body limits, session cap, log flood limiting."""

from __future__ import annotations

import io
import json
import logging
import time
import types

import numpy as np
import pytest
from PIL import Image

from tests.harness import jpeg_bytes, png_16bit_rgba, twin_app, webcam_face_box
from webapp.body_limits import BodyLimits, BodyTimeout
from webapp.log_limit import RepeatLimiter
from webapp.sessions import SessionCap
from webapp.vision.budget import MB, BusyError, DecodeLimits, HeavySlots
from webapp.vision.imaging import ImageError, decode_image, open_image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# --- decode budget ---------------------------------------------------------------------------


def test_16bit_rgba_png_is_refused_by_decoded_bytes_before_decoding():
    data = png_16bit_rgba(8000, 5000)  # 40 MP, under MAX_PIXELS; 320 MB as declared
    assert len(data) < 500_000
    start = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        open_image(data, DecodeLimits(max_pixels=40_000_000, max_bytes=100 * MB))
    assert caught.value.code == "too_large" and "MB" in caught.value.message
    assert time.perf_counter() - start < 0.5


def test_decoded_bytes_count_16_bit_samples_twice():
    assert open_image(png_16bit_rgba(100, 50), DecodeLimits()).decoded_bytes == 100 * 50 * 4 * 2
    assert open_image(encode(Image.new("L", (100, 50)), "PNG"), DecodeLimits()).decoded_bytes == 100 * 50 * 3


def test_16bit_grey_png_becomes_8bit_not_white():
    grey = np.full((20, 30), 0x8000, np.uint16)
    rgb = decode_image(encode(Image.fromarray(grey), "PNG"), 10**6)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3)
    assert 120 <= int(rgb[0, 0, 0]) <= 136


def test_16bit_rgba_png_decodes_within_budget():
    rgb = decode_image(png_16bit_rgba(64, 32), 10**6)
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0x12, 0x56, 0x9A)


def test_large_jpeg_is_decoded_at_reduced_scale():
    data = jpeg_bytes(np.zeros((3000, 5000, 3), np.uint8))
    opened = open_image(data, DecodeLimits(draft_side=2048))
    assert (opened.width, opened.height) == (5000, 3000)
    assert opened.image.size == (2500, 1500)  # 1/2 scale: the smallest that keeps 2048 px
    assert opened.decoded_bytes == 2500 * 1500 * 3


@pytest.mark.parametrize("mode", ["RGB", "P", "L"])
def test_large_png_is_reduced_after_decoding(mode):
    image = Image.new(mode, (5000, 300))
    rgb = decode_image(encode(image, "PNG"), 40_000_000, DecodeLimits(draft_side=2048))
    assert rgb.shape == (150, 2500, 3)  # 1/2: the smallest that keeps 2048 px


def test_reduced_scale_analysis_reports_full_size_boxes(client, webcam_frame):
    big = np.asarray(Image.fromarray(webcam_frame).resize((2560, 1920)))  # x4: decoded at 1/2
    body = client.post("/api/v1/analyze", data=jpeg_bytes(big), content_type="image/jpeg").get_json()
    assert (body["width"], body["height"]) == (2560, 1920)
    assert len(body["faces"]) == 1
    x, y, w, h = (4 * v for v in webcam_face_box())
    box = body["faces"][0]["box"]
    assert abs(box["x"] - x) < 0.15 * w and abs(box["y"] - y) < 0.25 * h and abs(box["width"] - w) < 0.3 * w


def test_heavy_slots_cap_large_analyses_only():
    slots = HeavySlots(limit=1, threshold_bytes=1000)
    with slots.hold(5000):
        with pytest.raises(BusyError), slots.hold(5000):
            pass
        with slots.hold(10):  # small images never wait
            pass
    with slots.hold(5000):  # the slot came back
        assert slots.in_use == 1
    assert slots.in_use == 0


def test_busy_is_a_503_with_retry_after(app, client, grace_jpeg, monkeypatch):
    monkeypatch.setattr(app.extensions["pipelines"]["image"], "heavy_slots", HeavySlots(limit=0, threshold_bytes=0))
    reply = client.post("/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg")
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "1"
    assert reply.get_json()["error"]["code"] == "busy"


# --- reserved events, frame arguments ----------------------------------------------------------


def test_reserved_event_names_cannot_reset_the_flood_limits(app, socket_client, webcam_frame):
    tiny = jpeg_bytes(webcam_frame[:8, :8])
    analysed = 0
    start = time.monotonic()
    for i in range(300):
        spoof = socket_client.emit("disconnect" if i % 2 else "connect", callback=True)
        assert spoof["error"]["code"] == "reserved_event"
        reply = socket_client.emit("frame", tiny, callback=True)
        analysed += "error" not in reply
    assert socket_client.is_connected()
    # at most MAX_FPS_PER_CLIENT per second of the flood
    assert analysed <= app.config["MAX_FPS_PER_CLIENT"] * (1 + int(time.monotonic() - start))


def test_frame_with_extra_arguments_is_analysed(socket_client, webcam_frame):
    reply = socket_client.emit("frame", jpeg_bytes(webcam_frame), "extra", {"x": 1}, callback=True)
    assert len(reply["faces"]) == 1


def test_state_lives_from_the_real_connect_to_the_real_disconnect(app):
    from webapp import events, socketio_of

    before = len(events._clients)
    client = socketio_of(app).test_client(app)
    assert len(events._clients) == before + 1
    client.emit("disconnect", callback=True)  # the spoof changes nothing
    assert len(events._clients) == before + 1
    client.disconnect()
    assert len(events._clients) == before


# --- headers and HTTP errors -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/upload", "/video", "/healthz", "/api/v1/nope", "/static/js/live.js"])
def test_security_headers_everywhere(client, path):
    with client.get(path) as reply:
        csp = reply.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["Referrer-Policy"] and "camera=(self)" in reply.headers["Permissions-Policy"]


def test_pages_have_no_inline_scripts_or_styles(client):
    for path in ("/", "/upload", "/video"):
        html = client.get(path).get_data(as_text=True)
        assert "<style" not in html and " style=" not in html
        assert all("src=" in tag.split(">")[0] for tag in html.split("<script")[1:])


def test_405_names_the_allowed_methods(client):
    reply = client.get("/api/v1/analyze")
    assert reply.status_code == 405 and "POST" in reply.headers["Allow"]
    assert reply.get_json()["error"]["code"] == "method_not_allowed"


def test_too_many_form_parts_names_the_part_limit(client):
    fields = {f"f{i}": "x" for i in range(1100)}
    reply = client.post("/api/v1/analyze", data=fields, content_type="multipart/form-data")
    assert reply.status_code == 413
    message = reply.get_json()["error"]["message"]
    assert "parts" in message and "MB" not in message


# --- body limits (the middleware alone; the deadline against gunicorn is in test_abuse.py) ------


def call(middleware, environ) -> tuple[str, bytes, dict]:
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(middleware(environ, start_response))
    return seen["status"], body, seen["headers"]


def echo_app(environ, start_response):
    data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [])
    return [data]


def test_chunked_body_over_the_limit_is_refused():
    environ = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"x" * 2000)}
    status, body, _ = call(BodyLimits(echo_app, max_bytes=1000), environ)
    assert status.startswith("413") and b"too_large" in body


def test_a_body_cut_short_is_refused_not_passed_on():
    # a client that goes away mid-upload: the server's reader stops early instead of raising
    environ = {"CONTENT_LENGTH": "900", "wsgi.input": io.BytesIO(b"x" * 100)}
    status, body, _ = call(BodyLimits(echo_app, max_bytes=1000), environ)
    assert status.startswith("400") and json.loads(body)["error"]["code"] == "incomplete_body"
    assert b"100 of its 900" in body


def test_chunked_body_within_the_limit_reaches_the_app_whole():
    environ = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"y" * 900)}
    status, body, _ = call(BodyLimits(echo_app, max_bytes=1000), environ)
    assert status.startswith("200") and body == b"y" * 900


def test_body_past_its_deadline_gets_408_and_close():
    class Stalled(io.RawIOBase):
        def read(self, n=-1):
            raise BodyTimeout("stalled")

    environ = {"CONTENT_LENGTH": "500", "wsgi.input": Stalled()}
    status, body, headers = call(BodyLimits(echo_app, max_bytes=1000), environ)
    assert status.startswith("408") and headers["Connection"] == "close" and b"timeout" in body
    # answered before Flask, with the app's security headers all the same
    assert headers["X-Content-Type-Options"] == "nosniff" and "frame-ancestors" in headers["Content-Security-Policy"]


def test_socketio_packets_over_their_bounds():
    from socketio import packet

    from webapp.socket_packets import MAX_TEXT_CHARS, BoundedPacket

    # a frame declaring more attachments than one goes to its handler at once, without them
    declared = BoundedPacket(encoded_packet='59999999-7["frame",{"_placeholder":true,"num":0}]')
    assert (declared.packet_type, declared.attachment_count, declared.id) == (packet.EVENT, 0, 7)
    assert BoundedPacket(encoded_packet='51-["frame",{"_placeholder":true,"num":0}]').attachment_count == 1
    # other packet types are left as they are: a DISCONNECT stays one
    assert BoundedPacket(encoded_packet="12-").packet_type == packet.DISCONNECT
    with pytest.raises(ValueError, match="characters"):
        BoundedPacket(encoded_packet='42["frame",[' + "[]," * MAX_TEXT_CHARS + "0]]")
    # none declared: python-socketio took the next message as its attachment and refused every one after
    assert BoundedPacket(encoded_packet='50-1["frame",{"_placeholder":true,"num":0}]').packet_type == packet.EVENT


@pytest.mark.parametrize(
    "placeholder",
    [
        '{"_placeholder":true,"num":3}',  # no such attachment
        '{"_placeholder":true,"num":"a"}',
        "[" * 550 + '{"_placeholder":true,"num":0}' + "]" * 550,  # deeper than the rebuild recurses
    ],
)
def test_a_binary_frame_whose_placeholder_points_nowhere_is_handed_on_not_left_waiting(placeholder):
    from socketio import packet

    from webapp.socket_packets import BoundedPacket

    frame = BoundedPacket(encoded_packet=f'51-1["frame",{placeholder}]')
    assert frame.packet_type == packet.BINARY_EVENT and frame.attachment_count == 1
    # complete (python-socketio then hands it to the handler, which refuses a placeholder as a frame);
    # raising here left the connection waiting for an attachment, its later messages all refused
    assert frame.add_attachment(b"\xff\xd8jpeg") is True
    assert frame.data[0] == "frame" and not isinstance(frame.data[1], bytes)
    good = BoundedPacket(encoded_packet='51-2["frame",{"_placeholder":true,"num":0}]')
    assert good.add_attachment(b"jpeg") is True and good.data == ["frame", b"jpeg"]


def test_a_body_slower_than_the_minimum_rate_gets_408_once_behind(monkeypatch):
    from contextlib import contextmanager

    from webapp.body_limits import MinimumRate

    clock = [0.0]
    # body_limits' own clock only: the process's time.monotonic stays real for other threads
    monkeypatch.setattr("webapp.body_limits.time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    allowed = []

    @contextmanager
    def timeout(seconds, message):  # stands for the green timeout: a read given no time is late
        allowed.append(seconds)
        if seconds <= 0:
            raise BodyTimeout(message)
        yield

    class Trickle(io.RawIOBase):
        def read(self, n=-1):  # 100 bytes a second, whatever is asked
            clock[0] += 1.0
            return b"t" * 100

    rate = MinimumRate(1024, timeout, grace_s=5.0, max_idle_s=100.0)
    limits = BodyLimits(echo_app, max_bytes=10**6, min_rate=rate)
    status, body, _ = call(limits, {"CONTENT_LENGTH": "100000", "wsgi.input": Trickle()})
    assert status.startswith("408") and b"slower than 1 KB/s" in body
    # the grace and one 64 KB read at 1 KB/s: 69 s for the first read, less and less after it
    assert allowed[0] == 5 + 65536 / 1024 and allowed == sorted(allowed, reverse=True)
    status, body, _ = call(limits, {"CONTENT_LENGTH": "3000", "wsgi.input": io.BytesIO(b"f" * 3000)})
    assert status.startswith("200") and body == b"f" * 3000
    # 12 MB sent at once banks no more than max_idle_s for the next read (it bought three minutes)
    with MinimumRate(64 * 1024, timeout).next_read(started=0.0, size=12 * 2**20, chunk=65536):
        assert allowed[-1] == 10.0


def test_chunked_upload_over_max_upload_mb_is_413_through_the_app(app):
    limits = BodyLimits(app.wsgi_app.app if isinstance(app.wsgi_app, BodyLimits) else app.wsgi_app, 10 * MB)
    big = b"\xff\xd8" + b"\x00" * (3 * MB)  # MAX_UPLOAD_MB is 2 in the test app
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/analyze",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "image/jpeg",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(big),
        "wsgi.errors": io.StringIO(),
    }
    status, body, _ = call(limits, environ)
    assert status.startswith("413") and b"too_large" in body


# --- sessions and logs ------------------------------------------------------------------------


def test_session_cap_refuses_handshakes_over_the_limit():
    from types import SimpleNamespace

    server = SimpleNamespace(environ={str(i): {"REMOTE_ADDR": "10.0.0.1"} for i in range(3)})
    cap = SessionCap(echo_app, server, limit=3)
    handshake = {"PATH_INFO": "/socket.io/", "QUERY_STRING": "EIO=4&transport=polling", "REMOTE_ADDR": "10.0.0.1"}
    status, body, headers = call(cap, dict(handshake, **{"wsgi.input": io.BytesIO()}))
    assert status.startswith("429") and b"too_many_sessions" in body and headers["Retry-After"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    other = dict(handshake, REMOTE_ADDR="10.0.0.2", **{"wsgi.input": io.BytesIO()})
    assert call(cap, other)[0].startswith("200")
    polling = dict(handshake, QUERY_STRING="EIO=4&transport=polling&sid=abc", **{"wsgi.input": io.BytesIO()})
    assert call(cap, polling)[0].startswith("200")  # an open session's own requests pass
    # Engine.IO opens a session on any path under /socket.io/: each is a handshake too
    for path in ("/socket.io/x/", "/socket.io/y", "/socket.io"):
        elsewhere = dict(handshake, PATH_INFO=path, **{"wsgi.input": io.BytesIO()})
        assert call(cap, elsewhere)[0].startswith("429"), path
    page = dict(handshake, PATH_INFO="/socket.iox", **{"wsgi.input": io.BytesIO()})
    assert call(cap, page)[0].startswith("200")


def test_behind_a_trusted_proxy_the_cap_counts_forwarded_clients(model_path):
    """Behind nginx every client has the proxy's address; TRUSTED_PROXIES takes X-Forwarded-For instead."""
    from werkzeug.test import Client

    from webapp import create_app

    def handshake(client, forwarded_for):
        headers = {"X-Forwarded-For": forwarded_for}
        return client.get(
            "/socket.io/?EIO=4&transport=polling", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
        )

    for proxies, second_client_status in ((1, 200), (0, 429)):
        app = create_app({"TESTING": True, "MAX_SESSIONS_PER_ADDRESS": 1, "TRUSTED_PROXIES": proxies})
        client = Client(app)
        with handshake(client, "203.0.113.1") as first:
            assert first.status_code == 200
        with handshake(client, "203.0.113.2") as second:
            assert second.status_code == second_client_status


def test_repeat_limiter_logs_one_line_with_a_count():
    now = [0.0]
    limiter = RepeatLimiter(interval_s=10, clock=lambda: now[0])
    logger = logging.getLogger("tests.flood")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.addFilter(limiter)
    logger.propagate = False
    try:
        for _ in range(500):
            try:
                raise ValueError("bad packet")
            except ValueError:
                logger.exception("message handler error")
        now[0] = 11.0
        try:
            raise ValueError("bad packet")
        except ValueError:
            logger.exception("message handler error")
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(limiter)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "Traceback" not in stream.getvalue()
    assert "ValueError: bad packet" in lines[0] and "499 more like this" in lines[1]


# --- Socket.IO origins -----------------------------------------------------------------------


def handshake_status(app, origin: str, **headers) -> int:
    reply = app.test_client().get("/socket.io/?EIO=4&transport=polling", headers={"Origin": origin, **headers})
    return reply.status_code


def test_cors_origins_are_a_list_of_several(app, monkeypatch):
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    listed = twin_app(app, keep_config=False)
    assert listed.config["CORS_ALLOWED_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert handshake_status(listed, "https://b.example") == 200
    assert handshake_status(listed, "https://a.example") == 200
    assert handshake_status(listed, "https://c.example") == 400
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "*")
    assert handshake_status(twin_app(app, keep_config=False), "https://c.example") == 200


def test_same_origin_behind_a_tls_proxy_follows_x_forwarded_proto(app):
    # what deploy/'s nginx relies on when a balancer in front ends TLS (Engine.IO reads the header itself)
    proxied = twin_app(app)
    host = {"Host": "moodlens.example"}
    assert handshake_status(proxied, "https://moodlens.example", **host, **{"X-Forwarded-Proto": "https"}) == 200
    assert handshake_status(proxied, "https://moodlens.example", **host, **{"X-Forwarded-Proto": "http"}) == 400
