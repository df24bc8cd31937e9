"""How many bytes of request bodies the server holds at once, in all and per client address.

A photo's body is held from its first byte until its answer, and photos wait their turn for the
background threads: 150 clients each sending a 10 MB photo at once took the worker from 167 MB to
3.4 GB (1,000, gunicorn's connection limit, would have taken 20 GB). A body that would take the total
over its budget is refused before it is read, with 503 and Retry-After, as a large decode is
(`webapp.vision.budget.HeavySlots`): a refused request is cheap and can be retried, an out-of-memory
worker takes every client down. One address may hold at most half of the budget, so a flood from
one client leaves room for the others' photos.

A body's declared length is reserved before it arrives, so that a body let in can always finish. A
client could then hold room it never fills: sixteen connections from two addresses, each declaring
10 MB and sending 64 KB a second, held the whole budget and had every other client's photo refused for
as long as they went on (found by review). So when a new body does not fit, bodies behind schedule give
way: those that, `grace_s` after they began, have arrived more slowly than a pace that would end them
within `schedule_s` (the body deadline). They keep what they have sent, are answered 503 at their next
chunk, and the newcomer takes their room. A client that wants to hold room must now send, and at a
pace that makes the body deadline; what it holds is then memory it has really sent.
"""

from __future__ import annotations

import threading
import time
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
        schedule_s: a body that arrives more slowly than a pace ending it within this many seconds gives
            way to a new one that does not fit (the body deadline, `BODY_TIMEOUT_S`).
        grace_s: seconds a body is given before it can be behind schedule (a connection's slow start).
        clock: the time, in seconds (`time.monotonic`).
    """

    def __init__(
        self,
        total_bytes: int,
        per_address_bytes: int,
        on_empty: Callable[[], None] | None = None,
        schedule_s: float = 15.0,
        grace_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total_bytes = total_bytes
        self.per_address_bytes = min(per_address_bytes, total_bytes)
        self.on_empty = on_empty
        self.schedule_s, self.grace_s, self.clock = schedule_s, grace_s, clock
        self._lock = threading.Lock()  # green under eventlet, where only green threads reserve
        self.held = 0
        self._by_address: dict[str, int] = {}
        self._arriving: set[_Reservation] = set()

    def reserve(self, address: str, size: int) -> _Reservation:
        """Hold `size` bytes for `address` now, until the returned context manager's block ends; its
        `arrived(n)` is told each chunk of the body as it comes.

        Raises:
            BodiesBusy: the total or the address's share would go over its budget, even with the bodies
                behind schedule given way (never waits: a client that waited would hold its connection,
                and nothing of its body is read yet).
        """
        with self._lock:
            mine = self._by_address.get(address, 0)
            if mine + size > self.per_address_bytes or self.held + size > self.total_bytes:
                self._make_room(address, size)
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
            reservation = _Reservation(self, address, size, self.clock())
            self.held += size
            self._by_address[address] = mine + size
            self._arriving.add(reservation)
        return reservation

    def _make_room(self, address: str, size: int) -> None:
        """Have bodies behind schedule, slowest first, give way until `size` more fits for `address`; none
        gives way unless that makes it fit. Called with the lock held."""
        now = self.clock()
        behind = sorted(
            (r for r in self._arriving if r.behind_schedule(now, self.schedule_s, self.grace_s)),
            key=lambda r: r.received / max(1, r.size),
        )
        held, mine, giving_way = self.held, self._by_address.get(address, 0), []
        for reservation in behind:
            total_short, share_short = held + size > self.total_bytes, mine + size > self.per_address_bytes
            if not (total_short or share_short):
                break
            if not total_short and reservation.address != address:
                continue  # only the address's own slow bodies free its share
            unsent = reservation.size - reservation.received
            held -= unsent
            if reservation.address == address:
                mine -= unsent
            giving_way.append(reservation)
        if held + size > self.total_bytes or mine + size > self.per_address_bytes:
            return
        for reservation in giving_way:
            unsent = reservation.size - reservation.received
            reservation.size -= unsent
            reservation.gave_way = True
            self._arriving.discard(reservation)
            self.held -= unsent
            self._by_address[reservation.address] -= unsent

    def _arrived(self, reservation: _Reservation, size: int) -> None:
        with self._lock:
            if reservation.gave_way:
                raise BodiesBusy(
                    "the server needed the room this request held for other requests, and its body came too "
                    "slowly to finish in time; retry on a faster connection"
                )
            reservation.received += size
            if reservation.received >= reservation.size:
                self._arriving.discard(reservation)

    def _release(self, reservation: _Reservation) -> None:
        with self._lock:
            self._arriving.discard(reservation)
            self.held -= reservation.size
            left = self._by_address[reservation.address] - reservation.size
            if left:
                self._by_address[reservation.address] = left
            else:
                del self._by_address[reservation.address]
            drained = self.held == 0
        if drained and self.on_empty is not None:
            self.on_empty()


class _Reservation(AbstractContextManager):
    """Bytes held in a `BodyBudget`, given back when the `with` block ends (once)."""

    def __init__(self, budget: BodyBudget, address: str, size: int, started: float):
        self._budget, self.address, self.size, self.started = budget, address, size, started
        self.received = 0
        self.gave_way = False
        self._held = True

    def arrived(self, size: int) -> None:
        """`size` more bytes of the body came in.

        Raises:
            BodiesBusy: this body gave way to another (it was behind schedule when room was needed).
        """
        self._budget._arrived(self, size)

    def behind_schedule(self, now: float, schedule_s: float, grace_s: float) -> bool:
        """Whether the body, `grace_s` or more after it began, has come more slowly than a pace that ends it
        within `schedule_s`."""
        elapsed = now - self.started
        return elapsed >= grace_s and self.received < self.size * min(1.0, elapsed / schedule_s)

    def __exit__(self, *_) -> None:
        if self._held:
            self._held = False
            self._budget._release(self)
