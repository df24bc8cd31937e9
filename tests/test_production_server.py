"""The production mode of the Procfile: gunicorn with one eventlet worker, as a real process."""

from __future__ import annotations

import io
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.harness import jpeg_bytes


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
    # a big, smooth image: cheap to send, slow to decode (a PNG: a JPEG this size is decoded at 1/2 scale)
    gradient = np.linspace(0, 255, 6000, dtype=np.uint8)
    big = np.ascontiguousarray(np.broadcast_to(gradient[None, :, None], (4500, 6000, 3)))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, "PNG")
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


def test_concurrent_clients_are_all_served(server, webcam_frame):
    """Several clients at once: inference runs in native threads that contend for the model lock."""
    import socketio

    frame = jpeg_bytes(webcam_frame, quality=80)
    replies: list[dict] = []

    def stream():
        client = socketio.SimpleClient()
        client.connect(server, transports=["websocket"])
        try:
            for _ in range(8):
                replies.append(client.call("frame", frame, timeout=30))
        finally:
            client.disconnect()

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(replies) == 32
    assert all(len(reply.get("faces", [])) == 1 for reply in replies)


def test_a_stop_with_a_client_connected_ends_within_the_graceful_timeout():
    # gunicorn waits for open connections on TERM, and a WebSocket never ends on its own: without the
    # Procfile's --graceful-timeout an orchestrator's stop (10 s in Docker) would always end in SIGKILL
    import socketio

    from tests.harness import start_production_server, stop_production_server

    process, url = start_production_server()
    client = socketio.SimpleClient()
    try:
        client.connect(url, transports=["websocket"])
        started = time.monotonic()
        process.terminate()
        process.wait(9)  # raises TimeoutExpired past Docker's 10 s
        assert time.monotonic() - started < 9
    finally:
        client.disconnect()
        stop_production_server(process)


def test_the_docker_image_runs_the_procfiles_command():
    import json
    import re

    from deploy.procfile import PROCFILE, web_process

    dockerfile = (PROCFILE.parent / "deploy" / "Dockerfile").read_text()
    shell = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))[-1]
    env, command = web_process("0.0.0.0:${PORT}")
    assert shell == "exec " + " ".join(command[2:])
    assert all(f"ENV {name}={value}" in dockerfile for name, value in env.items())


def test_compose_builds_the_proxy_from_the_same_checkout_as_the_app():
    import re

    from deploy.procfile import PROCFILE

    deploy = PROCFILE.parent / "deploy"
    dockerfile, compose = (deploy / "Dockerfile").read_text(), (deploy / "docker-compose.yml").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", dockerfile, re.MULTILINE)
    assert stages[-1][0].startswith("python:")  # a plain `docker build` still makes the app
    proxy = dockerfile.split(" AS proxy")[1].split("\nFROM ")[0]
    assert "COPY static/ /srv/moodlens/static/" in proxy and "COPY deploy/moodlens.conf.template" in proxy
    nginx = compose.split("\n  nginx:\n")[1]
    assert "target: proxy" in nginx and "dockerfile: deploy/Dockerfile" in nginx
    assert "STATIC_ROOT: /srv/moodlens/static" in nginx and "../static" not in nginx  # no bind mount of a newer static/


def test_the_image_pins_every_serving_requirement_within_its_range():
    from packaging.requirements import Requirement

    from deploy.procfile import PROCFILE

    root = PROCFILE.parent
    pins = {}
    for line in (root / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    for file in ("requirements.txt", "requirements-live.txt"):
        for line in (root / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line or line.startswith("-r"):
                continue
            requirement = Requirement(line)
            pin = pins.get(requirement.name.lower())
            assert pin is not None and requirement.specifier.contains(pin), (requirement, pin)
    assert "pip install -c constraints.txt" in (root / "deploy" / "Dockerfile").read_text()


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("web: A=1 gunicorn --bind 0.0.0.0:${PORT:-5000} app  # a comment", ["gunicorn", "--bind", "H:1", "app"]),
        ("web: gunicorn --bind=0.0.0.0:$PORT app", ["gunicorn", "--bind=H:1", "app"]),
        ("web: gunicorn --log-level ${LEVEL:-info} --bind 0:$PORT app", None),
        ("web: exec gunicorn --bind 0:$PORT app", None),
        ("web: gunicorn -c gunicorn.conf.py app", None),
    ],
)
def test_the_procfile_is_read_or_refused_never_misread(tmp_path, monkeypatch, line, command):
    from deploy import procfile

    monkeypatch.setattr(procfile, "PROCFILE", tmp_path / "Procfile")
    procfile.PROCFILE.write_text(line + "\n")
    if command is None:
        with pytest.raises(ValueError, match="not 'gunicorn"):
            procfile.web_process("H:1")
    else:
        assert procfile.web_process("H:1")[1][2:] == command
