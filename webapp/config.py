"""Settings from environment variables, with safe defaults for development."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from webapp.concurrency import ASYNC_MODES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# int8 answers as float16 does on val (0.6851 vs 0.6846) at a third of the time: bench/accuracy_bench.py
DEFAULT_MODEL = PROJECT_ROOT / "models" / "emotion_int8.tflite"


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


def from_env() -> dict:
    """Read the app's settings from the environment (see README, Configuration)."""
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(16),
        "MODEL_PATH": os.environ.get("MODEL_PATH") or str(DEFAULT_MODEL),
        # full range + a short-range pass for close-ups: bench/detection_bench.py, bench/RESULTS.md
        "DETECTOR": os.environ.get("DETECTOR", "blazeface-auto"),
        "UPLOAD_DETECTOR": os.environ.get("UPLOAD_DETECTOR", "blazeface-auto"),
        "MAX_UPLOAD_MB": _int("MAX_UPLOAD_MB", 10),
        "MAX_FRAME_KB": _int("MAX_FRAME_KB", 1024),
        "MAX_PIXELS": _int("MAX_PIXELS", 40_000_000),
        "MAX_FACES": _int("MAX_FACES", 10),
        "MAX_FPS_PER_CLIENT": _int("MAX_FPS_PER_CLIENT", 60),
        "FLIP_TTA": _bool("FLIP_TTA", True),
        "CORS_ALLOWED_ORIGINS": os.environ.get("CORS_ALLOWED_ORIGINS") or None,
        # several instances behind a proxy share Socket.IO emits through it (e.g. redis://localhost:6379/0)
        "MESSAGE_QUEUE": os.environ.get("MESSAGE_QUEUE") or None,
        # names this instance in /healthz, so a proxy's health checks and logs can tell instances apart
        "INSTANCE": os.environ.get("INSTANCE") or f"{socket.gethostname()}:{os.getpid()}",
        # how the server runs concurrent clients; the entry point sets it (webapp.wsgi: eventlet)
        "ASYNC_MODE": "threading",
    }


def check(config: dict) -> None:
    """Fail fast at start-up on settings that cannot work.

    Raises:
        ValueError: a limit is not positive, or ASYNC_MODE is unknown.
    """
    if config["ASYNC_MODE"] not in ASYNC_MODES:
        raise ValueError(f"ASYNC_MODE must be one of {', '.join(ASYNC_MODES)}, got {config['ASYNC_MODE']!r}")
    for key in ("MAX_UPLOAD_MB", "MAX_FRAME_KB", "MAX_PIXELS", "MAX_FACES", "MAX_FPS_PER_CLIENT"):
        if int(config[key]) <= 0:
            raise ValueError(f"{key} must be positive, got {config[key]}")
    if config.get("PIPELINES") is None and not Path(config["MODEL_PATH"]).is_file():
        raise ValueError(f"MODEL_PATH {config['MODEL_PATH']!r} does not exist; see models/README.md")
