"""Photos and video jobs run on background threads of lower CPU priority; live frames keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from webapp import background
from webapp.background import BackgroundThreads

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice values per thread are Linux's")


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def test_a_call_returns_its_result_and_raises_its_error():
    threads = BackgroundThreads(2, 0, green=False)
    assert threads.run(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        threads.run(divmod, 1, 0)


@linux_only
def test_background_calls_run_below_the_callers_priority_which_is_left_as_it_was():
    before = own_nice()
    assert BackgroundThreads(1, 10, green=False).run(own_nice) == min(19, before + 10)
    assert BackgroundThreads(1, 0, green=False).run(own_nice) == before
    assert own_nice() == before


def test_no_more_calls_run_at_once_than_there_are_threads(monkeypatch):
    monkeypatch.setattr(background, "IDLE_EXIT_S", 0.2)
    threads = BackgroundThreads(2, 0, green=False)
    lock, running, most = threading.Lock(), [0], [0]

    def work():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    callers = [threading.Thread(target=threads.run, args=(work,)) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert most[0] == 2
    deadline = time.monotonic() + 5
    while threads._threads and time.monotonic() < deadline:  # idle threads end
        time.sleep(0.05)
    assert threads._threads == 0
    assert threads.run(divmod, 9, 4) == (2, 1)  # and new ones start when work comes


class SlowToWake:
    """A task queue whose threads take 0.1 s from receiving a call to counting themselves busy, as a thread
    the OS has not scheduled yet does."""

    def __init__(self, tasks):
        self._tasks = tasks

    def __getattr__(self, name):
        return getattr(self._tasks, name)

    def get(self, *args, **kwargs):
        task = self._tasks.get(*args, **kwargs)
        time.sleep(0.1)
        return task


def test_a_quick_call_never_waits_behind_a_long_one_while_threads_are_to_spare():
    threads = BackgroundThreads(4, 0, green=False)
    threads._tasks = SlowToWake(threads._tasks)
    threads.run(int)  # one thread, idle
    took = {}

    def call(name, seconds):
        start = time.monotonic()
        threads.run(time.sleep, seconds)
        took[name] = time.monotonic() - start

    # a video, then a photo while the idle thread is taking the video: it must not count on that thread
    video = threading.Thread(target=call, args=("video", 1))
    video.start()
    time.sleep(0.03)
    call("photo", 0)
    video.join()
    assert took["photo"] < 0.5, took


GREEN_CALLERS = textwrap.dedent(
    """
    import eventlet
    eventlet.monkey_patch()
    import time
    from webapp.background import BackgroundThreads

    threads = BackgroundThreads(2, 5, green=True)
    ticks = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            eventlet.sleep(0.01)

    eventlet.spawn(ticker)
    pool = eventlet.GreenPool()
    # a native thread that blocks 0.3 s: a green caller waiting on it must not block the event loop
    results = list(pool.imap(lambda n: threads.run(lambda: (time.sleep(0.3), n * n)[1]), range(6)))
    assert results == [n * n for n in range(6)], results
    longest_gap = max(b - a for a, b in zip(ticks, ticks[1:]))
    assert longest_gap < 0.15, longest_gap
    try:
        threads.run(int, "x")
    except ValueError:
        print("ok", len(ticks))
    """
)


def test_green_callers_wait_without_blocking_the_event_loop():
    done = subprocess.run(
        [sys.executable, "-c", GREEN_CALLERS], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


MANY_GREEN_POOLS = textwrap.dedent(
    """
    import eventlet
    eventlet.monkey_patch()
    import os
    from webapp.background import BackgroundThreads

    BackgroundThreads(1, 0, green=True).run(int)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):  # an app each, as a test session makes them
        assert BackgroundThreads(1, 0, green=True).run(divmod, 7, 2) == (3, 1)
    print(len(os.listdir("/proc/self/fd")) - before)
    """
)


@linux_only
def test_green_pools_share_one_pipe():
    done = subprocess.run(
        [sys.executable, "-c", MANY_GREEN_POOLS], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 0


FORKED_CHILD = textwrap.dedent(
    """
    import os, signal
    from webapp.background import BackgroundThreads

    threads = BackgroundThreads(2, 0, green=False)
    threads.run(int)  # a thread, idle, in this process only (gunicorn --preload forks after the app is made)
    child = os.fork()
    if child == 0:
        signal.alarm(10)  # a call that hangs ends the child
        os._exit(0 if threads.run(divmod, 7, 2) == (3, 1) else 1)
    print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    """
)


@linux_only
def test_a_forked_child_runs_calls_on_threads_of_its_own():
    # in a process of its own: once eventlet is imported (by other tests), it warns on every fork
    done = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


class PriorityNoting:
    """A pipeline that notes the nice value of the thread that analyses."""

    def __init__(self, pipeline, seen: list):
        self._pipeline, self._seen = pipeline, seen

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def analyze_bytes(self, *args):
        self._seen.append(own_nice())
        return self._pipeline.analyze_bytes(*args)


@linux_only
def test_photos_are_analysed_below_the_live_frames_priority(app, grace_jpeg):
    from webapp import create_app, socketio_of

    photos, frames = [], []
    pipelines = app.extensions["pipelines"]
    noting = {**pipelines, "image": PriorityNoting(pipelines["image"], photos)}
    noting["stream"] = PriorityNoting(pipelines["stream"], frames)
    twin = create_app({**app.config, "PIPELINES": noting, "BACKGROUND_NICE": 10})
    assert twin.test_client().post("/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg").status_code == 200
    socket = socketio_of(twin).test_client(twin)
    assert "faces" in socket.emit("frame", grace_jpeg, callback=True)
    socket.disconnect()
    assert frames == [own_nice()]
    assert photos == [min(19, own_nice() + 10)]


@pytest.mark.parametrize("value", ["-1", "20"])
def test_background_nice_outside_0_to_19_is_refused(monkeypatch, value):
    from webapp.config import SettingsError, check, from_env

    monkeypatch.setenv("BACKGROUND_NICE", value)
    with pytest.raises(SettingsError, match="BACKGROUND_NICE"):
        check(from_env())


@linux_only
def test_the_production_servers_photo_interpreters_run_below_its_live_ones():
    """The photo and video pipelines are built on a background thread, so their interpreters' own worker
    threads start niced too; the live pipeline's do not."""
    from tests.harness import start_production_server, stop_production_server, worker_pid

    process, _ = start_production_server(env={"BACKGROUND_NICE": "7"})
    try:
        pid = worker_pid(process)
        nices = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                nices.append(int(stat.read().rsplit(")", 1)[1].split()[16]))
    finally:
        stop_production_server(process)
    server_nice = min(nices)
    assert any(nice == min(19, server_nice + 7) for nice in nices), nices
    assert nices.count(server_nice) >= 2, nices  # the event loop and the live interpreters' workers


