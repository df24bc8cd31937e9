"""Scale-out on loopback: redis-server, 2 instances and nginx (deploy/cluster.py), as deployed.

Needs Debian's nginx and redis-server (.ci/run installs them); skipped, saying so, without them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy.cluster import Cluster, _children, free_port, missing_tools, port_in_use
from tests.harness import CHROMIUM, CHROMIUM_ARGS, jpeg_bytes, write_y4m

pytestmark = [
    pytest.mark.scale,
    pytest.mark.skipif(
        bool(missing_tools()),
        reason=f"not installed: {', '.join(missing_tools())} (apt-get install nginx redis-server)",
    ),
]
FAILOVER_S = 5
ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 4


@pytest.fixture(scope="module")
def cluster():
    with Cluster(instances=2) as running:
        yield running


def instance_behind(url: str) -> str:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as reply:
        return json.load(reply)["instance"]


def browser_like_client():
    """A Socket.IO client that reconnects as the live page does (socket.js: WebSocket only, at most 2 s apart)."""
    import socketio

    return socketio.Client(reconnection=True, reconnection_delay=1, reconnection_delay_max=2)


def test_an_emit_reaches_a_client_on_the_other_instance_through_redis(cluster):
    import socketio
    from flask_socketio import SocketIO

    received = {0: threading.Event(), 1: threading.Event()}
    clients = []
    for index in (0, 1):
        client = socketio.Client(reconnection=False)
        client.on("notice", lambda data, index=index: received[index].set() if data == {"from": "redis"} else None)
        client.connect(cluster.instance_url(index), transports=["websocket"])
        clients.append(client)
    assert {instance_behind(cluster.instance_url(i)) for i in (0, 1)} == {"instance-0", "instance-1"}
    try:
        # an emit as any instance's `socketio.emit` makes it: published on the queue, delivered by the
        # instance that holds the connection (Flask-SocketIO's write-only form, as an outside process uses it)
        SocketIO(message_queue=cluster.message_queue, async_mode="threading").emit("notice", {"from": "redis"})
        assert received[0].wait(5) and received[1].wait(5), "an emit through redis did not reach both instances"
    finally:
        for client in clients:
            client.disconnect()


def post(url: str, body: bytes) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers.get_content_type(), json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), json.load(error)


def test_nginx_refuses_an_oversized_photo_in_json_and_passes_a_large_video_on(cluster):
    twelve_mb = b"\0" * (12 * 2**20)
    # over the photo limit: nginx answers, in the API's error shape, not with its HTML page
    assert post(cluster.url + "/api/v1/analyze", twelve_mb)[:2] == (413, "application/json")
    assert post(cluster.url + "/api/v1/analyze", twelve_mb)[2]["error"]["code"] == "too_large"
    # under the video limit: past nginx, the app judges it (not a video; or no video support installed)
    status, content_type, body = post(cluster.url + "/api/v1/analyze-video", twelve_mb)
    assert content_type == "application/json" and body["error"]["code"] in ("not_a_video", "video_unavailable"), (
        status,
        body,
    )


def test_nginx_takes_two_videos_at_once_from_one_address_and_refuses_a_third_in_json(cluster):
    host, port = cluster.url.removeprefix("http://").split(":")
    uploads = []
    try:
        for _ in range(2):  # two uploads under way: headers and the first bytes of a 50 MB body
            upload = socket.create_connection((host, int(port)), timeout=10)
            upload.sendall(
                b"POST /api/v1/analyze-video HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"
                b"Content-Length: 52428800\r\n\r\n" + b"\0" * 65536
            )
            uploads.append(upload)
        time.sleep(0.5)  # nginx has both in its body-reading phase
        status, content_type, body = post(cluster.url + "/api/v1/analyze-video", b"\0" * 1024)
        assert (status, content_type, body["error"]["code"]) == (429, "application/json", "too_many_uploads")
    finally:
        for upload in uploads:
            upload.close()
    time.sleep(0.5)
    assert post(cluster.url + "/api/v1/analyze-video", b"\0" * 1024)[0] != 429  # a slot is free once they end


def test_clients_fail_over_to_the_other_instance_within_5_s(cluster, webcam_frame):
    import socketio

    frame = jpeg_bytes(webcam_frame, quality=80)
    stop = threading.Event()
    records: list[list[tuple[float, str]]] = [[] for _ in range(CLIENTS)]

    def stream(index: int) -> None:
        client = browser_like_client()
        client.connect(cluster.url, transports=["websocket"])
        try:
            while not stop.is_set():
                try:
                    # the page's ack timeout is 5 s; socket.io-client fails pending acks at once on a disconnect,
                    # which the Python client does not, so a shorter timeout stands in for that
                    reply = client.call("frame", frame, timeout=2)
                    records[index].append((time.monotonic(), "ok" if reply.get("faces") else json.dumps(reply)))
                except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                    records[index].append((time.monotonic(), "down"))
                    time.sleep(0.1)
        finally:
            client.disconnect()

    victim = instance_behind(cluster.url)  # all clients share 127.0.0.1, so one sticky instance has them all
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    killed_at = time.monotonic()
    cluster.kill_instance(int(victim.rpartition("-")[2]))
    time.sleep(FAILOVER_S + 3)
    stop.set()
    for thread in threads:
        thread.join(30)

    assert instance_behind(cluster.url) != victim
    for index, record in enumerate(records):
        before = [what for when, what in record if when < killed_at]
        after = [(when, what) for when, what in record if when >= killed_at]
        assert before and set(before) == {"ok"}, f"client {index} before the kill: {before}"
        downs = [when for when, what in after if what == "down"]
        assert downs, f"client {index} never noticed the kill: was it on {victim}?"
        # a reply already on its way when the instance died may land just after the kill: resuming is the
        # first ack after the last failure
        resumed = [when for when, what in after if what == "ok" and when > downs[-1]]
        assert resumed, f"client {index} never got an ack after the kill: {after[:10]}"
        assert resumed[0] - killed_at <= FAILOVER_S, f"client {index} resumed after {resumed[0] - killed_at:.1f} s"
        # the only failures allowed are the reconnect itself: no error replies
        assert {what for _, what in after} <= {"ok", "down"}, f"client {index}: {after}"


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_live_page_shows_reconnecting_then_resumes(tmp_path, webcam_frame):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    video = write_y4m(tmp_path / "face.y4m", webcam_frame)
    with Cluster(instances=2) as fresh, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"]
        )
        try:
            page = browser.new_page()
            page.goto(fresh.url + "/")
            page.click("#toggle")
            page.wait_for_function("() => window.moodlens.stats.answered >= 10", timeout=60_000)
            # every status text the page shows from here on
            page.evaluate(
                """() => { window.statusSeen = [];
                new MutationObserver(() => window.statusSeen.push(document.getElementById('status').textContent))
                  .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true}); }"""
            )
            # whether the boxes were taken off the video while the page had no server
            page.evaluate(
                """() => { window.clearedWhileDown = false; setInterval(() => {
                  if (document.getElementById('status').textContent === 'reconnecting…'
                      && window.moodlens.stats.lastReply === null) window.clearedWhileDown = true; }, 10); }"""
            )
            answered = page.evaluate("window.moodlens.stats.answered")
            ids_before = page.evaluate("window.moodlens.stats.lastReply.faces.map(f => f.id)")
            fresh.kill_instance(int(instance_behind(fresh.url).rpartition("-")[2]))
            killed_at = time.monotonic()
            page.wait_for_function(
                f"() => window.moodlens.stats.answered >= {answered + 10}", timeout=FAILOVER_S * 1000
            )
            resumed_after = time.monotonic() - killed_at
            seen = page.evaluate("window.statusSeen")
            cleared = page.evaluate("window.clearedWhileDown")
            ids_after = page.evaluate("window.moodlens.stats.lastReply.faces.map(f => f.id)")
        finally:
            browser.close()
    assert any("reconnecting" in text for text in seen), seen
    assert resumed_after <= FAILOVER_S, resumed_after
    assert cleared, "the last boxes stayed on the video while the server was gone"
    # the new instance's tracker counts from 1 again; the page keeps ids apart from the old connection's,
    # so the same face now is not taken for whoever had its number before
    assert ids_before and ids_after and min(ids_after) > max(ids_before), (ids_before, ids_after)


def test_a_tls_balancer_in_front_of_nginx_keeps_its_scheme(cluster):
    # the balancer ends TLS and talks http to nginx: the page's https origin must still be its own
    host = cluster.url.removeprefix("http://")

    def handshake(proto: str | None) -> int:
        headers = {"Origin": f"https://{host}", **({"X-Forwarded-Proto": proto} if proto else {})}
        request = urllib.request.Request(cluster.url + "/socket.io/?EIO=4&transport=polling", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code

    assert handshake("https") == 200
    assert handshake(None) == 400  # a plain-http request from an https page is cross-origin


def _cluster_command(port: int, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "deploy.cluster", "--instances", "1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for child in _children(parent):
            found.add(child)
            frontier.append(child)
    return found


def _runtime_folders() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("moodlens-cluster-")}


def _wait_until(command: subprocess.Popen, when: str) -> set[int]:
    """Wait until the cluster command is `when` ("starting": redis is up, the rest starting; "running");
    return the processes it has started."""
    deadline = time.monotonic() + 120
    if when == "running":
        while "Ctrl-C stops everything" not in (line := command.stdout.readline()) and time.monotonic() < deadline:
            assert line or command.poll() is None, command.stderr.read()
    else:
        while not _descendants(command.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    started = _descendants(command.pid)
    assert started
    return started


def _all_ended(started: set[int]) -> None:
    deadline = time.monotonic() + 15
    while (alive := {pid for pid in started if os.path.exists(f"/proc/{pid}")}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"left running: {alive}"


@pytest.mark.parametrize(
    ("when", "signals"),
    [
        ("starting", [signal.SIGHUP]),  # on HUP alone gunicorn and nginx reload and run on
        ("running", [signal.SIGHUP]),
        ("running", [signal.SIGTERM, signal.SIGTERM]),  # the second while gunicorn stops: the stop goes on
    ],
)
def test_the_cluster_command_stops_everything_on_a_stop_signal(when, signals):
    before = _runtime_folders()
    with _cluster_command(free_port()) as command:
        try:
            started = _wait_until(command, when)
            for stop_signal in signals:
                command.send_signal(stop_signal)
                time.sleep(0.3)
            command.wait(60)
        finally:
            if command.poll() is None:
                command.kill()
    _all_ended(started)
    assert _runtime_folders() <= before


def test_the_cluster_command_started_under_nohup_ignores_hang_ups():
    port = free_port()
    with _cluster_command(port, prefix=("nohup",)) as command:
        try:
            started = _wait_until(command, "running")
            command.send_signal(signal.SIGHUP)
            time.sleep(1)
            assert command.poll() is None and instance_behind(f"http://127.0.0.1:{port}") == "instance-0"
            command.send_signal(signal.SIGTERM)
            command.wait(60)
        finally:
            if command.poll() is None:
                command.kill()
    _all_ended(started)


def test_a_port_whose_last_connections_linger_in_time_wait_is_free():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx listens
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first: its end of the connection lingers in TIME_WAIT
            client.recv(1)
    assert not port_in_use(port)


def test_nginx_has_browsers_revalidate_static_files(cluster):
    # the pages' ES modules import each other by plain URL: an hour-old http.js beside a new upload.js breaks the page
    with urllib.request.urlopen(cluster.url + "/static/js/http.js", timeout=5) as reply:
        assert reply.headers["Cache-Control"] == "no-cache" and reply.headers["Last-Modified"]


def test_nginx_takes_four_videos_at_once_in_all_and_refuses_a_fifth_in_json(cluster):
    """Their bodies wait in nginx's temporary folder until answered: four of 201 MB fill its 1 GB tmpfs."""
    host, port = cluster.url.removeprefix("http://").split(":")
    uploads = []
    try:
        for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):  # two addresses, two videos each
            upload = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
            upload.sendall(
                b"POST /api/v1/analyze-video HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"
                b"Content-Length: 52428800\r\n\r\n" + b"\0" * 65536
            )
            uploads.append(upload)
        time.sleep(0.5)
        status, content_type, body = post(cluster.url + "/api/v1/analyze-video", b"\0" * 1024)  # a third address
        assert (status, content_type, body["error"]["code"]) == (429, "application/json", "too_many_uploads")
    finally:
        for upload in uploads:
            upload.close()
    time.sleep(0.5)
    assert post(cluster.url + "/api/v1/analyze-video", b"\0" * 1024)[0] != 429


