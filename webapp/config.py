"""Settings from environment variables, with safe defaults for development."""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
from pathlib import Path

from webapp.concurrency import ASYNC_MODES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# int8: float16's accuracy on val to 0.3 points, 3-6 times faster (bench/accuracy_bench.py, bench/RESULTS.md)
DEFAULT_MODEL = PROJECT_ROOT / "models" / "emotion_int8.tflite"


class SettingsError(ValueError):
    """A setting that cannot work; the message names it. The server does not start."""


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SettingsError(f"environment variable {name} must be an integer, got {value!r}") from None


def _optional_bool(name: str) -> bool | None:
    """1/true/yes/on or 0/false/no/off; None when unset, empty or "auto" (the setting's own default)."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value in ("1", "true", "yes", "on")
    raise SettingsError(
        f"environment variable {name} must be 1, true, yes, on, 0, false, no, off, auto or unset; got {value!r}"
    )


def _origins(name: str) -> list[str] | str | None:
    """Origins separated by commas or spaces; "*" for any; None (same origin only) when unset."""
    origins = os.environ.get(name, "").replace(",", " ").split()
    return "*" if origins == ["*"] else origins or None


def from_env() -> dict:
    """Read the app's settings from the environment (see README, Configuration)."""
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(16),
        "MODEL_PATH": os.environ.get("MODEL_PATH") or str(DEFAULT_MODEL),
        # full range + a short-range pass for close-ups: bench/detection_bench.py, bench/RESULTS.md
        "DETECTOR": os.environ.get("DETECTOR", "blazeface-auto"),
        # photos: the same, plus tiles for small faces in large photos (a group photo's): 0.08-0.2 s more
        "UPLOAD_DETECTOR": os.environ.get("UPLOAD_DETECTOR", "blazeface-tiled"),
        "MAX_UPLOAD_MB": _int("MAX_UPLOAD_MB", 10),
        "MAX_FRAME_KB": _int("MAX_FRAME_KB", 1024),
        "MAX_PIXELS": _int("MAX_PIXELS", 40_000_000),
        "MAX_FACES": _int("MAX_FACES", 10),
        "UPLOAD_MAX_FACES": _int("UPLOAD_MAX_FACES", 50),
        # video uploads (/api/v1/analyze-video): body size, declared or decoded length, jobs running at once
        "MAX_VIDEO_MB": _int("MAX_VIDEO_MB", 200),
        "MAX_VIDEO_SECONDS": _int("MAX_VIDEO_SECONDS", 600),
        "MAX_VIDEO_JOBS": _int("MAX_VIDEO_JOBS", 1),
        # a video body's deadline: 200 MB in 15 s would take 110 Mbit/s; 120 s takes 14
        "VIDEO_BODY_TIMEOUT_S": _int("VIDEO_BODY_TIMEOUT_S", 120),
        "VIDEO_POLL_TIMEOUT_S": _int("VIDEO_POLL_TIMEOUT_S", 30),
        "MAX_FPS_PER_CLIENT": _int("MAX_FPS_PER_CLIENT", 60),
        # bytes of request bodies (photos, polling frames; videos have their slots) held at once, half of
        # it at most by one client address; more are refused unread with 503 until answers free room
        "MAX_HELD_BODIES_MB": _int("MAX_HELD_BODIES_MB", 160),
        # width x height x channels x bytes per sample: a 311 KB PNG can declare 320 MB of 16-bit RGBA
        "MAX_DECODE_MB": _int("MAX_DECODE_MB", 100),
        # images over HEAVY_DECODE_MB decoded are analysed at most MAX_HEAVY_ANALYSES at once; others get 503 busy
        "HEAVY_DECODE_MB": _int("HEAVY_DECODE_MB", 24),
        "MAX_HEAVY_ANALYSES": _int("MAX_HEAVY_ANALYSES", 2),
        # a request body must arrive within this many seconds (production server), or the connection is dropped
        "BODY_TIMEOUT_S": _int("BODY_TIMEOUT_S", 15),
        # and, after its first 5 s, at this average rate at least (0: none): 512 kbit/s, a slow phone uplink
        "MIN_BODY_KBPS": _int("MIN_BODY_KBPS", 64),
        # photos and video jobs run this much lower in CPU priority than live frames (0-19; 0: the same). 10
        # starved them, and through the GIL the live frames too, on a host whose cores other processes kept busy
        "BACKGROUND_NICE": _int("BACKGROUND_NICE", 5),
        # Engine.IO sessions open at once per client address (0: no cap); abandoned ones expire in ~15 s
        "MAX_SESSIONS_PER_ADDRESS": _int("MAX_SESSIONS_PER_ADDRESS", 20),
        # 1 / 0 override the model file; unset or "auto": as the file says (training.export --flip-tta),
        # on for files that do not say; anything else is refused at start-up
        "FLIP_TTA": _optional_bool("FLIP_TTA"),
        # the origins the Socket.IO server accepts besides its own; one string would be taken as one origin
        "CORS_ALLOWED_ORIGINS": _origins("CORS_ALLOWED_ORIGINS"),
        # several instances behind a proxy share Socket.IO emits through it (e.g. redis://localhost:6379/0)
        "MESSAGE_QUEUE": os.environ.get("MESSAGE_QUEUE") or None,
        # proxies in front that set X-Forwarded-For (deploy/: nginx = 1); the client address, for
        # per-address limits, is then taken from that header instead of the proxy's own address
        "TRUSTED_PROXIES": _int("TRUSTED_PROXIES", 0),
        # names this instance in /healthz, so a proxy's health checks and logs can tell instances apart
        "INSTANCE": os.environ.get("INSTANCE") or f"{socket.gethostname()}:{os.getpid()}",
        # how the server runs concurrent clients; the entry point sets it (webapp.wsgi: eventlet)
        "ASYNC_MODE": "threading",
    }


