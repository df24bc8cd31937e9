"""The issue-11 attacks, bounded, against the Procfile's server (gunicorn, one eventlet worker) on loopback.

The full-size runs, and the figures for each hardening step, are `python -m bench.abuse_bench`.
"""

from __future__ import annotations

import socket

import pytest

from tests import abuse
from tests.harness import (
    png_16bit_rgba,
    png_with_text,
    start_production_server,
    stop_production_server,
    video_bytes,
    worker_pid,
)

BODY_TIMEOUT_S = 3  # the default is 15; a short one keeps the test short


@pytest.fixture(scope="module")
def server():
    try:
        process, url = start_production_server(env={"BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "MAX_UPLOAD_MB": "1"})
    except RuntimeError as error:
        pytest.fail(str(error))
    yield process, url
    stop_production_server(process)


def test_declared_16bit_pngs_do_not_take_the_memory(server):
    process, url = server
    result = abuse.memory_attack(url, worker_pid(process), png_16bit_rgba(8000, 5000), count=30, at_once=10)
    assert result["all_json"], result
    assert result["statuses"] == {413: 30}, result
    assert result["peak_mb"] <= result["baseline_mb"] + 1024, result
    assert result["after_mb"] <= result["baseline_mb"] + 300, result
    assert result["healthz_worst_ms"] <= 100, result


def test_png_text_chunks_do_not_take_the_memory(server):
    process, url = server
    # 63 MB of zTXt each (Pillow's own cap is 64 MB) in a 70 KB file: before, 20 at once took +1 GB
    result = abuse.memory_attack(url, worker_pid(process), png_with_text(63, 1_000_000), count=20, at_once=10)
    assert result["all_json"] and result["statuses"] == {413: 20}, result
    assert result["peak_mb"] <= result["baseline_mb"] + 100, result
    assert result["healthz_worst_ms"] <= 100, result


def test_large_images_within_the_budget_are_capped(server):
    process, url = server
    # 60 MB declared each: under MAX_DECODE_MB, over HEAVY_DECODE_MB
    result = abuse.memory_attack(url, worker_pid(process), png_16bit_rgba(3000, 2500), count=10, at_once=5)
    assert result["all_json"] and result["retry_after"], result
    assert set(result["statuses"]) <= {200, 503} and result["statuses"].get(200), result
    assert result["peak_mb"] <= result["baseline_mb"] + 1024, result
    assert result["after_mb"] <= result["baseline_mb"] + 300, result


def test_stalled_bodies_are_dropped(server):
    _, url = server
    result = abuse.stalled_bodies(url, connections=300, limit_s=30)
    assert result["dropped"] == 300 and result["last_dropped_s"] <= 30, result
    assert result["fresh_client_status"] == 400, result
    assert result["healthz_worst_ms"] <= 100, result


def test_chunked_body_over_the_limit_is_refused(server):
    _, url = server
    host, port = abuse._loopback(url)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"\x00" * 65536
        try:
            for _ in range(40):  # 2.5 MB; the limit is about 1 MB
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server may answer and close before all is sent
            pass
        reply = b""
        while b'"too_large"' not in reply and (part := sock.recv(65536)):
            reply += part
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"too_large"' in reply


def test_a_trickled_video_body_gives_the_one_video_slot_back_soon(server, grace_rgb):
    _, url = server
    result = abuse.trickled_video(url, video_bytes(grace_rgb, seconds=1.0), declared=1_000_000, limit_s=60)
    # before: dropped by the 120-180 s body deadline only, the other upload refused busy all along
    assert result["reply"].startswith(b"HTTP/1.1 408"), result
    assert result["dropped_s"] <= 5 + 65536 / (64 * 1024) + 3, result  # grace + one read at MIN_BODY_KBPS
    assert result["other_served_s"] is not None and result["other_served_s"] <= result["dropped_s"] + 5, result


def test_reset_trick_no_longer_lifts_the_limits(server):
    _, url = server
    result = abuse.reset_trick(url, frames=300)
    assert result["analysed"] <= 60, result
    assert result["healthz_worst_ms"] <= 100, result


def test_malformed_packets_do_not_flood_the_log(server):
    process, url = server
    result = abuse.log_flood(url, process.log, packets=1000)
    # before: a traceback each, 1.27 MB of log for these 5.8 KB
    assert result["log_bytes"] < result["bytes_sent"], result
    assert result["healthz_worst_ms"] <= 100, result


def test_socketio_packets_built_to_eat_memory_are_refused(server):
    process, url = server
    result = abuse.packet_attack(url, worker_pid(process), attachments_mb=100, wide_json_kb=1300)
    # before: the 100 MB of attachments were all kept (+1.3 GB for 200), and the JSON took ~26x its size
    assert result["attachments_ack"]["error"]["code"] == "bad_payload", result
    assert result["peak_growth_mb"] <= 60, result
    assert "faces" in result["frame_after"], result  # the connection still serves its frames
    assert result["healthz_worst_ms"] <= 100, result


def test_engineio_session_flood_is_capped(server):
    # last: the sessions it opens hold this address's cap until they expire (~15 s)
    process, url = server
    result = abuse.session_flood(url, worker_pid(process), seconds=3, max_requests=3000)
    assert result["statuses"].get(429), result
    assert result["statuses"].get(200, 0) <= 20, result
    assert result["rss_growth_mb"] <= 20, result
    assert result["healthz_worst_ms"] <= 100, result


def test_a_flood_of_group_photos_leaves_the_live_stream_answered():
    from tests.harness import jpeg_bytes
    from tests.scenes import group_photo

    # a server of its own: the module's has its address's Socket.IO sessions used up by the session flood
    process, url = start_production_server()
    try:
        photo = jpeg_bytes(group_photo()[0])  # tiled: the dearest photo analysis per byte
        result = abuse.photo_flood(url, photo, uploaders=2, seconds=4)  # raises if a live frame goes unanswered
    finally:
        stop_production_server(process)
    assert set(result["statuses"]) == {200}, result
    assert result["photos_per_s"] > 0, result
