"""The server's concurrency in one place: eventlet under the Procfile's gunicorn, threads under `python -m webapp`.

`ASYNC_MODE` (set by the entry point: `webapp.wsgi` or `webapp.__main__`) decides how
model calls leave the event loop and which locks guard them. The Flask-free core knows
nothing of eventlet: it takes the locks made here.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable
from contextlib import contextmanager

from flask import current_app

ASYNC_MODES = ("threading", "eventlet")


def lock_factory(async_mode: str) -> Callable[[], threading.Lock]:
    """What makes the locks that guard model calls in `async_mode`.

    Under eventlet, `threading.Lock` is patched into a green lock, which deadlocks when
    contended from eventlet's native thread pool, where inference runs; the original,
    unpatched lock works from both kinds of thread.
    """
    if async_mode == "eventlet":
        from eventlet import patcher

        return patcher.original("threading").Lock
    return threading.Lock


def pipeline(kind: str):
    """The app's pipeline for "stream" (live frames) or "image" (uploads)."""
    return current_app.extensions["pipelines"][kind]


def run_blocking(function, *args):
    """Call `function(*args)`; under eventlet, in a native thread so other clients keep being served.

    TensorFlow Lite and OpenCV release the GIL but are invisible to eventlet's
    scheduler: called directly, they would stall every green thread for the duration.
    """
    if current_app.config["ASYNC_MODE"] == "eventlet":
        from eventlet import tpool

        return tpool.execute(function, *args)
    return function(*args)


def off_the_event_loop(async_mode: str, function: Callable[[], None]) -> Callable[[], None]:
    """`function` as a call that, under eventlet, runs on a native thread: the calling green thread waits for
    it, the others go on (glibc's `malloc_trim` took 13-28 ms on a fragmented heap). Elsewhere `function`."""
    if async_mode != "eventlet":
        return function

    def call() -> None:
        from eventlet import tpool

        tpool.execute(function)

    return call


def without_waiting(async_mode: str, function: Callable[[], None]) -> Callable[[], None]:
    """`function` as a call that returns at once, `function` running on a thread of its own (under eventlet a
    native one), one run at a time: a call while one runs is skipped, that run serves for it. The body budget
    gives memory back this way as the last body it holds goes: called inline, every answer that emptied the
    budget waited for `malloc_trim` (13-28 ms on a fragmented heap) before it went out."""
    running = threading.Lock()
    native = off_the_event_loop(async_mode, function)

    def run() -> None:
        try:
            native()
        finally:
            running.release()

    def call() -> None:
        if not running.acquire(blocking=False):
            return
        try:
            if async_mode == "eventlet":
                import eventlet

                eventlet.spawn_n(run)
            else:
                threading.Thread(target=run, name="give-memory-back", daemon=True).start()
        except BaseException:
            running.release()
            raise

    return call


def run_in_background(function, *args, turn: str = ""):
    """Call `function(*args)` on one of the app's background threads (`webapp.background`): photos and
    video jobs, which give the CPU to the live frames whenever both want it. Calls queued there take turns
    by `turn` (the client's address)."""
    return current_app.extensions["background"].run(function, *args, turn=turn)


@contextmanager
def on_hang_up(environ: dict, hang_up: Callable[[], None]):
    """Call `hang_up()` if the request's client closes its connection while the block runs (under eventlet
    and gunicorn, which hands the app the client's socket); elsewhere nothing.

    The request's body has been read by then, so the connection turns readable only when the client sends
    again (a pipelined request: then nothing is done) or goes away (an empty read): a green thread waits for
    that, and the block's end stops it before the reply is written.
    """
    client = environ.get("gunicorn.socket")
    if client is None or current_app.config["ASYNC_MODE"] != "eventlet":
        yield
        return
    import eventlet

    def watch() -> None:
        try:
            sent = client.recv(1, socket.MSG_PEEK)  # green: waits until the client sends or closes
        except ValueError:  # a TLS socket (gunicorn --certfile) cannot peek: no watch
            return
        except OSError:
            sent = b""
        if not sent:
            hang_up()

    watcher = eventlet.spawn(watch)
    try:
        yield
    finally:
        watcher.kill()


def fast_apply_mask(data, mask, length=None, offset=0) -> bytes:
    """Drop-in for eventlet's `RFC6455WebSocket._apply_mask`: XOR `data[:length]` with the 4-byte `mask`.

    Clients mask every frame they send (RFC 6455), and eventlet unmasks in a Python
    loop, one byte at a time: a 40 KB JPEG frame took ~40 ms to read before the
    pipeline even started. This XORs the whole payload as one big integer instead.
    """
    if length is None:
        length = len(data)
    if length == 0:
        return b""
    key = bytes(mask[(offset + i) % 4] for i in range(4))
    stream = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(bytes(data[:length]), "little") ^ int.from_bytes(stream, "little")).to_bytes(
        length, "little"
    )


# a WebSocket read of at least this many bytes lets other clients go first before the next
YIELD_AFTER_BYTES = 16 * 1024


def speed_up_eventlet_websocket() -> None:
    """Replace eventlet's byte-by-byte WebSocket unmasking with `fast_apply_mask`, and yield to the
    other green threads after each large chunk unmasked.

    eventlet reads a message's chunks for as long as the socket has data, without yielding: a client
    pushing 100 MB of messages kept every other client (and /healthz) waiting up to 0.3 s on a busy
    machine. Each received chunk passes through here, so it is where the reader can give way.
    """
    import eventlet
    from eventlet.websocket import RFC6455WebSocket

    def apply_mask_and_yield(data, mask, length=None, offset=0) -> bytes:
        unmasked = fast_apply_mask(data, mask, length, offset)
        if len(unmasked) >= YIELD_AFTER_BYTES:
            eventlet.sleep(0)
        return unmasked

    RFC6455WebSocket._apply_mask = staticmethod(apply_mask_and_yield)


def green_timeout(async_mode: str):
    """What bounds a socket read in time: `timeout(seconds, message)`, a context manager that raises
    `BodyTimeout(message)` when its block runs past `seconds`, under eventlet; None otherwise.

    Under eventlet every socket read yields to the hub, so an `eventlet.Timeout` interrupts
    a read that waits for a client that sends nothing. The threaded development server
    has no such hook; it is not meant to face the internet.
    """
    if async_mode != "eventlet":
        return None
    import eventlet

    from webapp.body_limits import BodyTimeout

    @contextmanager
    def timeout(seconds: float, message: str):
        timer = eventlet.Timeout(seconds)
        try:
            yield
        except eventlet.Timeout as expired:
            if expired is not timer:
                raise
            raise BodyTimeout(message) from None
        finally:
            timer.cancel()

    return timeout


def green_pause(async_mode: str) -> Callable[[], None] | None:
    """What gives the other green threads a turn in a loop that never waits (`eventlet.sleep(0)`);
    None where threads are preempted anyway."""
    if async_mode != "eventlet":
        return None
    import eventlet

    return lambda: eventlet.sleep(0)


def body_deadline(async_mode: str, seconds: float):
    """What `BodyLimits` reads request bodies under: a green timeout of `seconds` to 1.5 x `seconds` under eventlet,
    None (no deadline) otherwise."""
    timeout = green_timeout(async_mode)
    if timeout is None:
        return None

    def deadline():
        # up to 50% later at random: a thousand bodies that stall together must not all time out in
        # one tick of the event loop (that stalled every other client for 200 ms)
        return timeout(seconds * (1 + 0.5 * random.random()), "the request body did not arrive in time")

    return deadline