# settings that must be above 0
POSITIVE_SETTINGS = (
    "MAX_UPLOAD_MB",
    "MAX_FRAME_KB",
    "MAX_PIXELS",
    "MAX_FACES",
    "UPLOAD_MAX_FACES",
    "MAX_FPS_PER_CLIENT",
    "MAX_HELD_BODIES_MB",
    "MAX_DECODE_MB",
    "HEAVY_DECODE_MB",
    "MAX_HEAVY_ANALYSES",
    "BODY_TIMEOUT_S",
    "MAX_VIDEO_MB",
    "MAX_VIDEO_SECONDS",
    "MAX_VIDEO_JOBS",
    "VIDEO_BODY_TIMEOUT_S",
    "VIDEO_POLL_TIMEOUT_S",
)

# a file of exactly MAX_UPLOAD_MB (or MAX_VIDEO_MB) comes inside a multipart form's few hundred bytes of headers
FORM_SLACK_BYTES = 16 * 1024


def body_limit(megabytes: int) -> int:
    """The largest request body that carries a file of `megabytes` MB: the file and its form."""
    return megabytes * 1024 * 1024 + FORM_SLACK_BYTES


# settings where 0 means something: {name: what 0 means}
ZERO_ALLOWED_SETTINGS = {
    "TRUSTED_PROXIES": "no proxy",
    "MAX_SESSIONS_PER_ADDRESS": "no cap",
    "MIN_BODY_KBPS": "no minimum",
    "BACKGROUND_NICE": "the live frames' priority",
}


def check(config: dict) -> None:
    """Fail fast at start-up on settings that cannot work.

    Raises:
        SettingsError: a limit is not positive, ASYNC_MODE or a detector is unknown, or the model is missing.
    """
    if config["ASYNC_MODE"] not in ASYNC_MODES:
        raise SettingsError(f"ASYNC_MODE must be one of {', '.join(ASYNC_MODES)}, got {config['ASYNC_MODE']!r}")
    for key in POSITIVE_SETTINGS:
        if int(config[key]) <= 0:
            raise SettingsError(f"{key} must be positive, got {config[key]}")
    for key, zero in ZERO_ALLOWED_SETTINGS.items():
        if int(config[key]) < 0:
            raise SettingsError(f"{key} must be 0 ({zero}) or more, got {config[key]}")
    largest_mb = max(int(config["MAX_UPLOAD_MB"]), -(-int(config["MAX_FRAME_KB"]) // 1024))
    if int(config["MAX_HELD_BODIES_MB"]) < 2 * (largest_mb + 1):
        raise SettingsError(
            f"MAX_HELD_BODIES_MB must be at least {2 * (largest_mb + 1)}: one client's half of it must hold "
            f"the largest photo or frame (MAX_UPLOAD_MB, MAX_FRAME_KB) with its form, got {config['MAX_HELD_BODIES_MB']}"
        )
    if int(config["BACKGROUND_NICE"]) > 19:
        raise SettingsError(f"BACKGROUND_NICE must be at most 19, got {config['BACKGROUND_NICE']}")
    if config.get("PIPELINES") is not None:
        return
    if not Path(config["MODEL_PATH"]).is_file():
        raise SettingsError(f"MODEL_PATH {config['MODEL_PATH']!r} does not exist; see models/README.md")
    if Path(config["MODEL_PATH"]).suffix != ".tflite" and importlib.util.find_spec("keras") is None:
        raise SettingsError(
            f"MODEL_PATH {config['MODEL_PATH']!r} is a Keras model, which needs TensorFlow: "
            "pip install -r requirements-train.txt, or serve a .tflite (python -m training.export)"
        )
    from webapp.vision.detector import DETECTOR_NAMES

    for key in ("DETECTOR", "UPLOAD_DETECTOR"):
        if config[key] not in DETECTOR_NAMES:
            raise SettingsError(f"{key} must be one of {', '.join(DETECTOR_NAMES)}, got {config[key]!r}")
