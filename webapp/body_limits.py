"""WSGI middleware that reads each request body in full, within a deadline and a size limit, before the app.

gunicorn's eventlet worker has no body timeout (`--timeout` only watches the worker's
heartbeat), so a client that sends headers and part of a body, then nothing, held its
connection for ever: 1,000 of them locked everyone else out. Chunked bodies, whose size
is unknown in advance, were cut at the limit and analysed; here they are refused.
Some paths read a body only while holding one of a few slots (the video upload, whose
jobs are capped), the others within a budget of bytes held at once (`webapp.body_budget`): a request
that finds no room is refused before its body is read. A body must
also keep up a least average rate (`MinimumRate`), so that trickling a byte a second cannot
hold a slot for the whole deadline.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from webapp.body_budget import BodiesBusy, BodyBudget
from webapp.errors import RETRY_AFTER_S, wsgi_error
from webapp.vision.budget import BusyError

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
# the environ key of the slot a body was read in (see `BodyLimits`' slots), for the app to take over
SLOT = "webapp.body_slot"
REPEATED_SLASHES = re.compile("//+")
# bodies read only to be dropped before a refusal, at once (see `BodyLimits._drop`)
MAX_DROPPING = 16


class BodyTimeout(Exception):
    """The body did not arrive before the deadline."""


@dataclass(frozen=True)
class MinimumRate:
    """The least average rate a body must keep once `grace_s` have passed (as Apache's mod_reqtimeout
    MinRate): a client declaring a large video and sending a byte a second held the one video slot for
    the whole body deadline (up to 180 s), and again at once.

    `timeout(seconds, message)`: a context manager that raises `BodyTimeout(message)` when its block
    runs past `seconds` (`webapp.concurrency.green_timeout`).
    """

    bytes_per_s: int
    timeout: Callable[[float, str], AbstractContextManager]
    grace_s: float = 5.0
    max_idle_s: float = 10.0

    def next_read(self, started: float, size: int, chunk: int) -> AbstractContextManager:
        """The time the read of `chunk` more bytes after `size` may take: until the body's average since
        `started` (a `time.monotonic()`) would fall below the rate, and `max_idle_s` at most (else 12 MB
        sent at once bought three minutes of trickling: the whole body deadline, holding the slot again)."""
        due = started + self.grace_s + (size + chunk) / self.bytes_per_s
        allowed = min(due - time.monotonic(), self.max_idle_s)
        return self.timeout(max(0.0, allowed), f"the request body came slower than {self.bytes_per_s / 1024:g} KB/s")


class BodyLimits:
    """Buffer request bodies with a deadline; answer 408, 413 or 503 (JSON) when a body breaks the limits.

    Args:
        app: the WSGI app to call with the buffered body.
        max_bytes: largest body read (the app may enforce smaller limits per route; a
            declared length over this is left to the app to refuse unread).
        deadline: `deadline()` returns a context manager that raises `BodyTimeout` when
            the body takes too long (see `webapp.concurrency.deadline`); None: no deadline.
        per_path: other limits for some paths (the video upload): {path: (max_bytes, deadline)}.
        slots: {path: reserve} for paths whose bodies are read only in a slot: `reserve()`
            returns one (a context manager, left when the app has answered; the app may take
            it over from `environ[SLOT]`), or raises `BusyError` to have the request refused
            unread (503 busy; Retry-After: the error's `retry_after_s`, else `RETRY_AFTER_S`).
        budget: the bytes of bodies held at once (`webapp.body_budget.BodyBudget`), reserved for a
            body of another path than `slots`' before it is read (its declared length; a chunked one,
            `max_bytes`) and held until the app has answered; a body it cannot take is refused unread
            (503 busy). None: no budget.
        min_rate: the least rate every body must keep (None: none).
        pause: called after each chunk read, to give the other clients a turn (`eventlet.sleep(0)`;
            None: nothing). A green socket read yields only when the socket is empty, and behind
            nginx, which sends each body whole over loopback, it never is: a 200 MB video held
            the event loop, and every live frame, for up to a second.
    """

    def __init__(
        self,
        app,
        max_bytes: int,
        deadline: Callable[[], AbstractContextManager] | None = None,
        per_path: dict[str, tuple[int, Callable[[], AbstractContextManager] | None]] | None = None,
        slots: dict[str, Callable[[], AbstractContextManager]] | None = None,
        budget: BodyBudget | None = None,
        min_rate: MinimumRate | None = None,
        pause: Callable[[], None] | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.deadline = deadline or nullcontext
        self.per_path = per_path or {}
        self.slots = slots or {}
        self.budget = budget
        self._lock = threading.Lock()  # green under eventlet, where only green threads call the middleware
        self._dropping = 0
        self.min_rate = min_rate
        self.pause = pause

    def __call__(self, environ, start_response):
        # as the router matches it: "//api/v1/analyze-video" reached the video route with a photo's
        # limits and no slot, its body then read by the route with no deadline
        path = REPEATED_SLASHES.sub("/", environ.get("PATH_INFO", ""))
        max_bytes, deadline = self.per_path.get(path, (self.max_bytes, self.deadline))
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _reply(start_response, 400, "bad_request", "Content-Length is not a number")
        if not chunked and declared <= 0:
            return self.app(environ, start_response)  # no body
        if declared > max_bytes:  # the app refuses it unread (413)
            # a photo a little too large: the client should read why. Not a video (a path with slots): up to
            # 400 MB each, read with no slot held, sixteen slow ones would hold every drain
            if declared <= 2 * max_bytes and path not in self.slots:
                self._drop(environ, declared, declared, deadline)
                environ["wsgi.input"] = io.BytesIO()
            return self.app(environ, start_response)
        try:
            slot = self._reserve(path, environ, max_bytes if chunked else declared)
        except BusyError as busy:
            if isinstance(busy, BodiesBusy):  # bodies the size of a photo's, not videos'
                self._drop(environ, None if chunked else declared, max_bytes, deadline)
            retry_after = getattr(busy, "retry_after_s", RETRY_AFTER_S)
            return _reply(start_response, 503, "busy", str(busy), [("Retry-After", str(retry_after))])
        with slot:
            refusal = _buffer(
                environ,
                None if chunked else declared,
                max_bytes,
                deadline or nullcontext,
                self.min_rate,
                self.pause,
                arrived=getattr(slot, "arrived", None),
            )
            if refusal is not None:
                retry = [("Retry-After", str(RETRY_AFTER_S))] if refusal[0] == 503 else None
                return _reply(start_response, *refusal, retry)
            return self.app(environ, start_response)

    def _drop(self, environ, length: int | None, max_bytes: int, deadline) -> None:
        """Read the body and drop it, within the same deadline and rate, before a refusal; unless its client
        waits for "100 Continue" and has sent nothing. A client still sending when the server answers and
        closes gets a reset, not the answer: 150 clients sending 10 MB photos at once, or one sending an
        11 MB photo, saw resets instead of 503 and 413. At most `MAX_DROPPING` bodies are dropped at once:
        reading 142 of them took the event loop's turns from the other clients (/healthz 95-124 ms); a
        client beyond those is refused unread."""
        with self._lock:
            if _expects_continue(environ) or self._dropping >= MAX_DROPPING:
                return
            self._dropping += 1
        try:
            _buffer(environ, length, max_bytes, deadline or nullcontext, self.min_rate, self.pause, keep=False)
        finally:
            with self._lock:
                self._dropping -= 1

    def _reserve(self, path: str, environ, size: int) -> AbstractContextManager:
        """The slot `path`'s body is read in, also put in the environ for the app; for other paths, `size`
        bytes of the budget."""
        reserve = self.slots.get(path)
        if reserve is None:
            if self.budget is None:
                return nullcontext()
            return self.budget.reserve(environ.get("REMOTE_ADDR") or "", size)
        environ[SLOT] = slot = reserve()
        return slot


def _expects_continue(environ) -> bool:
    """The client waits for "100 Continue" before it sends its body (curl does for bodies over 1 MB)."""
    return environ.get("HTTP_EXPECT", "").lower() == "100-continue"


def _buffer(
    environ,
    length: int | None,
    max_bytes: int,
    deadline,
    min_rate: MinimumRate | None = None,
    pause: Callable[[], None] | None = None,
    keep: bool = True,
    arrived: Callable[[int], None] | None = None,
) -> tuple[int, str, str] | None:
    """Put the body, read in full, in the environ (`keep`; else read and dropped); or say why not:
    (status, code, message). `arrived(n)` is told of each chunk, and may refuse the body (`BodiesBusy`:
    it gave way to another, `webapp.body_budget`)."""
    try:
        with deadline():
            body = _read(environ["wsgi.input"], length, max_bytes + 1, min_rate, pause, keep, arrived)
    except BodiesBusy as gave_way:
        log.info("request body from %s: %s", environ.get("REMOTE_ADDR"), gave_way)
        return 503, "busy", str(gave_way)
    except BodyTimeout as late:
        log.info("request body from %s: %s; connection dropped", environ.get("REMOTE_ADDR"), late)
        return 408, "timeout", str(late)
    except (OSError, ValueError):
        return 400, "bad_request", "the request body could not be read"
    if not keep:
        return None
    size = body.seek(0, io.SEEK_END)
    if size > max_bytes:
        return 413, "too_large", f"the request body exceeds {max_bytes:,} bytes"
    # a client that went away mid-body (a cancelled upload): gunicorn's reader just stops early, and a
    # truncated video still decodes up to its cut, which would start a job nobody waits for
    if length is not None and size < length:
        return 400, "incomplete_body", f"the request body ended after {size:,} of its {length:,} bytes"
    body.seek(0)
    environ["wsgi.input"] = body
    environ["CONTENT_LENGTH"] = str(size)
    del body  # the environ's reference only: a route may drop a large body once it has parsed it
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = True
    return None


def _read(
    stream,
    length: int | None,
    cap: int,
    min_rate: MinimumRate | None = None,
    pause: Callable[[], None] | None = None,
    keep: bool = True,
    arrived: Callable[[int], None] | None = None,
) -> io.BytesIO:
    """`length` bytes (or, chunked, up to `cap`) from `stream`, stopping early at end of input,
    each read timed by `min_rate` if given, `arrived(n)` and `pause()` called after each; kept in the
    buffer returned if `keep` (else it stays empty).

    Written into one growing buffer: joining a list of chunks held the body twice at the
    end, 400 MB for a 200 MB video.
    """
    want = cap if length is None else length
    body, size, started = io.BytesIO(), 0, time.monotonic()
    while size < want:
        ask = min(CHUNK, want - size)
        with min_rate.next_read(started, size, ask) if min_rate else nullcontext():
            part = stream.read(ask)
        if not part:
            break
        if arrived is not None:
            arrived(len(part))
        if keep:
            body.write(part)
        size += len(part)
        if pause is not None:
            pause()
    return body


def _reply(start_response, status: int, code: str, message: str, extra_headers: list | None = None):
    # "close" asks the server to drop the connection; gunicorn's eventlet worker drops the header and
    # the connection some 2 s later
    return wsgi_error(start_response, status, code, message, [("Connection", "close"), *(extra_headers or [])])
