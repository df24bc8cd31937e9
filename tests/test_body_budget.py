"""The bytes of request bodies held at once (`webapp.body_budget`): the budget alone, inside `BodyLimits`,
and a flood of photos against the Procfile's server."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import time
from contextlib import nullcontext

import pytest

from tests import abuse
from tests.harness import ReadWatcher, noise_jpeg, start_production_server, stop_production_server, worker_pid
from webapp.body_budget import BodiesBusy, BodyBudget
from webapp.body_limits import BodyLimits

VIDEO_API = "/api/v1/analyze-video"


def test_the_budget_bounds_the_total_and_each_address_and_frees_on_exit():
    emptied = []
    budget = BodyBudget(total_bytes=100, per_address_bytes=60, on_empty=lambda: emptied.append(1))
    first = budget.reserve("a", 50)
    with pytest.raises(BodiesBusy, match="this address already has"):
        budget.reserve("a", 20)  # 70 > the address's 60
    second = budget.reserve("b", 45)
    with pytest.raises(BodiesBusy, match="the server holds"):
        budget.reserve("c", 10)  # 105 > the total's 100
    assert budget.held == 95
    with first:
        pass
    assert budget.held == 45 and not emptied
    with second:
        pass
    with second:  # a reservation is given back once
        pass
    assert budget.held == 0 and emptied == [1]
    with budget.reserve("a", 60):  # all of an address's share is usable again
        assert budget.held == 60


def test_an_address_share_is_never_more_than_the_total():
    budget = BodyBudget(total_bytes=10, per_address_bytes=50)
    assert budget.per_address_bytes == 10


def limited(budget: BodyBudget, seen: list) -> BodyLimits:
    def app(environ, start_response):
        seen.append(budget.held)  # held while the app answers (a photo waiting for a thread, then analysed)
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    return BodyLimits(app, 1000, budget=budget, slots={VIDEO_API: lambda: io.BytesIO()})


def call(limits: BodyLimits, body: io.BytesIO, path: str = "/api/v1/analyze", address: str = "10.0.0.1", **environ):
    status = {}
    environ = {
        "PATH_INFO": path,
        "REMOTE_ADDR": address,
        "CONTENT_LENGTH": str(len(body.getbuffer())),
        "wsgi.input": body,
        **environ,
    }
    reply = b"".join(limits(environ, lambda line, headers: status.update(line=line, headers=dict(headers))))
    return status["line"], status["headers"], reply


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def clocked_budget(total_bytes: int, per_address_bytes: int) -> tuple[BodyBudget, Clock]:
    """A budget whose time the test sets: bodies are behind schedule 2 s in, at a pace ending them in 10 s."""
    clock = Clock()
    return BodyBudget(total_bytes, per_address_bytes, schedule_s=10, grace_s=2, clock=clock), clock


def test_bodies_behind_schedule_give_way_to_a_new_one_that_does_not_fit():
    budget, clock = clocked_budget(total_bytes=100, per_address_bytes=60)
    steady, slow = budget.reserve("a", 50), budget.reserve("b", 45)
    clock.now = 1.0
    slow.arrived(1)
    with pytest.raises(BodiesBusy):
        budget.reserve("c", 40)  # within the grace: nobody is behind yet
    clock.now = 3.0
    steady.arrived(20)  # 21 of 50: ahead of a pace that ends it in 10 s (15 by now)
    newcomer = budget.reserve("c", 40)  # the slow one (1 of 45) gives way: it keeps the byte it sent
    assert budget.held == 50 + 1 + 40
    with pytest.raises(BodiesBusy, match="too slowly"):
        slow.arrived(1)  # answered 503 at its next chunk
    steady.arrived(1)
    for reservation in (steady, slow, newcomer):
        with reservation:
            pass
    assert budget.held == 0


def test_bodies_on_schedule_keep_their_room_and_none_gives_way_in_vain():
    budget, clock = clocked_budget(total_bytes=100, per_address_bytes=100)
    fast, slow = budget.reserve("a", 50), budget.reserve("b", 40)
    clock.now = 5.0
    fast.arrived(30)
    slow.arrived(1)
    with pytest.raises(BodiesBusy):
        budget.reserve("c", 60)  # the slow one's 39 unsent bytes are not enough: it keeps its room
    slow.arrived(1)  # not refused
    assert budget.held == 90


def test_an_address_share_is_freed_only_by_its_own_slow_bodies():
    budget, clock = clocked_budget(total_bytes=100, per_address_bytes=50)
    mine = budget.reserve("a", 40)
    other = budget.reserve("b", 40)
    clock.now = 5.0
    mine.arrived(30)  # on schedule
    with pytest.raises(BodiesBusy, match="this address"):
        budget.reserve("a", 20)  # b's slow body would free the total, not a's share
    other.arrived(1)  # so it did not give way
    clock.now = 9.0  # now a's own body is behind (30 of 40 at 90% of the schedule)
    assert budget.reserve("a", 20)
    with pytest.raises(BodiesBusy, match="too slowly"):
        mine.arrived(1)
    assert budget.held == 30 + 40 + 20


def test_slow_bodies_holding_the_budget_give_way_to_another_clients_photo():
    """Found by review: connections from two addresses, each declaring a photo and sending 16 KB a second,
    held the whole budget, and a third address's photo got 503 for as long as they went on."""
    try:
        process, url = start_production_server(env={"MAX_UPLOAD_MB": "1", "MAX_HELD_BODIES_MB": "6"})
    except RuntimeError as error:
        pytest.fail(str(error))
    host, port = url.removeprefix("http://").split(":")
    slow = []
    try:
        for source in ["127.0.0.2"] * 3 + ["127.0.0.3"] * 3:  # 3 MB each: both addresses' shares, all of it
            connection = socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))
            connection.sendall(
                b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 1040000\r\n\r\n" + b"\xff" * 16384
            )
            slow.append(connection)
        for _ in range(3):  # 16 KB a second: behind a pace that ends the body within BODY_TIMEOUT_S
            time.sleep(1)
            for connection in slow:
                connection.sendall(b"\xff" * 16384)
        photo = noise_jpeg(400, 300)
        other = http.client.HTTPConnection(host, int(port), source_address=("127.0.0.4", 0), timeout=30)
        with contextlib.closing(other):
            other.request("POST", "/api/v1/analyze", body=photo, headers={"Content-Type": "image/jpeg"})
            reply = other.getresponse()
            assert reply.status == 200, reply.read()
    finally:
        for connection in slow:
            connection.close()
        stop_production_server(process)


