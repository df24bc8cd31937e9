"""How far the live page's boxes trail the camera when the server's analysis is slow.

    python -m bench.live_lag [--delay-ms 150] [--answers 60]

Headless Chromium's fake camera plays a face video (30 fps) into the live page, served by a threaded
test server whose every frame analysis is padded by `--delay-ms`. The page reports, per answer, the
time from the frame's capture to its answer (`stats.rtts`) and, per frame sent, how old the frame was
when it left (`stats.sendAges`). With one frame in flight, the best the page can do is trail the camera
by one analysis plus encoding; a frame kept from before the answer came would add a second one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from tests.harness import serve_in_thread, streaming_live_page, webcam_frame, write_y4m


def padded_app(delay_s: float, model_path: str | None):
    from webapp import create_app, events

    settings = {"TESTING": True, "ASYNC_MODE": "threading"}
    if model_path:
        settings["MODEL_PATH"] = model_path
    app = create_app(settings)
    analyse = events.run_blocking

    def slow(function, *args):
        time.sleep(delay_s)
        return analyse(function, *args)

    events.run_blocking = slow
    return app


def measure(url: str, answers: int) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as p:
        browser, page = streaming_live_page(p, url, write_y4m(f"{folder}/face.y4m", webcam_frame()))
        try:
            page.wait_for_function(f"() => window.moodlens.stats.answered >= {answers + 5}", timeout=120_000)
            stats = page.evaluate("window.moodlens.stats")
        finally:
            browser.close()
    rtts = stats["rtts"][5:]  # the first answers include the camera's and the connection's start
    ages = stats.get("sendAges", [])[5:]
    return {
        "answers": len(rtts),
        "lag_median_ms": statistics.median(rtts),
        "lag_p90_ms": statistics.quantiles(rtts, n=10)[-1],
        "send_age_median_ms": statistics.median(ages) if ages else None,
        "fps": stats["fps"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=150, help="added to every frame's analysis")
    parser.add_argument("--answers", type=int, default=60)
    parser.add_argument("--model", default=None, help="model file (default: the shipped one)")
    args = parser.parse_args(argv)
    with serve_in_thread(padded_app(args.delay_ms / 1000, args.model)) as url:
        result = measure(url, args.answers)
    age = result["send_age_median_ms"]
    print(f"analysis padded by {args.delay_ms:g} ms; {result['answers']} answers")
    print("| capture to answer, median | p90 | frame age when sent, median | answers/s |")
    print("|---|---|---|---|")
    print(
        f"| {result['lag_median_ms']:.0f} ms | {result['lag_p90_ms']:.0f} ms | "
        f"{'n/a' if age is None else f'{age:.0f} ms'} | {result['fps']} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
