"""The bytes of request bodies held at once (`webapp.body_budget`): the budget alone, inside `BodyLimits`,
and a flood of photos against the Procfile's server."""

from __future__ import annotations

import io
import json
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
