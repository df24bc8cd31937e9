"""The Procfile's web command, read from the Procfile: one definition of how an instance is started, for
`deploy.cluster` and the tests' production server (the Dockerfile's CMD is checked against it by a test)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
# the one shell expansion the web line may hold: the port, in gunicorn's --bind
_BIND = re.compile(r"^(--bind=)?[^\s$]*:\$(\{PORT(:-\d+)?\}|PORT)$")


def web_process(bind: str) -> tuple[dict[str, str], list[str]]:
    """The environment the Procfile's `web:` line sets (e.g. MALLOC_ARENA_MAX=2) and its command, run by this
    interpreter (`python -m gunicorn ...`) and bound to `bind` ("127.0.0.1:8001") instead of `$PORT`.

    Raises:
        ValueError: the line is not `[NAME=value ...] gunicorn ... --bind HOST:$PORT ...`.
    """
    line = next(line for line in PROCFILE.read_text().splitlines() if line.startswith("web:"))
    words = shlex.split(line.removeprefix("web:"), comments=True)
    env = {}
    while words and "=" in words[0] and words[0].partition("=")[0].isidentifier():
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    expansions = [i for i, word in enumerate(words) if "$" in word]
    bound = _BIND.match(words[expansions[0]]) if len(expansions) == 1 else None
    if not words or words[0] != "gunicorn" or bound is None:
        raise ValueError(f"the Procfile's web line is not 'gunicorn ... --bind HOST:$PORT ...': {line!r}")
    words[expansions[0]] = (bound.group(1) or "") + bind
    return env, [sys.executable, "-m", *words]
