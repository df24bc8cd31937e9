"""Issue-11 attacks against the Procfile's server (gunicorn, one eventlet worker), loopback only, bounded.

    python -m bench.abuse_bench [--steps] [--soak SECONDS] [--photo-flood] [--body-flood]

Prints each attack's figures against its target. --steps also measures the memory attack
under each hardening step (no budget and no cap, then the cap, the allocator setting and
the decode budget). --soak runs 6 clients at 30 fps for SECONDS (the target: 600). --photo-flood
compares the live stream under a flood of group photos with and without tiled detection, with photos at
the live frames' CPU priority (BACKGROUND_NICE=0) or below it (5, the default, and 10), on a quiet host and
on one whose every core another process keeps busy. --body-flood compares 150 clients posting a 10 MB
photo at once without a budget for the bodies held and with the default one (MAX_HELD_BODIES_MB), then
another client's photo while 60 connections of one address post photos back to back (photos take turns by
client address).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import contextmanager

from tests import abuse
from tests.harness import (
    grace_hopper_rgb,
    jpeg_bytes,
    noise_jpeg,
    png_16bit_rgba,
    start_production_server,
    stop_production_server,
    worker_pid,
)
from tests.scenes import group_photo

# a 2960x2500 photo of noise: 9.9 MB, within the default MAX_UPLOAD_MB
LARGE_PHOTO = (2960, 2500)
UNLIMITED = {"MAX_DECODE_MB": "100000", "MAX_HEAVY_ANALYSES": "1000"}
STEPS = [
    ("no decode budget, no cap, glibc's arenas", {**UNLIMITED, "MALLOC_ARENA_MAX": None}),
    ("+ at most 2 large analyses at once", {"MAX_DECODE_MB": "100000", "MALLOC_ARENA_MAX": None}),
    ("+ MALLOC_ARENA_MAX=2 (Procfile)", {"MAX_DECODE_MB": "100000"}),
    ("+ 100 MB decode budget (defaults)", {}),
]


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def ms(value: float) -> str:
    return "no answer" if value == float("inf") else f"{value:.0f}"


# the columns `memory_cells` fills
MEMORY_COLUMNS = ("baseline", "peak", "5 s after", "replies (0: reset)", "answers JSON", "/healthz worst ms")


def memory_cells(r: dict) -> tuple:
    """A `memory_attack` result as table cells: RSS baseline, peak and after (MB), replies, /healthz."""
    return (
        f"{r['baseline_mb']:.0f}",
        f"+{r['peak_mb'] - r['baseline_mb']:.0f}",
        f"+{r['after_mb'] - r['baseline_mb']:.0f}",
        r["statuses"],
        r["all_json"],
        ms(r["healthz_worst_ms"]),
    )


def memory_steps(png: bytes) -> None:
    print("\n30 uploads of a 320 KB 16-bit RGBA PNG declaring 8000x5000, 10 at a time (worker RSS, MB)\n")
    print(row("configuration", *MEMORY_COLUMNS))
    print(row(*["---"] * 7))
    for name, env in STEPS:
        process, url = start_production_server(env=env)
        try:
            r = abuse.memory_attack(url, worker_pid(process), png)
        finally:
            stop_production_server(process)
        print(
            row(
                name,
                *memory_cells(r),
            ),
            flush=True,
        )


def busy_line(attack: str, r: dict) -> tuple:
    """A line of the attack table for a `memory_attack` that the server must partly refuse as busy."""
    peak, after = r["peak_mb"] - r["baseline_mb"], r["after_mb"] - r["baseline_mb"]
    return (
        attack,
        "peak <= +1 GB, +300 MB 5 s after, answers JSON (0: a reset, refused unread), 503s with Retry-After",
        f"peak +{peak:.0f} MB, after +{after:.0f} MB, {r['statuses']}, Retry-After {r['retry_after']}",
        peak <= 1024 and after <= 300 and r["all_json"] and r["retry_after"],
        r["healthz_worst_ms"],
    )


def attacks(png: bytes, soak_s: float) -> None:
    process, url = start_production_server()
    pid = worker_pid(process)
    lines = []
    try:
        r = abuse.memory_attack(url, pid, png)
        peak, after = r["peak_mb"] - r["baseline_mb"], r["after_mb"] - r["baseline_mb"]
        lines.append(
            (
                "30 declared-320 MB PNGs, 10 at a time",
                "peak <= +1 GB, +300 MB 5 s after, all JSON",
                f"peak +{peak:.0f} MB, after +{after:.0f} MB, {r['statuses']}, JSON {r['all_json']}",
                peak <= 1024 and after <= 300 and r["all_json"],
                r["healthz_worst_ms"],
            )
        )
        r = abuse.memory_attack(url, pid, png_16bit_rgba(3000, 2500), count=30, at_once=10)
        lines.append(busy_line("30 decodable 60 MB PNGs (3000x2500x16-bit RGBA), 10 at a time", r))
        r = abuse.memory_attack(url, pid, noise_jpeg(*LARGE_PHOTO), count=150, at_once=150)
        lines.append(busy_line("150 clients posting a 10 MB photo at once", r))
        r = abuse.stalled_bodies(url, connections=900, limit_s=40)
        lines.append(
            (
                "900 stalled request bodies (BODY_TIMEOUT_S=15)",
                "all dropped <= 30 s",
                f"{r['dropped']} dropped, last after {r['last_dropped_s']:.1f} s; then a new client: {r['fresh_client_status']}",
                r["dropped"] == 900 and r["last_dropped_s"] <= 30,
                r["healthz_worst_ms"],
            )
        )
        r = abuse.reset_trick(url)
        lines.append(
            (
                "300 frames in 1 s, each after a spoofed connect/disconnect",
                "<= 60 analysed",
                f"{r['analysed']} analysed in {r['seconds']:.2f} s, {r['codes']}",
                r["analysed"] <= 60,
                r["healthz_worst_ms"],
            )
        )
        r = abuse.log_flood(url, process.log)
        lines.append(
            (
                "1,000 malformed Socket.IO packets over 10 WebSockets",
                "one line with a count, no traceback each",
                f"{r['log_bytes']:,} bytes of log for {r['bytes_sent']:,} sent",
                r["log_bytes"] < r["bytes_sent"],
                r["healthz_worst_ms"],
            )
        )
        r = abuse.photo_flood(url, jpeg_bytes(group_photo()[0]))
        lines.append(
            (
                "4 clients posting 3000x2000 18-face photos back to back (tiles), one live client at 30 fps",
                "live p95 <= 100 ms, every photo answered 200",
                f"live p95 {r['quiet_p95_ms']:.0f} ms before, {r['flood_p95_ms']:.0f} ms during; "
                f"{r['photos_per_s']:.1f} photos/s, {r['statuses']}",
                r["flood_p95_ms"] <= 100 and set(r["statuses"]) == {200},
                r["healthz_worst_ms"],
            )
        )
        r = abuse.session_flood(url, pid, seconds=30, max_requests=30000)
        lines.append(
            (
                "Engine.IO polling handshakes for 30 s, one address",
                "bounded sessions and memory",
                f"{r['handshakes']:,} sent: {r['statuses']}, RSS {r['rss_growth_mb']:+.0f} MB",
                r["statuses"].get(200, 0) <= 20 and r["rss_growth_mb"] <= 50,
                r["healthz_worst_ms"],
            )
        )
        if soak_s:
            import time

            time.sleep(20)  # the flood's sessions expire
            r = abuse.soak(url, pid, seconds=soak_s)
            lines.append(
                (
                    f"soak: 6 clients at 30 fps for {soak_s:.0f} s",
                    "no errors, RSS growth <= 50 MB",
                    f"{r['fps_per_client']:.1f} fps each, {r['errors']} errors {r['error_codes']}, "
                    f"RSS {r['rss_growth_mb']:+.1f} MB",
                    r["errors"] == 0 and r["rss_growth_mb"] <= 50,
                    r["healthz_worst_ms"],
                )
            )
    finally:
        stop_production_server(process)
    print("\nAttacks on the default server (Procfile); /healthz target <= 100 ms during each\n")
    print(row("attack", "target", "measured", "met", "/healthz worst ms"))
    print(row(*["---"] * 5))
    for attack, target, measured, met, health in lines:
        print(row(attack, target, measured, "yes" if met and health <= 100 else "NO", ms(health)))


@contextmanager
def busy_cpus(busy: bool):
    """One process spinning per core while the block runs (another busy process on the same host, such as a
    second instance), or nothing."""
    spin = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 1)] if busy else []
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def photo_flood_by_setting(rounds: int = 2) -> None:
    """The photo flood against a server with each UPLOAD_DETECTOR and photos at the live frames' CPU priority
    or below it (BACKGROUND_NICE), alternating, in one run; then with tiles on a host whose every core another
    process keeps busy."""
    photo = jpeg_bytes(group_photo()[0])
    print("\n4 clients posting a 3000x2000 18-face photo back to back, one live client at 30 fps\n")
    header = ("host", "UPLOAD_DETECTOR", "BACKGROUND_NICE", "round", "live p95 before, ms", "live p95 during, ms")
    print(row(*header, "photos/s", "statuses", "/healthz worst ms"))
    print(row(*["---"] * 9))
    settings = [("quiet", detector) for detector in ("blazeface-auto", "blazeface-tiled")] + [
        ("busy", "blazeface-tiled")
    ]
    for host, detector in settings:
        with busy_cpus(host == "busy"):
            for round_ in range(1, rounds + 1):
                for nice in ("0", "5", "10"):
                    process, url = start_production_server(env={"UPLOAD_DETECTOR": detector, "BACKGROUND_NICE": nice})
                    try:
                        r = abuse.photo_flood(url, photo)
                    finally:
                        stop_production_server(process)
                    print(
                        row(
                            host,
                            detector,
                            nice,
                            round_,
                            f"{r['quiet_p95_ms']:.0f}",
                            f"{r['flood_p95_ms']:.0f}",
                            f"{r['photos_per_s']:.1f}",
                            r["statuses"],
                            ms(r["healthz_worst_ms"]),
                        )
                    )


def body_flood(rounds: int = 2) -> None:
    """150 clients posting a 10 MB photo at once, against a server with no budget for the bodies it holds and
    one with the default budget, alternating, in one run."""
    photo = noise_jpeg(*LARGE_PHOTO)
    print(f"\n150 clients posting a {len(photo) / 2**20:.1f} MB photo at once (worker RSS, MB)\n")
    print(row("MAX_HELD_BODIES_MB", "round", *MEMORY_COLUMNS))
    print(row(*["---"] * 8))
    for round_ in range(1, rounds + 1):
        for name, held in (("100000 (no budget)", "100000"), ("160 (default)", None)):
            process, url = start_production_server(env={"MAX_HELD_BODIES_MB": held} if held else None)
            try:
                r = abuse.memory_attack(url, worker_pid(process), photo, count=150, at_once=150)
            finally:
                stop_production_server(process)
            print(
                row(
                    name,
                    round_,
                    *memory_cells(r),
                ),
                flush=True,
            )


def photo_turns_table(rounds: int = 2) -> None:
    """Another client's photo beside a flood of photos from one address, on a server trusting one proxy."""
    photo = jpeg_bytes(grace_hopper_rgb())
    print("\nA 512x600 portrait from one address while 60 connections of another post it back to back\n")
    print(
        row(
            "round", "alone, median ms", "during, median ms", "during, worst ms", "flood's replies", "/healthz worst ms"
        )
    )
    print(row(*["---"] * 6))
    for round_ in range(1, rounds + 1):
        process, url = start_production_server(env={"TRUSTED_PROXIES": "1"})
        try:
            r = abuse.photo_turns(url, photo)
        finally:
            stop_production_server(process)
        print(
            row(
                round_,
                f"{r['alone_median_ms']:.0f}",
                f"{r['flood_median_ms']:.0f}",
                f"{r['flood_worst_ms']:.0f}",
                r["flood_statuses"],
                ms(r["healthz_worst_ms"]),
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", action="store_true", help="memory attack under each hardening step")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="also soak 6 clients at 30 fps")
    parser.add_argument(
        "--photo-flood",
        action="store_true",
        help="only the photo flood: each upload detector, BACKGROUND_NICE 0, 5 or 10, a quiet host or a busy one",
    )
    parser.add_argument(
        "--body-flood",
        action="store_true",
        help="only floods of photos: 150 clients posting a 10 MB photo at once, with no budget for the bodies held "
        "and the default; another client's photo beside 60 connections of one address",
    )
    args = parser.parse_args()
    if args.body_flood:
        body_flood()
        photo_turns_table()
        return
    if args.photo_flood:
        photo_flood_by_setting()
        return
    png = png_16bit_rgba(8000, 5000)
    if args.steps:
        memory_steps(png)
    attacks(png, args.soak)


if __name__ == "__main__":
    main()