def test_body_limits_hold_a_body_in_the_budget_until_answered_and_refuse_one_it_cannot_take():
    budget, seen = BodyBudget(total_bytes=300, per_address_bytes=200), []
    limits = limited(budget, seen)
    assert call(limits, io.BytesIO(b"p" * 150))[::2] == ("200 OK", b"p" * 150)
    assert seen == [150] and budget.held == 0
    with budget.reserve("10.0.0.2", 200):  # another client's photos fill most of it
        body = ReadWatcher(b"p" * 150)
        line, headers, reply = call(limits, body)
        assert line.startswith("503") and headers["Retry-After"] == "1" and headers["Connection"] == "close"
        # read and dropped, so that the client, done sending, reads the 503 instead of a reset
        assert json.loads(reply)["error"]["code"] == "busy" and body.bytes_read == 150 and seen == [150]
        waiting = ReadWatcher(b"p" * 150)  # a client that waits for "100 Continue" has sent nothing yet
        assert call(limits, waiting, HTTP_EXPECT="100-continue")[0].startswith("503") and waiting.bytes_read == 0
        assert call(limits, io.BytesIO(b"p" * 100))[0] == "200 OK"  # what fits still passes
    # one address cannot take more than its share, whatever is free
    with budget.reserve("10.0.0.1", 150):
        assert call(limits, io.BytesIO(b"p" * 100))[0].startswith("503")
        assert call(limits, io.BytesIO(b"p" * 100), address="10.0.0.3")[0] == "200 OK"