def test_nginx_answers_a_video_over_its_limit_in_json(cluster):
    host, port = cluster.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as upload:
        upload.sendall(
            b"POST /api/v1/analyze-video HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"
            b"Content-Length: 314572800\r\n\r\n"
        )
        head, _, body = upload.recv(65536).decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413") and "application/json" in head, head
    assert '"too_large"' in body


def test_a_large_answer_to_a_slow_reader_is_passed_on_whole_and_never_spooled_to_disk(monkeypatch, grace_rgb):
    pytest.importorskip("av", reason="video support (PyAV) is not installed")
    import deploy.cluster
    from tests.harness import video_bytes

    # a 4 KB send buffer towards the client: on loopback the kernel would otherwise take the whole answer
    with_small_send_buffer = deploy.cluster.nginx_config
    monkeypatch.setattr(
        deploy.cluster,
        "nginx_config",
        lambda upstreams, listen, *rest: with_small_send_buffer(upstreams, f"{listen} sndbuf=4096", *rest),
    )
    video = video_bytes(grace_rgb, seconds=10, size=(320, 240))
    with Cluster(instances=1) as small_buffers:
        host, port = small_buffers.url.removeprefix("http://").split(":")
        with socket.socket() as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            reader.connect((host, int(port)))
            reader.sendall(
                f"POST /api/v1/analyze-video?fps=30 HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: video/mp4\r\n"
                f"Content-Length: {len(video)}\r\nConnection: close\r\n\r\n".encode()
                + video
            )
            time.sleep(8)  # the analysis, then an answer the reader does not take in (within send_timeout)
            reader.settimeout(10)
            answer = b"".join(iter(lambda: reader.recv(65536), b""))
        errors = (small_buffers.runtime / "nginx-error.log").read_text()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert len(json.loads(body)["frames"]) == 300  # ~80 KB: far more than nginx's buffers
    assert "upstream response is buffered to a temporary file" not in errors


