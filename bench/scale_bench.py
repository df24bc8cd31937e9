"""Throughput at saturation: 1 instance and 2 behind nginx, each direct and through the proxy.

    python -m bench.scale_bench [--clients 16] [--seconds 5] [--rounds 3]

Every configuration runs `deploy.cluster.Cluster` (redis + instances + nginx on loopback, needs Debian's nginx
and redis-server). N Socket.IO clients each stream the same 640x480 one-face frame as fast as acks come back
(one frame in flight, no pacing: saturation), split evenly over the instances when direct. nginx hashes on the
client's address and port here, since every bench client comes from 127.0.0.1 (the deployed config hashes on
the address alone). The clients run on the same cores as the servers: the figures are a floor. Direct and
nginx runs alternate `--rounds` times and the best round of each is kept, since other work on a shared
machine only ever slows a round down.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

from deploy.cluster import Cluster
from tests.harness import jpeg_bytes, webcam_frame


def saturate(urls: list[str], clients: int, seconds: float, frame: bytes, warmup: float = 2.0) -> dict:
    """Stream from `clients` Socket.IO clients (client i to urls[i % len(urls)]) for warmup + `seconds`.

    Returns:
        frames/s over the measured window, p50/p95 round trip in ms, errors (error replies, timeouts,
        failed connections and dropped ones) and dead (clients that stopped early: refused or dropped).
    """
    import socketio

    start = time.monotonic() + warmup
    stop = start + seconds
    latencies: list[float] = []
    errors, dead = [0], [0]
    lock = threading.Lock()

    def stream(index: int) -> None:
        client = socketio.Client(reconnection=False)
        try:
            client.connect(urls[index % len(urls)], transports=["websocket"])
        except Exception:  # a client refused at the door is an error of the run, not a silent missing row
            with lock:
                errors[0] += 1
                dead[0] += 1
            return
        try:
            while (now := time.monotonic()) < stop:
                try:
                    reply = client.call("frame", frame, timeout=10)
                    ok = "faces" in reply
                except socketio.exceptions.TimeoutError:
                    ok = False
                except Exception:  # the connection dropped: count it and stop this client
                    with lock:
                        errors[0] += 1
                        dead[0] += 1
                    return
                if now >= start:
                    with lock:
                        if ok:
                            latencies.append(time.monotonic() - now)
                        else:
                            errors[0] += 1
        finally:
            client.disconnect()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = np.array(latencies) * 1000
    return {
        "fps": len(latencies) / seconds,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
        "errors": errors[0],
        "dead": dead[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    frame = jpeg_bytes(webcam_frame(), quality=80)
    cores = os.cpu_count()
    rows = []
    for instances in (1, 2):
        with Cluster(instances, sticky_key="$remote_addr$remote_port") as cluster:
            direct = [cluster.instance_url(i) for i in range(instances)]
            best: dict[str, dict] = {}
            for _ in range(args.rounds):
                for route, urls in (("direct", direct), ("nginx", [cluster.url])):
                    result = saturate(urls, args.clients, args.seconds, frame)
                    print(f"  {instances} instance(s), {route}: {result['fps']:.1f} frames/s", flush=True)
                    if route not in best or result["fps"] > best[route]["fps"]:
                        best[route] = result
            rows += [(instances, route, result) for route, result in best.items()]

    print(
        f"\n{args.clients} clients, best of {args.rounds} rounds of {args.seconds:.0f} s, {cores} cores (clients on them too)\n"
    )
    print("| instances | route | frames/s | per core | p50 ms | p95 ms | errors | clients lost | nginx vs direct |")
    print("|---|---|---|---|---|---|---|---|---|")
    by_key = {(n, route): result for n, route, result in rows}
    for n, route, result in rows:
        ratio = result["fps"] / by_key[(n, "direct")]["fps"] - 1
        print(
            f"| {n} | {route} | {result['fps']:.1f} | {result['fps'] / cores:.1f} | {result['p50']:.0f} | "
            f"{result['p95']:.0f} | {result['errors']} | {result['dead']} | {'' if route == 'direct' else f'{ratio:+.1%}'} |"
        )


if __name__ == "__main__":
    main()