GIVING_MEMORY_BACK = textwrap.dedent(
    """
    import eventlet
    eventlet.monkey_patch()
    from eventlet import patcher
    from webapp.concurrency import off_the_event_loop

    native = patcher.original("threading")
    ran_on, ticks = [], []

    def trim():  # stands for malloc_trim: native, blocking
        ran_on.append(native.get_ident())
        patcher.original("time").sleep(0.3)

    def tick():
        for _ in range(20):
            ticks.append(1)
            eventlet.sleep(0.01)

    ticker = eventlet.spawn(tick)
    eventlet.sleep(0)
    off_the_event_loop("eventlet", trim)()
    print(ran_on[0] != native.get_ident(), len(ticks))
    """
)


def test_memory_is_given_back_off_the_event_loop():
    from webapp.concurrency import off_the_event_loop
    from webapp.vision.budget import release_free_memory

    assert off_the_event_loop("threading", release_free_memory) is release_free_memory
    done = subprocess.run(
        [sys.executable, "-c", GIVING_MEMORY_BACK], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    assert done.returncode == 0, done.stderr
    other_thread, ticks = done.stdout.split()
    # on another thread, and the other green threads kept running meanwhile (blocking: 1 tick)
    assert other_thread == "True" and int(ticks) >= 10, done.stdout


def test_queued_calls_take_turns_by_client():
    turns = background.TakingTurns(threading)
    for item in ("a1", "a2", "a3"):
        turns.put("10.0.0.1", item)
    turns.put("10.0.0.2", "b1")
    turns.put("10.0.0.1", "a4")
    turns.put("10.0.0.3", "c1")
    assert [turns.get(timeout=0) for _ in range(6)] == ["a1", "b1", "c1", "a2", "a3", "a4"]
    with pytest.raises(background.queue.Empty):
        turns.get(timeout=0.05)


def test_a_clients_photo_does_not_wait_behind_anothers_flood():
    threads = BackgroundThreads(1, 0, green=False)
    started, order = threading.Event(), []

    def first():  # holds the one thread while the others queue
        started.set()
        time.sleep(0.3)

    def photo(name):
        order.append(name)

    holder = threading.Thread(target=threads.run, args=(first,), kwargs={"turn": "flood"})
    holder.start()
    started.wait(5)
    callers = [
        threading.Thread(target=threads.run, args=(photo, f"flood {i}"), kwargs={"turn": "flood"}) for i in range(5)
    ]
    for caller in callers:
        caller.start()
        time.sleep(0.02)  # queued in this order
    other = threading.Thread(target=threads.run, args=(photo, "other"), kwargs={"turn": "other"})
    other.start()
    for caller in [holder, *callers, other]:
        caller.join()
    assert order[:2] == ["flood 0", "other"], order  # first in line after at most one of the flood's


def test_the_api_queues_photos_by_the_clients_address(app, grace_jpeg, monkeypatch):
    background_threads = app.extensions["background"]
    turns, run = [], background_threads.run

    def noting(function, *args, turn=""):
        turns.append(turn)
        return run(function, *args, turn=turn)

    monkeypatch.setattr(background_threads, "run", noting)
    reply = app.test_client().post(
        "/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg", environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    assert reply.status_code == 200 and turns == ["10.1.2.3"]


def test_memory_given_back_as_the_budget_empties_does_not_hold_the_answer():
    """As the last body held goes, the budget gives memory back: inline, every answer that emptied it waited."""
    import io

    from webapp.body_budget import BodyBudget
    from webapp.body_limits import BodyLimits
    from webapp.concurrency import without_waiting

    trims, answered = [], []

    def slow_trim():  # stands for malloc_trim on a fragmented heap
        time.sleep(0.3)
        trims.append(1)

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    limits = BodyLimits(app, 1000, budget=BodyBudget(10_000, 5_000, without_waiting("threading", slow_trim)))
    for _ in range(3):
        started = time.perf_counter()
        environ = {"PATH_INFO": "/p", "REMOTE_ADDR": "a", "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc")}
        assert limits(environ, lambda *a: None) == [b"ok"]
        answered.append(time.perf_counter() - started)
    assert max(answered) < 0.1, answered
    time.sleep(0.5)
    assert trims == [1]  # the second and third came while the first ran


WITHOUT_WAITING_UNDER_EVENTLET = textwrap.dedent(
    """
    import eventlet
    eventlet.monkey_patch()
    from eventlet import patcher
    from webapp.concurrency import without_waiting

    native, clock = patcher.original("threading"), patcher.original("time")
    ran_on = []

    def trim():
        ran_on.append(native.get_ident())
        clock.sleep(0.3)

    started = clock.monotonic()
    without_waiting("eventlet", trim)()
    returned = clock.monotonic() - started
    eventlet.sleep(0.6)
    print(returned < 0.05, len(ran_on) == 1 and ran_on[0] != native.get_ident())
    """
)


def test_memory_given_back_without_waiting_runs_on_a_native_thread_under_eventlet():
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_WAITING_UNDER_EVENTLET],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"], done.stdout
