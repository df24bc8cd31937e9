"""Live streaming against the production server (gunicorn + eventlet, as in the Procfile).

    python -m bench.stream_bench [--seconds 20] [--clients 4]

1. Real browser: headless Chromium's fake camera plays a face video into the live page;
   fps and round trip (frame captured -> its answer received: how far boxes lag the camera) come from
   the page itself.
2. Concurrent clients: N Socket.IO clients each stream the same face frame at up to
   30 fps with one frame in flight, as the page does.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np

from tests.harness import (
    jpeg_bytes,
    start_production_server,
    stop_production_server,
    streaming_live_page,
    webcam_frame,
    write_y4m,
)


def browser_run(url: str, seconds: float, frame: np.ndarray | None = None) -> dict:
    """Stream `frame` (default: one face) from Chromium's fake camera for `seconds`; return fps and round-trip figures."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        video = write_y4m(f"{folder}/face.y4m", webcam_frame() if frame is None else frame)
        browser, page = streaming_live_page(p, url, video)
        page.wait_for_function("() => window.moodlens.stats.answered >= 10", timeout=60_000)
        start = page.evaluate(
            "({answered: window.moodlens.stats.answered, rtts: window.moodlens.stats.rtts.length, t: performance.now()})"
        )
        time.sleep(seconds)
        end = page.evaluate(
            "({answered: window.moodlens.stats.answered, t: performance.now(), stats: window.moodlens.stats})"
        )
        browser.close()
    rtts = end["stats"]["rtts"][-(end["answered"] - start["answered"]) :]
    return {
        "fps": (end["answered"] - start["answered"]) / ((end["t"] - start["t"]) / 1000),
        "rtt_median": float(np.median(rtts)),
        "rtt_p95": float(np.percentile(rtts, 95)),
        "errors": end["stats"]["errors"],
        "faces": len(end["stats"]["lastReply"]["faces"]),
    }


def socket_client_run(url: str, frame: bytes, seconds: float, max_fps: float, out: dict) -> None:
    """One client: send, wait for the ack, pace to `max_fps`; record latencies and errors."""
    import socketio

    client = socketio.SimpleClient()
    client.connect(url, transports=["websocket"])
    latencies, errors, faces = [], 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = time.monotonic()
        try:
            reply = client.call("frame", frame, timeout=10)
        except Exception:  # a timeout counts as an error
            errors += 1
            continue
        latencies.append((time.monotonic() - sent) * 1000)
        errors += "error" in reply
        faces += len(reply.get("faces", []))
        time.sleep(max(0.0, 1 / max_fps - (time.monotonic() - sent)))
    client.disconnect()
    latencies = latencies or [float("nan")]
    out.update(
        fps=len(latencies) / seconds,
        median=float(np.median(latencies)),
        p95=float(np.percentile(latencies, 95)),
        errors=errors,
        faces=faces / len(latencies),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-fps", type=float, default=30, help="camera rate each concurrent client paces to")
    args = parser.parse_args(argv)

    process, url = start_production_server()
    try:
        print(f"server: gunicorn + eventlet at {url}; frames 640x480 JPEG, one face\n")
        result = browser_run(url, args.seconds)
        print("Real browser (headless Chromium, fake camera at 30 fps):")
        print(f"{'fps':>8}{'rtt median ms':>15}{'rtt p95 ms':>12}{'errors':>8}{'faces':>7}")
        print(
            f"{result['fps']:>8.1f}{result['rtt_median']:>15.1f}{result['rtt_p95']:>12.1f}{result['errors']:>8}{result['faces']:>7}"
        )

        frame = jpeg_bytes(webcam_frame(), quality=80)
        results = [{} for _ in range(args.clients)]
        threads = [
            threading.Thread(target=socket_client_run, args=(url, frame, args.seconds, args.max_fps, out))
            for out in results
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(
            f"\n{args.clients} concurrent Socket.IO clients, each paced to {args.max_fps:g} fps, one frame in flight:"
        )
        print(f"{'client':>8}{'fps':>8}{'median ms':>11}{'p95 ms':>9}{'errors':>8}{'faces':>7}")
        for i, r in enumerate(results, 1):
            print(f"{i:>8}{r['fps']:>8.1f}{r['median']:>11.1f}{r['p95']:>9.1f}{r['errors']:>8}{r['faces']:>7.2f}")
        print(f"{'total':>8}{sum(r['fps'] for r in results):>8.1f}")
    finally:
        stop_production_server(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