def test_a_chunked_body_reserves_the_most_it_may_be_and_a_slotted_path_reserves_nothing():
    budget, seen = BodyBudget(total_bytes=5000, per_address_bytes=5000), []
    limits = limited(budget, seen)
    chunked = io.BytesIO(b"c" * 10)
    status, _, reply = call(limits, chunked, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert status == "200 OK" and reply == b"c" * 10 and seen[-1] == 1000  # BodyLimits' max_bytes
    assert call(limits, io.BytesIO(b"v" * 10), path=VIDEO_API)[0] == "200 OK" and seen[-1] == 0
    assert call(limits, io.BytesIO(b""))[0] == "200 OK" and seen[-1] == 0  # no body, nothing held
    assert budget.held == 0


def test_a_body_a_little_over_the_limit_is_read_and_dropped_before_the_app_refuses_it():
    read_before_the_app = []

    def refusing_app(environ, start_response):  # as Flask: over MAX_CONTENT_LENGTH, 413 unread
        read_before_the_app.append(body.bytes_read)
        start_response("413 Request Entity Too Large", [])
        return [environ["wsgi.input"].read()]

    limits = BodyLimits(refusing_app, 1000, budget=BodyBudget(total_bytes=5000, per_address_bytes=5000))
    body = ReadWatcher(b"o" * 1500)
    assert call(limits, body)[::2] == ("413 Request Entity Too Large", b"") and read_before_the_app == [1500]
    body = ReadWatcher(b"o" * 2500)  # over twice the limit: not worth reading
    call(limits, body)
    assert read_before_the_app[-1] == 0
    body = ReadWatcher(b"o" * 1500)  # its client waits for "100 Continue" before it sends
    call(limits, body, HTTP_EXPECT="100-continue")
    assert read_before_the_app[-1] == 0


def test_a_video_a_little_over_its_limit_is_refused_unread():
    """A video is read only in a job slot; dropping one up to twice its limit (400 MB) held no slot, and sixteen
    slow ones would hold every drain."""
    video = VIDEO_API
    slots = []

    def refusing_app(environ, start_response):
        start_response("413 Request Entity Too Large", [])
        return [b""]

    limits = BodyLimits(
        refusing_app, 1000, per_path={video: (10_000, None)}, slots={video: lambda: slots.append(1) or nullcontext()}
    )
    body = ReadWatcher(b"v" * 19_000)
    environ = {"PATH_INFO": video, "REMOTE_ADDR": "a", "CONTENT_LENGTH": "19000", "wsgi.input": body}
    assert b"".join(limits(environ, lambda *a: None)) == b""
    assert body.bytes_read == 0 and slots == []


def test_bodies_beyond_those_being_dropped_are_refused_unread(monkeypatch):
    from webapp import body_limits

    budget, seen = BodyBudget(total_bytes=300, per_address_bytes=300), []
    limits = limited(budget, seen)
    monkeypatch.setattr(body_limits, "MAX_DROPPING", 1)
    limits._dropping = 1  # one being dropped already, on another connection
    with budget.reserve("10.0.0.2", 300):
        body = ReadWatcher(b"p" * 150)
        assert call(limits, body)[0].startswith("503") and body.bytes_read == 0
        limits._dropping = 0
        body = ReadWatcher(b"p" * 150)
        assert call(limits, body)[0].startswith("503") and body.bytes_read == 150
    assert limits._dropping == 0


def test_the_app_holds_bodies_in_its_budget(app):
    from webapp.body_limits import BodyLimits

    limits = app.wsgi_app
    while not isinstance(limits, BodyLimits):
        limits = limits.app
    assert limits.budget.total_bytes == app.config["MAX_HELD_BODIES_MB"] * 1024 * 1024
    assert limits.budget.per_address_bytes == limits.budget.total_bytes // 2


def test_a_flood_of_large_photos_is_refused_past_the_budget_not_queued_and_each_refusal_is_read():
    # 6 MB of bodies at once, 3 MB of them from one address: two ~0.9 MB photos at a time from this test
    try:
        process, url = start_production_server(env={"MAX_UPLOAD_MB": "1", "MAX_HELD_BODIES_MB": "6"})
    except RuntimeError as error:
        pytest.fail(str(error))
    try:
        photo = noise_jpeg(840, 800)
        result = abuse.memory_attack(url, worker_pid(process), photo, count=30, at_once=30, settle_s=0)
        assert result["all_json"] and result["retry_after"], result
        assert set(result["statuses"]) == {200, 503}, result
        assert result["healthz_worst_ms"] <= 100, result
        assert abuse.post(url, photo, content_type="image/jpeg")[0] == 200  # room again once answered
        # a photo a little over MAX_UPLOAD_MB: the client reads the 413 (10.5 MB against the default 10 MB
        # had its connection reset)
        status, body, _ = abuse.post(url, noise_jpeg(1200, 1000), content_type="image/jpeg")
        assert status == 413 and json.loads(body)["error"]["code"] == "too_large", body
    finally:
        stop_production_server(process)
