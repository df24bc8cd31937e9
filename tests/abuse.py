"""Attacks on the production server, shared by tests/test_abuse.py (small, bounded) and bench/abuse_bench.py.

Every attack goes to a loopback URL only, runs a bounded number of requests, and returns
what it measured, including the worst /healthz latency seen while it ran.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np

from tests.harness import jpeg_bytes, reset_peak_rss, rss_mb, webcam_frame


def _loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"attacks go to loopback only, not {url}")
    return parts.hostname, parts.port


class _Sampler:
    """Calls `sample()` every `interval` s on a background thread while the `with` block runs."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


class HealthProbe(_Sampler):
    """Polls /healthz every `interval` s in the background and keeps the latencies (ms)."""

    def __init__(self, url: str, interval: float = 0.1):
        super().__init__(interval)
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0

    def sample(self) -> None:
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as reply:
                reply.read()
            self.latencies.append((time.perf_counter() - start) * 1000)
        except OSError:
            self.failures += 1

    @property
    def worst_ms(self) -> float:
        return max(self.latencies, default=float("inf")) if not self.failures else float("inf")


class RssSampler(_Sampler):
    """A process's peak resident memory while the `with` block runs (MB): the kernel's high-water mark,
    started again on entry, so spikes between samples count; `interval` s sampling of VmRSS is kept
    as a floor."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(interval)
        self.pid = pid
        self.peak = 0.0
        self._high_water = False

    def __enter__(self):
        self._high_water = reset_peak_rss(self.pid)
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        if self._high_water:  # read now: the process may be gone later
            self.peak = max(self.peak, rss_mb(self.pid, "VmHWM"))

    def sample(self) -> None:
        self.peak = max(self.peak, rss_mb(self.pid))


def post(
    url: str,
    data: bytes,
    content_type: str = "image/png",
    timeout: float = 120,
    path: str = "/api/v1/analyze",
    headers: dict | None = None,
) -> tuple[int, bytes, dict]:
    """POST `data` to `path`, with more `headers` if given; the status, body and headers whatever the status
    (status 0, no body: the server dropped the connection before a reply came)."""
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionError):
            return 0, b"", {}
        raise
    except ConnectionError:
        return 0, b"", {}


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def memory_attack(url: str, pid: int, image: bytes, count: int = 30, at_once: int = 10, settle_s: float = 5) -> dict:
    """`count` uploads of `image`, `at_once` at a time: the worker's RSS baseline, peak and `settle_s` after."""
    _loopback(url)
    baseline = rss_mb(pid)
    with HealthProbe(url) as probe, RssSampler(pid) as sampler, ThreadPoolExecutor(at_once) as pool:
        replies = list(pool.map(lambda _: post(url, image), range(count)))
    time.sleep(settle_s)
    statuses: dict[int, int] = {}
    for status, _, _ in replies:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "baseline_mb": baseline,
        "peak_mb": sampler.peak,
        "after_mb": rss_mb(pid),
        "statuses": statuses,
        # a reset (status 0) has no body: counted in statuses, not here
        "all_json": all(is_json(body) for status, body, _ in replies if status),
        "retry_after": all("Retry-After" in headers for status, _, headers in replies if status == 503),
        "healthz_worst_ms": probe.worst_ms,
    }


def stalled_bodies(url: str, connections: int = 300, limit_s: float = 40) -> dict:
    """`connections` POSTs that send headers and part of the body, then nothing: how long until each is dropped."""
    host, port = _loopback(url)
    sockets = []
    start = time.monotonic()
    with HealthProbe(url) as probe:
        for _ in range(connections):
            sock = socket.create_connection((host, port), timeout=limit_s)
            sock.sendall(
                b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\xff\xd8" + b"\x00" * 998
            )
            sockets.append(sock)
        dropped_after = []
        for sock in sockets:
            sock.settimeout(max(0.1, limit_s - (time.monotonic() - start)))
            try:
                while sock.recv(4096):  # a 408 reply, then the close
                    pass
                dropped_after.append(time.monotonic() - start)
            except OSError:  # still open at the limit
                pass
            finally:
                sock.close()
        # a fresh client gets in once the stalled ones are gone
        fresh = post(url, b"garbage", "image/jpeg", timeout=10)[0]
    return {
        "connections": connections,
        "dropped": len(dropped_after),
        "last_dropped_s": max(dropped_after, default=float("inf")),
        "fresh_client_status": fresh,
        "healthz_worst_ms": probe.worst_ms,
    }


