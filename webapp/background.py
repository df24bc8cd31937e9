"""Photos and video jobs run on threads of lower CPU priority, so the live frames go first.

A flood of group photos took both cores from the live stream: its p95 round trip rose from 14 ms to
55-61 ms (`python -m bench.abuse_bench --photo-flood`). Linux keeps a nice value per thread, and a thread
starts with its creator's, so work run here, and the interpreters built here (whose worker threads are
made with them), give the CPU to the live frames whenever both want it and take all of it otherwise.
Raising one's own nice value needs no privilege; lowering it again does, so these threads stay niced
and the live frames keep eventlet's thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# seconds an idle thread waits for work before it ends (a new one starts when work comes)
IDLE_EXIT_S = 30.0


def lower_this_threads_priority(nice: int) -> None:
    """Add `nice` to the calling thread's nice value, on Linux; elsewhere nothing (it would be the process's)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        # on Linux, "process" 0 is the calling thread
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    except OSError as error:  # a sandbox that forbids it: the work still runs, at the usual priority
        log.warning("could not lower a background thread's priority: %s", error)


class BackgroundThreads:
    """Up to `workers` native threads at nice `nice` run blocking calls in the order they come.

    Args:
        workers: threads at most; calls beyond them wait their turn.
        nice: how much lower than the server's their priority is, 0-19 (0: the same).
        green: the callers are eventlet green threads, which must wait without blocking the event loop.
    """

    def __init__(self, workers: int, nice: int, green: bool):
        self.workers = workers
        self.nice = nice
        self.green = green
        self._start_afresh()

    def _start_afresh(self) -> None:
        """No threads and an empty queue: at creation, and in a forked child, which inherits the counts
        and the queue but none of the threads (gunicorn --preload)."""
        native = _native_modules() if self.green else (threading, queue)
        self._pid = os.getpid()
        self._thread_class = native[0].Thread
        self._tasks = TakingTurns(native[0])
        self._no_task = queue.Empty
        self._lock = native[0].Lock()
        # threads running, those of them waiting for work, and calls queued that no thread has taken yet
        self._threads = self._idle = self._queued = 0
        self._new_waiter = green_waker().waiter if self.green else _ThreadWaiter

    def run(self, function: Callable, *args, turn: str = ""):
        """`function(*args)` on a background thread: its result, or the exception it raised.

        Calls wait their turn by `turn` (a client's address): one call of each turn in rotation, so that a
        client that sends sixty photos at once does not make another's one photo wait behind all of them.
        """
        if os.getpid() != self._pid:
            self._start_afresh()
        waiter = self._new_waiter()
        self._tasks.put(turn, (function, args, waiter))
        self._start_a_thread_if_none_is_free()
        return waiter.outcome()

    def _start_a_thread_if_none_is_free(self) -> None:
        with self._lock:
            self._queued += 1
            # more calls queued than threads waiting: two calls that come together must not count on one
            # idle thread, or the second waits for the first, a whole video behind which a photo would wait
            if self._queued <= self._idle or self._threads >= self.workers:
                return
            self._threads += 1
        self._thread_class(target=self._work, name="moodlens-background", daemon=True).start()

    def _work(self) -> None:
        lower_this_threads_priority(self.nice)
        while True:
            with self._lock:
                self._idle += 1
            try:
                function, args, waiter = self._tasks.get(timeout=IDLE_EXIT_S)
            except self._no_task:
                with self._lock:
                    self._idle -= 1
                    if self._queued <= self._idle:  # no call queued counts on this thread: it ends
                        self._threads -= 1
                        return
                continue  # a call came as the wait ended, counting on this thread
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            try:
                outcome = (True, function(*args))
            except BaseException as error:  # handed to the caller, who raises it
                outcome = (False, error)
            del function, args  # a photo's bytes must not live on in an idle thread
            waiter.done(outcome)
            del waiter, outcome


class TakingTurns:
    """A queue whose items are taken by turn: the oldest item of each turn in rotation, a turn that put
    more going to the back of the line each time.

    Args:
        threading_module: `threading` as the callers' threads need it (the original, unpatched one
            under eventlet: workers are native threads).
    """

    def __init__(self, threading_module):
        self._ready = threading_module.Condition(threading_module.Lock())
        self._turns: OrderedDict[str, deque] = OrderedDict()

    def put(self, turn: str, item) -> None:
        with self._ready:
            self._turns.setdefault(turn, deque()).append(item)
            self._ready.notify()

    def get(self, timeout: float):
        """The next item, waiting up to `timeout` seconds for one.

        Raises:
            queue.Empty: none came in time.
        """
        with self._ready:
            if not self._ready.wait_for(lambda: self._turns, timeout):
                raise queue.Empty
            turn, items = self._turns.popitem(last=False)
            item = items.popleft()
            if items:
                self._turns[turn] = items
            return item


def _native_modules():
    """`threading` and `queue` as they were before eventlet patched them: real threads and their queues."""
    from eventlet import patcher

    return patcher.original("threading"), patcher.original("queue")


def _unpacked(outcome):
    succeeded, value = outcome
    if succeeded:
        return value
    raise value


class _ThreadWaiter:
    """How a real thread waits for its call."""

    def __init__(self):
        self._event = threading.Event()
        self._outcome = None

    def done(self, outcome) -> None:
        self._outcome = outcome
        self._event.set()

    def outcome(self):
        self._event.wait()
        return _unpacked(self._outcome)


_waker = None


def green_waker() -> _GreenWaker:
    """The process's one waker: one pipe and one green thread serve every `BackgroundThreads` (a new one
    after a fork, whose pipe the parent would share)."""
    global _waker
    if _waker is None or _waker.pid != os.getpid():
        _waker = _GreenWaker(_native_modules())
    return _waker


class _GreenWaker:
    """How green threads wait for calls run on native threads: eventlet's hub is not thread-safe, so a
    native thread queues the outcome and writes a byte to a pipe, and one green thread, woken by the
    pipe, hands each outcome to its waiter (as eventlet's own thread pool does)."""

    def __init__(self, native):
        from eventlet import patcher

        self.pid = os.getpid()
        # eventlet's green os.write waits on a hub: called from a native thread, it made a hub (an epoll
        # descriptor, never closed) in each thread that wrote
        self._os = patcher.original("os")
        self._native_queue = native[1]
        self._finished = native[1].SimpleQueue()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self._dispatcher = None

    def waiter(self):
        from eventlet.event import Event

        if self._dispatcher is None or self._dispatcher.dead:
            import eventlet

            self._dispatcher = eventlet.spawn(self._dispatch)
        return _GreenWaiter(Event(), self)

    def wake(self, event, outcome) -> None:
        """From a native thread: `event` has its outcome."""
        self._finished.put((event, outcome))
        self._os.write(self._write, b"\0")

    def _dispatch(self) -> None:
        from eventlet.hubs import trampoline

        while True:
            trampoline(self._read, read=True)
            with contextlib.suppress(BlockingIOError):  # another wake-up read it
                self._os.read(self._read, 4096)
            while True:
                try:
                    event, outcome = self._finished.get_nowait()
                except self._native_queue.Empty:
                    break
                event.send(outcome)


class _GreenWaiter:
    def __init__(self, event, waker: _GreenWaker):
        self._event = event
        self._waker = waker

    def done(self, outcome) -> None:
        self._waker.wake(self._event, outcome)

    def outcome(self):
        return _unpacked(self._event.wait())