def test_the_cluster_command_refuses_a_port_in_use_and_leaves_nothing_behind():
    before = _runtime_folders()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = _cluster_command(port)
        _, stderr = command.communicate(timeout=60)
    assert command.returncode == 1 and f"port {port} is in use" in stderr
    assert stderr.startswith("error:") and "Traceback" not in stderr
    assert _runtime_folders() <= before


class _SlowStub:
    """An instance stand-in on loopback: GET /healthz names it; POST answers after `delay` seconds."""

    def __init__(self, name: str, delay: float):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer({"instance": name})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                self._answer({"faces": []})

            def _answer(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_answer_gets_json_and_leaves_its_instance_in_rotation(tmp_path):
    """One read timeout used to mark a healthy instance down for 10 s (max_fails=1), moving all its clients,
    and the client got nginx's HTML 504."""
    from deploy.cluster import listens, nginx_config, wait_until

    stubs = [_SlowStub(f"stub-{i}", delay=2.5) for i in range(2)]
    port = free_port()
    config = tmp_path / "nginx.conf"
    # the photos' 120 s read timeout, shortened for the test
    site = nginx_config([stub.address for stub in stubs], f"127.0.0.1:{port}", tmp_path)
    assert "proxy_read_timeout 120s;" in site
    config.write_text(site.replace("proxy_read_timeout 120s;", "proxy_read_timeout 1s;"))
    with open(tmp_path / "nginx.log", "wb") as log:
        nginx = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(config), "-g", "daemon off;"], stdout=log, stderr=log
        )
    try:
        wait_until(lambda: listens(port), nginx, f"nginx listened on {port}", 15)
        url = f"http://127.0.0.1:{port}"
        before = instance_behind(url)
        status, content_type, body = post(url + "/api/v1/analyze", b"\xff\xd8" * 10)
        assert (status, content_type, body["error"]["code"]) == (503, "application/json", "busy")
        assert [instance_behind(url) for _ in range(5)] == [before] * 5
    finally:
        nginx.terminate()
        nginx.wait(10)
        for stub in stubs:
            stub.close()