def trickled_video(url: str, video: bytes, declared: int = 1_000_000, limit_s: float = 60) -> dict:
    """One client declares a `declared`-byte video and sends a byte a second; meanwhile another posts
    `video` every 2 s until one is answered 200. When the trickler was dropped, and when the other got in."""
    host, port = _loopback(url)
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=1)
    sock.sendall(
        b"POST /api/v1/analyze-video HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"
        b"Content-Length: %d\r\n\r\n" % declared
    )
    reply, dropped_s, served_s, next_try = b"", None, None, start + 1
    while time.monotonic() - start < limit_s and (dropped_s is None or served_s is None):
        if dropped_s is None:
            try:
                sock.sendall(b"\x00")
                part = sock.recv(4096)
                reply += part
                if not part or b"\r\n\r\n" in reply:
                    dropped_s = time.monotonic() - start
            except TimeoutError:
                pass
            except OSError:
                dropped_s = time.monotonic() - start
        if served_s is None and time.monotonic() >= next_try:
            if post(url, video, "video/mp4", timeout=60, path="/api/v1/analyze-video")[0] == 200:
                served_s = time.monotonic() - start
            next_try = time.monotonic() + 2
    sock.close()
    return {"dropped_s": dropped_s, "reply": reply.split(b"\r\n")[0], "other_served_s": served_s}


@contextlib.contextmanager
def socketio_client(url: str) -> Iterator:
    import socketio

    client = socketio.Client(reconnection=False)
    client.connect(url, transports=["websocket"])
    try:
        yield client
    finally:
        client.disconnect()


def live_round_trips_ms(url: str, seconds: float) -> list[float]:
    """One live client at a camera's 30 fps for `seconds`: each frame's round trip."""
    frame = jpeg_bytes(webcam_frame())
    times = []
    with socketio_client(url) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sent = time.perf_counter()
            reply = client.call("frame", frame, timeout=30)
            times.append((time.perf_counter() - sent) * 1000)
            if "faces" not in reply:
                raise RuntimeError(f"the live client got {reply}")
            time.sleep(max(0.0, 1 / 30 - (time.perf_counter() - sent)))
    return times


