import os

import pytest

from webapp.concurrency import fast_apply_mask

websocket = pytest.importorskip("eventlet.websocket")
original = websocket.RFC6455WebSocket.__dict__["_apply_mask"].__func__


@pytest.mark.parametrize("length, offset", [(0, 0), (1, 0), (5, 3), (4096, 1), (40_001, 2)])
def test_fast_unmask_matches_eventlets(length, offset):
    data, mask = os.urandom(length), tuple(os.urandom(4))
    assert fast_apply_mask(data, mask, length=length, offset=offset) == original(
        data, mask, length=length, offset=offset
    )


def test_unmasking_twice_restores_the_data():
    data, mask = os.urandom(1000), (1, 2, 3, 4)
    assert fast_apply_mask(fast_apply_mask(data, mask), mask) == data


def test_the_installed_unmasking_gives_way_to_other_clients_after_a_large_chunk(monkeypatch):
    import eventlet

    from webapp.concurrency import YIELD_AFTER_BYTES, speed_up_eventlet_websocket

    # put back as it was (a staticmethod) when the test ends
    monkeypatch.setattr(websocket.RFC6455WebSocket, "_apply_mask", websocket.RFC6455WebSocket.__dict__["_apply_mask"])
    speed_up_eventlet_websocket()
    yields = []
    monkeypatch.setattr(eventlet, "sleep", lambda seconds=0: yields.append(seconds))
    unmask = websocket.RFC6455WebSocket._apply_mask
    data, mask = os.urandom(YIELD_AFTER_BYTES), (1, 2, 3, 4)
    assert unmask(data[:100], mask) == fast_apply_mask(data[:100], mask) and yields == []  # a frame's header
    assert unmask(data, mask) == fast_apply_mask(data, mask) and yields == [0]
