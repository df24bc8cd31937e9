"""The Procfile's web command, read from the Procfile: one definition of how an instance is started, for
`deploy.cluster` and the tests' production server (the Dockerfile's CMD is checked against it by a test)."""

from __future__ import annotations

import sys
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def web_process(bind: str) -> tuple[dict[str, str], list[str]]:
    """The environment the Procfile's `web:` line sets (e.g. MALLOC_ARENA_MAX=2) and its command, run by this
    interpreter (`python -m gunicorn ...`) and bound to `bind` ("127.0.0.1:8001") instead of `$PORT`."""
    line = next(line for line in PROCFILE.read_text().splitlines() if line.startswith("web:"))
    words = line.removeprefix("web:").split()
    env = {}
    while words and "=" in words[0] and words[0].partition("=")[0].isidentifier():
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    # the one shell expansion in the line is the port of --bind
    command = [bind if "$" in word else word for word in words]
    return env, [sys.executable, "-m", *command]