def photo_flood(url: str, photo: bytes, uploaders: int = 4, seconds: float = 10) -> dict:
    """`uploaders` clients post `photo` back to back while one live client streams: the live p95 before
    and during the flood, the photos answered per second while it was measured, and every photo's
    status (0: no answer)."""
    _loopback(url)
    quiet = live_round_trips_ms(url, seconds / 2)
    stop, answers = threading.Event(), []  # (when, status) of each photo

    def upload() -> None:
        while not stop.is_set():
            try:
                status = post(url, photo, "image/jpeg")[0]
            except OSError:  # no answer at all: counted, not a silent drop in the rate
                status = 0
            answers.append((time.monotonic(), status))

    with HealthProbe(url) as probe:
        workers = [threading.Thread(target=upload) for _ in range(uploaders)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(1)  # the flood under way
            started = time.monotonic()
            busy = live_round_trips_ms(url, seconds)
            ended = time.monotonic()
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    counts: dict[int, int] = {}
    for _, status in answers:
        counts[status] = counts.get(status, 0) + 1
    return {
        "quiet_p95_ms": float(np.percentile(quiet, 95)),
        "flood_p95_ms": float(np.percentile(busy, 95)),
        "photos_per_s": sum(started <= when <= ended for when, _ in answers) / (ended - started),
        "statuses": counts,
        "healthz_worst_ms": probe.worst_ms,
    }


def photo_turns(url: str, photo: bytes, flooders: int = 60, photos: int = 10) -> dict:
    """Another client's photo while `flooders` connections of one address post `photo` back to back: its
    round trip (ms) alone and during the flood. The server must trust one proxy (TRUSTED_PROXIES=1): the
    two clients' addresses are given in X-Forwarded-For, as nginx would."""
    _loopback(url)

    def post_as(address: str) -> int:
        try:
            return post(url, photo, "image/jpeg", headers={"X-Forwarded-For": address})[0]
        except OSError:  # no answer at all (a timeout): counted, not a silent drop in the rate
            return 0

    def timed_ms() -> float:
        start = time.perf_counter()
        post_as("10.0.0.2")
        return (time.perf_counter() - start) * 1000

    alone = [timed_ms() for _ in range(photos)]
    stop, statuses = threading.Event(), []

    def flood() -> None:
        while not stop.is_set():
            statuses.append(post_as("10.0.0.1"))

    with HealthProbe(url) as probe:
        flooders_ = [threading.Thread(target=flood) for _ in range(flooders)]
        for flooder in flooders_:
            flooder.start()
        try:
            time.sleep(3)  # the queue fills
            during = []
            for _ in range(photos):
                during.append(timed_ms())
                time.sleep(0.3)
        finally:
            stop.set()
            for flooder in flooders_:
                flooder.join()
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return {
        "alone_median_ms": float(np.median(alone)),
        "flood_median_ms": float(np.median(during)),
        "flood_worst_ms": max(during),
        "flood_statuses": counts,
        "healthz_worst_ms": probe.worst_ms,
    }


def reset_trick(url: str, frames: int = 300) -> dict:
    """Flood `frames` frames in about a second, each after an event named "disconnect" or "connect".

    Before the fix each spoofed event wiped the connection's limits and every frame was analysed.
    """
    _loopback(url)
    frame = jpeg_bytes(webcam_frame()[:64, :64])
    replies: list[dict] = []
    done = threading.Event()

    def on_reply(reply):
        replies.append(reply)
        if len(replies) == frames:
            done.set()

    with HealthProbe(url) as probe, socketio_client(url) as client:
        start = time.monotonic()
        for i in range(frames):
            client.emit("disconnect" if i % 2 else "connect")
            client.emit("frame", frame, callback=on_reply)
            time.sleep(max(0.0, start + (i + 1) / frames - time.monotonic()))
        done.wait(30)
        elapsed = time.monotonic() - start
    analysed = sum("error" not in reply for reply in replies)
    codes: dict[str, int] = {}
    for reply in replies:
        code = reply.get("error", {}).get("code", "ok")
        codes[code] = codes.get(code, 0) + 1
    return {
        "frames": frames,
        "seconds": elapsed,
        "analysed": analysed,
        "codes": codes,
        "healthz_worst_ms": probe.worst_ms,
    }


def session_flood(url: str, pid: int, seconds: float = 10, max_requests: int = 5000) -> dict:
    """Engine.IO polling handshakes as fast as one connection allows, bounded by `seconds` and `max_requests`."""
    host, port = _loopback(url)
    baseline = rss_mb(pid)
    statuses: dict[int, int] = {}
    with HealthProbe(url) as probe:
        connection = http.client.HTTPConnection(host, port, timeout=10)
        start = time.monotonic()
        sent = 0
        while sent < max_requests and time.monotonic() - start < seconds:
            connection.request("GET", "/socket.io/?EIO=4&transport=polling")
            reply = connection.getresponse()
            reply.read()
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            sent += 1
            if reply.will_close:
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.close()
        elapsed = time.monotonic() - start
    return {
        "handshakes": sent,
        "seconds": elapsed,
        "statuses": statuses,
        "rss_growth_mb": rss_mb(pid) - baseline,
        "healthz_worst_ms": probe.worst_ms,
    }


def log_flood(url: str, log_file, packets: int = 1000, connections: int = 10) -> dict:
    """Malformed Socket.IO packets over `connections` WebSockets in turn: bytes of server log written."""
    import websocket

    host, port = _loopback(url)
    before = os.fstat(log_file.fileno()).st_size
    sent = 0
    kinds = ['42["frame",', "4{bad", "42[1,2", "4-1", "43x[]", "45-[]"]
    with HealthProbe(url) as probe:
        for c in range(connections):
            ws = websocket.create_connection(f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket", timeout=10)
            try:
                ws.recv()  # Engine.IO open packet
                ws.send("40")
                ws.recv()  # Socket.IO connect
                for i in range(packets // connections):
                    garbage = kinds[(c + i) % len(kinds)]
                    ws.send(garbage)
                    sent += len(garbage)
            except websocket.WebSocketException:
                pass  # the server may close a connection that sends garbage
            finally:
                ws.close()
        time.sleep(1)
    logged = os.fstat(log_file.fileno()).st_size - before
    return {"packets": packets, "bytes_sent": sent, "log_bytes": logged, "healthz_worst_ms": probe.worst_ms}


def packet_attack(url: str, pid: int, attachments_mb: int = 100, wide_json_kb: int = 1300) -> dict:
    """Socket.IO packets built to eat memory, over one WebSocket: a `frame` declaring 9,999,999 binary
    attachments followed by `attachments_mb` 1 MB binary messages, then JSON of `wide_json_kb` KB of
    `[],`; then an ordinary frame on the same connection. Returns the first packet's ack, the peak growth
    of the worker's memory, whether the ordinary frame was answered, and the worst /healthz latency."""
    import websocket

    host, port = _loopback(url)
    baseline = rss_mb(pid)
    ws = websocket.create_connection(f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket", timeout=30)
    try:
        ws.recv()  # Engine.IO open packet
        ws.send("40")
        ws.recv()  # Socket.IO connect
        with HealthProbe(url) as probe, RssSampler(pid) as memory:
            ws.send('459999999-7["frame",{"_placeholder":true,"num":0}]')
            ack = _next_ack(ws, 7)
            megabyte = os.urandom(1024 * 1024)
            for _ in range(attachments_mb):
                ws.send_binary(megabyte)
            ws.send('428["frame",[' + "[]," * (wide_json_kb * 1024 // 3) + "0]]")
            ws.send('451-9["frame",{"_placeholder":true,"num":0}]')
            ws.send_binary(jpeg_bytes(webcam_frame()))
            answered = _next_ack(ws, 9)
    finally:
        ws.close()
    return {
        "attachments_ack": ack,
        "peak_growth_mb": memory.peak - baseline,
        "frame_after": answered,
        "healthz_worst_ms": probe.worst_ms,
    }


def _next_ack(ws, ack_id: int, timeout_s: float = 30) -> dict | None:
    """The JSON of the ack numbered `ack_id` that arrives on a raw Engine.IO WebSocket (pings answered), or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = ws.recv()
        if message == "2":
            ws.send("3")
        elif isinstance(message, str) and message.startswith(f"43{ack_id}["):
            return json.loads(message[len(f"43{ack_id}") :])[0]
    return None


def soak(url: str, pid: int, clients: int = 6, fps: float = 30, seconds: float = 600, warmup_s: float = 10) -> dict:
    """`clients` Socket.IO clients at up to `fps` each, one frame in flight, for `seconds` after a warm-up."""
    _loopback(url)
    frame = jpeg_bytes(webcam_frame(), quality=80)
    counts = {"answered": 0, "errors": 0}
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    measuring = threading.Event()

    def stream():
        with socketio_client(url) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                reply = client.call("frame", frame, timeout=30)
                with lock:
                    if measuring.is_set():
                        counts["answered"] += 1
                        if "error" in reply:
                            counts["errors"] += 1
                            code = reply["error"]["code"]
                            errors[code] = errors.get(code, 0) + 1
                next_at += 1 / fps
                time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(warmup_s)
    start_rss = rss_mb(pid)
    measuring.set()
    with HealthProbe(url, interval=1.0) as probe:
        start = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - start
    stop.set()
    for thread in threads:
        thread.join(60)
    return {
        "clients": clients,
        "seconds": elapsed,
        "fps_per_client": counts["answered"] / elapsed / clients,
        "errors": counts["errors"],
        "error_codes": errors,
        "rss_growth_mb": rss_mb(pid) - start_rss,
        "healthz_worst_ms": probe.worst_ms,
    }
