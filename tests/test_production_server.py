"""The production mode of the Procfile: gunicorn with one eventlet worker, as a real process."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, jpeg_bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--worker-class", "eventlet", "--workers", "1", "--bind", f"127.0.0.1:{port}", "webapp.wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited: {process.stdout.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("gunicorn did not become ready in 120 s")
    yield url
    process.terminate()
    process.wait(10)


def post_image(url: str, data: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url + "/api/v1/analyze", data=data, headers={"Content-Type": "image/jpeg"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_socketio_frames_under_eventlet(server, webcam_frame):
    import socketio

    client = socketio.SimpleClient()
    client.connect(server, transports=["websocket"])
    try:
        reply = client.call("frame", jpeg_bytes(webcam_frame), timeout=30)
        assert len(reply["faces"]) == 1
        assert client.call("frame", "not bytes", timeout=30)["error"]["code"] == "bad_payload"
    finally:
        client.disconnect()


def test_inference_does_not_block_the_event_loop(server):
    # a big, smooth photo: cheap to send, slow to decode and analyse
    gradient = np.linspace(0, 255, 6000, dtype=np.uint8)
    big = np.ascontiguousarray(np.broadcast_to(gradient[None, :, None], (4500, 6000, 3)))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "JPEG", quality=70)
    data = buffer.getvalue()

    done = threading.Event()
    result = {}

    def analyse():
        start = time.perf_counter()
        result["status"], _ = post_image(server, data)
        result["seconds"] = time.perf_counter() - start
        done.set()

    worker = threading.Thread(target=analyse)
    worker.start()
    time.sleep(0.05)
    health_latencies = []
    while not done.is_set():
        start = time.perf_counter()
        urllib.request.urlopen(server + "/healthz", timeout=30).read()
        health_latencies.append(time.perf_counter() - start)
        time.sleep(0.01)
    worker.join()
    assert result["status"] == 200
    assert result["seconds"] > 0.2, "the analysis was too quick to tell"
    assert len(health_latencies) >= 3
    # a blocked event loop would hold /healthz for the whole analysis
    assert max(health_latencies) < result["seconds"] / 2, (max(health_latencies), result["seconds"])


def test_bad_input_does_not_take_the_server_down(server, grace_jpeg):
    assert post_image(server, b"garbage")[0] == 400
    assert post_image(server, b"")[0] == 400
    assert post_image(server, grace_jpeg)[0] == 200
