"""Memory limits of decoding: how many bytes one image may take, and how many large ones decode at once."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    """What one untrusted image may cost.

    Args:
        max_pixels: width x height, from the header (decompression bombs).
        max_bytes: width x height x channels x bytes per sample as declared; a small file
            can declare a 16-bit RGBA canvas of hundreds of megabytes.
        draft_side: JPEGs whose longer side exceeds this are decoded at 1/2, 1/4 or 1/8
            scale (never below it): faces do not need 40 MP, and the detectors see at
            most a few hundred pixels anyway.
    """

    max_pixels: int = 40_000_000
    max_bytes: int = 100 * MB
    draft_side: int = 2048


class BusyError(Exception):
    """All slots for large images are taken; the client should retry shortly."""


class HeavySlots:
    """At most `limit` analyses of images over `threshold_bytes` at once; smaller ones always pass.

    Concurrent large decodes add up: ten 400 MB decodes at once took the worker to
    8 GB. A refused request is cheap and can be retried; an out-of-memory worker
    takes every client down.

    Args:
        limit: large analyses allowed at once.
        threshold_bytes: decoded size from which an image counts as large.
        lock: a lock usable from every thread that analyses (see `webapp.concurrency.lock_factory`).
    """

    def __init__(self, limit: int = 2, threshold_bytes: int = 24 * MB, lock=None):
        self.limit = limit
        self.threshold_bytes = threshold_bytes
        self._lock = lock or threading.Lock()
        self.in_use = 0

    @contextmanager
    def hold(self, decoded_bytes: int) -> Iterator[None]:
        """Hold a slot while the block runs, if `decoded_bytes` makes the image large.

        Raises:
            BusyError: every slot is taken (never waits: a waiting request still holds its body).
        """
        if decoded_bytes < self.threshold_bytes:
            yield
            return
        with self._lock:
            if self.in_use >= self.limit:
                raise BusyError(f"{self.limit} large images are being analysed; retry in a second")
            self.in_use += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
                last = self.in_use == 0
            if last:
                release_free_memory()


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand memory freed by large decodes back to the system (glibc's `malloc_trim`; elsewhere nothing).

    glibc keeps freed heap pages for reuse; after a burst of large images the worker
    held hundreds of MB it no longer used, even with MALLOC_ARENA_MAX=2.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
