"""How many bytes of request bodies the server holds at once, in all and per client address.

A photo's body is held from its first byte until its answer, and photos wait their turn for the
background threads: 150 clients each sending a 10 MB photo at once took the worker from 167 MB to
3.4 GB (1,000, gunicorn's connection limit, would have taken 20 GB). A body that would take the total
over its budget is refused before it is read, with 503 and Retry-After, as a large decode is
(`webapp.vision.budget.HeavySlots`): a refused request is cheap and can be retried, an out-of-memory
worker takes every client down. One address may hold at most half of the budget, so a flood from
one client leaves room for the others' photos.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from webapp.vision.budget import MB, BusyError


class BodiesBusy(BusyError):
    """The budget cannot take this body now; others' answers will free it shortly."""


class BodyBudget:
    """Reserve a body's bytes for as long as its request is served.

    Args:
        total_bytes: bytes of bodies held at once, from every client.
        per_address_bytes: bytes one client address may hold at once (at most `total_bytes`).
        on_empty: called when the last reservation ends (the memory freed can go back to the system).
    """

    def __init__(self, total_bytes: int, per_address_bytes: int, on_empty: Callable[[], None] | None = None):
        self.total_bytes = total_bytes
        self.per_address_bytes = min(per_address_bytes, total_bytes)
        self.on_empty = on_empty
        self._lock = threading.Lock()  # green under eventlet, where only green threads reserve
        self.held = 0
        self._by_address: dict[str, int] = {}

    def reserve(self, address: str, size: int) -> AbstractContextManager:
        """Hold `size` bytes for `address` now, until the returned context manager's block ends.

        Raises:
            BodiesBusy: the total or the address's share would go over its budget (never waits: a
                client that waited would hold its connection, and nothing of its body is read yet).
        """
        with self._lock:
            mine = self._by_address.get(address, 0)
            if mine + size > self.per_address_bytes:
                raise BodiesBusy(
                    f"this address already has {mine / MB:.0f} MB of requests being served (at most "
                    f"{self.per_address_bytes / MB:.0f} MB at once); retry when one is answered"
                )
            if self.held + size > self.total_bytes:
                raise BodiesBusy(
                    f"the server holds {self.held / MB:.0f} MB of requests (at most "
                    f"{self.total_bytes / MB:.0f} MB at once); retry in a second"
                )
            self.held += size
            self._by_address[address] = mine + size
        return _Reservation(self, address, size)

    def _release(self, address: str, size: int) -> None:
        with self._lock:
            self.held -= size
            left = self._by_address[address] - size
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]
            drained = self.held == 0
        if drained and self.on_empty is not None:
            self.on_empty()


class _Reservation(AbstractContextManager):
    """Bytes held in a `BodyBudget`, given back when the `with` block ends (once)."""

    def __init__(self, budget: BodyBudget, address: str, size: int):
        self._budget, self._address, self._size = budget, address, size
        self._held = True

    def __exit__(self, *_) -> None:
        if self._held:
            self._held = False
            self._budget._release(self._address, self._size)
