"""Headless Chromium on the video and upload pages, with the server's answers made up (page.route) where a real
server would be slow to bring into that state: the status line, unknown durations, lost polls, a phone's
timeline, unplayable previews, other models' classes, huge photos, files changed on disk, slow uplinks."""

from __future__ import annotations

import io
import itertools
import os
import time
from pathlib import Path

import pytest

from tests.harness import CHROMIUM, CHROMIUM_ARGS, made_up_face, serve_in_thread, twin_app, video_bytes, watch_page

pytestmark = pytest.mark.browser

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")

JOB = "/api/v1/jobs/made-up"
TIMEOUT_REPLY = {"error": {"code": "timeout", "message": "the request body did not arrive in time"}}


@pytest.fixture(scope="module")
def server(app):
    with serve_in_thread(twin_app(app)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def open_page(browser):
    """`open_page(**context_options)`: a new page, whose JavaScript errors and CSP violations fail the test."""
    contexts, watched = [], []

    def make(**options):
        context = browser.new_context(**{"viewport": {"width": 1100, "height": 900}, **options})
        contexts.append(context)
        page = context.new_page()
        watched.append(watch_page(page))
        return page

    yield make
    for context in contexts:
        context.close()
    for errors, violations in watched:
        assert not errors, f"JavaScript errors: {errors}"
        assert not violations, f"CSP violations: {violations}"


@pytest.fixture()
def page(open_page):
    return open_page()


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, grace_rgb):
    path = tmp_path_factory.mktemp("video") / "face.mp4"
    path.write_bytes(video_bytes(grace_rgb, seconds=4.0, size=(320, 240)))
    return path


@pytest.fixture()
def junk_video(tmp_path):
    """A file no browser can play (as HEVC in Chromium): the made-up server analyses it all the same."""
    path = tmp_path / "phone.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    return path


def emotions_of(page) -> list[str]:
    return page.evaluate("() => JSON.parse(document.getElementById('app').dataset.emotions)")


def made_up_result(emotions: list[str], duration_s: float = 4.0) -> dict:
    """A video job's result: one face in each of 5 frames."""
    face = made_up_face((0, 0, 9, 9), emotions, id=1)
    return {
        "duration_s": duration_s,
        "sampled_fps": 1,
        "frames": [{"t": t, "faces": [face]} for t in range(5)],
        "summary": {"frames_with_faces": 5, "dominant": emotions[0], "tracks": []},
    }


def fake_job(page, answer) -> list[int]:
    """Route the video page's upload to a made-up job whose polls `answer(n)` answers, n counting from 0:
    a JSON object, or (status, JSON object). Returns the list the polls are counted in (its length)."""
    polls = []

    def job(route):
        if "format=csv" in route.request.url:
            route.fulfill(body="t\n", content_type="text/csv")
            return
        reply = answer(len(polls))
        polls.append(1)
        status, body = reply if isinstance(reply, tuple) else (200, reply)
        route.fulfill(status=status, json=body)

    page.route("**/api/v1/analyze-video*", lambda route: route.fulfill(status=202, json={"url": JOB}))
    page.route(f"**{JOB}*", job)
    return polls


def analyse(page, path) -> None:
    page.set_input_files("#video-file", str(path))
    page.click("#analyze")


def wait_for_polls(page, polls: list, count: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while len(polls) < count:
        assert time.monotonic() < deadline, f"{len(polls)} polls of {count}"
        page.wait_for_timeout(50)  # the page's requests are routed meanwhile


# every text the status line takes, and every value of the progress bar, in order
WATCH_STATUS = """document.addEventListener('DOMContentLoaded', () => {
  window.statuses = []; window.values = [];
  const message = document.getElementById('message'), progress = document.getElementById('progress');
  new MutationObserver(() => statuses.push(message.textContent))
    .observe(message, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => values.push(progress.getAttribute('value')))
    .observe(progress, {attributes: true, attributeFilter: ['value']});
});"""


def test_the_status_line_announces_progress_in_coarse_steps(page, server, junk_video):
    page.add_init_script(WATCH_STATUS)
    polls = fake_job(page, lambda n: {"state": "running", "progress": min(0.99, 0.04 * n), "video_s": 0.16 * n})
    page.goto(server + "/video")
    analyse(page, junk_video)
    wait_for_polls(page, polls, 14)  # about 4 s of polls, each with new progress
    statuses, values = page.evaluate("[window.statuses, window.values]")
    progress = [text for text in statuses if text.startswith("Analysing")]
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
    assert 1 <= len(progress) <= 3, statuses  # one a poll: 14
    assert all(text.endswith("0%") for text in progress), progress  # 10% steps
    assert len({value for value in values if value}) >= 10, values  # the bar shows every poll's value
    page.click("#cancel")


def test_a_video_of_unknown_length_shows_seconds_done_and_an_indeterminate_bar(page, server, junk_video):
    polls = fake_job(page, lambda n: {"state": "running", "progress": None, "video_s": 7.4})
    page.goto(server + "/video")
    analyse(page, junk_video)
    page.wait_for_function("() => document.getElementById('message').textContent.includes('of video done')")
    assert page.text_content("#message") == "Analysing… 7 s of video done"
    wait_for_polls(page, polls, len(polls) + 2)
    bar = page.evaluate(
        "() => { const p = document.getElementById('progress');"
        " return {hidden: p.hidden, value: p.getAttribute('value'), position: p.position}; }"
    )
    assert bar == {"hidden": False, "value": None, "position": -1}
    page.click("#cancel")


def test_polls_answered_404_for_a_while_do_not_end_the_wait(page, server, junk_video):
    emotions = None

    def answer(n):
        if n in (1, 2):  # landed on an instance that does not hold the job
            return 404, {"error": {"code": "not_found", "message": "no such job"}}
        if n < 4:
            return {"state": "running", "progress": 0.3, "video_s": 1.2}
        return {"state": "done", "progress": 1, "video_s": 4.0, "result": made_up_result(emotions)}

    page.add_init_script(WATCH_STATUS)
    polls = fake_job(page, answer)
    page.goto(server + "/video")
    emotions = emotions_of(page)
    analyse(page, junk_video)
    page.wait_for_function("() => !document.getElementById('timeline').hidden", timeout=10_000)
    assert len(polls) == 5
    assert "5 frames analysed" in page.text_content("#message")
    assert not [text for text in page.evaluate("window.statuses") if "no such job" in text]


def test_a_job_404_for_longer_than_12_s_is_given_up(page, server, junk_video):
    page.clock.install()
    fake_job(page, lambda n: (404, {"error": {"code": "not_found", "message": "no such job"}}))
    page.goto(server + "/video")
    analyse(page, junk_video)
    for _ in range(60):  # 18 s of the page's time, with the polls' round trips in real time between
        page.clock.run_for(300)
        page.wait_for_timeout(20)
        if page.text_content("#message") == "no such job":
            break
    assert page.text_content("#message") == "no such job"
    assert page.evaluate("performance.now()") > 12_000
    assert page.is_hidden("#progress") and page.is_enabled("#analyze")


def test_the_timeline_on_a_phone_is_drawn_for_its_size_and_maps_clicks_to_time(open_page, server, face_video):
    page = open_page(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True)
    page.goto(server + "/video")
    result = made_up_result(emotions_of(page))
    fake_job(page, lambda n: {"state": "done", "progress": 1, "video_s": 4.0, "result": result})
    analyse(page, face_video)
    page.wait_for_function("() => !document.getElementById('timeline').hidden", timeout=10_000)
    page.wait_for_function("() => document.getElementById('preview').readyState >= 1", timeout=10_000)
    size = page.evaluate(
        """() => { const c = document.getElementById('timeline');
                   return {width: c.width, height: c.height, cssWidth: c.clientWidth, cssHeight: c.clientHeight,
                           font: c.getContext('2d').font}; }"""
    )
    assert abs(size["width"] - 3 * size["cssWidth"]) <= 1 and abs(size["height"] - 3 * size["cssHeight"]) <= 1, size
    assert 300 < size["cssWidth"] < 390 and size["cssHeight"] >= 180, size  # was shown 352 x 81
    assert size["font"].startswith("12px"), size  # CSS pixels: 12 on screen, not 4
    box = page.locator("#timeline").bounding_box()
    page.mouse.click(box["x"] + 36 + (box["width"] - 44) * 0.5, box["y"] + box["height"] / 3)
    assert abs(page.evaluate("document.getElementById('preview').currentTime") - 2.0) < 0.05
    # turned to landscape: drawn again for the new width
    page.set_viewport_size({"width": 844, "height": 390})
    page.wait_for_function(
        "() => { const c = document.getElementById('timeline'); return Math.abs(c.width - 3 * c.clientWidth) <= 1; }"
    )
    assert page.evaluate("document.getElementById('timeline').clientWidth") > 700


def test_a_preview_the_browser_cannot_play_is_taken_down_and_the_next_analysis_empties_it(page, server, junk_video):
    page.goto(server + "/video")
    result = made_up_result(emotions_of(page))
    fake_job(page, lambda n: {"state": "done", "progress": 1, "video_s": 4.0, "result": result})
    analyse(page, junk_video)
    page.wait_for_selector("#preview-note:not([hidden])", timeout=10_000)
    assert "cannot play" in page.text_content("#preview-note") and page.is_hidden("#preview")
    assert "5 frames analysed" in page.text_content("#message")  # the analysis itself stands
    box = page.locator("#timeline").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 3)
    assert page.evaluate("document.getElementById('preview').currentTime") == 0  # no pretended seek
    page.route(f"**{JOB}*", lambda route: None)  # the next job's first poll stays out: no new preview
    page.click("#analyze")
    state = page.evaluate(
        "() => { const v = document.getElementById('preview');"
        " return {src: v.getAttribute('src'), paused: v.paused, note: document.getElementById('preview-note').hidden}; }"
    )
    assert state == {"src": None, "paused": True, "note": True}


def test_a_reply_in_other_classes_asks_for_a_reload_not_nan(page, server):
    import matplotlib.cbook

    page.goto(server + "/upload")
    emotions = [*emotions_of(page), "unheard_of"]  # an instance serving a model with one class more
    face = made_up_face((165, 140, 200, 205), emotions, "unheard_of")
    reply = {"width": 512, "height": 600, "faces": [face], "timings_ms": {"total": 1}}
    page.route("**/api/v1/analyze", lambda route: route.fulfill(json=reply))
    page.set_input_files("#image", matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('reload')")
    assert "NaN" not in page.inner_text("body")
    assert page.is_hidden("#faces") and page.is_hidden("#annotated")


def test_a_huge_photo_is_drawn_at_most_4096_wide_with_its_box_on_the_face(page, server, tmp_path):
    from PIL import Image

    width, height, face = 6000, 4000, (4000, 2500, 600, 700)  # x, y, w, h: a white "face" on black
    photo = Image.new("RGB", (width, height))
    photo.paste((255, 255, 255), (face[0], face[1], face[0] + face[2], face[1] + face[3]))
    path = tmp_path / "huge.jpg"
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=80)
    path.write_bytes(buffer.getvalue())
    page.goto(server + "/upload")
    emotions = emotions_of(page)
    found = made_up_face(face, emotions)
    reply = {"width": width, "height": height, "faces": [found], "timings_ms": {"total": 1}}
    page.route("**/api/v1/analyze", lambda route: route.fulfill(json=reply))
    page.add_init_script("""
      window.boxes = []; window.canvases = 0;
      const strokeRect = CanvasRenderingContext2D.prototype.strokeRect;
      CanvasRenderingContext2D.prototype.strokeRect = function (...box) {
        window.boxes.push([...box, this.canvas.width, this.canvas.height]); return strokeRect.apply(this, box); };
      const create = Document.prototype.createElement;
      Document.prototype.createElement = function (tag, ...rest) {
        if (String(tag).toLowerCase() === 'canvas') window.canvases += 1; return create.call(this, tag, ...rest); };
    """)
    page.reload()
    page.set_input_files("#image", str(path))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('1 face')", timeout=30_000)
    canvas = page.evaluate("() => { const c = document.getElementById('annotated'); return [c.width, c.height]; }")
    assert max(canvas) <= 4096 and abs(canvas[0] / canvas[1] - width / height) < 0.01, canvas
    x, y, w, h, layer_width, layer_height = page.evaluate("window.boxes.at(-1)")
    assert [layer_width, layer_height] == canvas
    scale = canvas[0] / width
    for drawn, true in zip((x, y, w, h), face, strict=True):
        assert abs(drawn - true * scale) < 2, (drawn, true * scale)
    # the photo under the box is the white face, and black just outside it
    inside, outside = page.evaluate(
        """([cx, cy, ox]) => { const ctx = document.getElementById('annotated').getContext('2d');
                               return [ctx.getImageData(cx, cy, 1, 1).data[0], ctx.getImageData(ox, cy, 1, 1).data[0]]; }""",
        [round(x + w / 2), round(y + h / 2), round(x - 30)],
    )
    assert inside > 200 and outside < 50, (inside, outside)
    # drawn again for other widths, on the same canvases
    drawn = page.evaluate("window.boxes.length")
    for viewport_width in (900, 700, 500):
        page.set_viewport_size({"width": viewport_width, "height": 900})
        page.wait_for_function(f"() => window.boxes.length > {drawn}")
        drawn = page.evaluate("window.boxes.length")
    assert page.evaluate("window.canvases") <= 1  # the boxes' layer, once


def test_a_file_changed_on_disk_since_it_was_chosen_is_asked_for_again(page, server, tmp_path, junk_video):
    import matplotlib.cbook

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes())
    page.route("**/api/v1/analyze", lambda route: route.fulfill(json={"error": {"code": "x", "message": "sent"}}))
    page.goto(server + "/upload")
    page.set_input_files("#image", str(photo))
    page.wait_for_function("() => document.getElementById('message').textContent === 'sent'")
    photo.write_bytes(photo.read_bytes()[:1000])  # edited and saved over
    os.utime(photo, (time.time() + 5, time.time() + 5))
    page.click("#analyze")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('choose it again')")
    assert page.is_enabled("#analyze")
    page.goto(server + "/video")
    sent = []
    page.on("request", lambda request: sent.append(request.url) if "analyze-video" in request.url else None)
    page.set_input_files("#video-file", str(junk_video))
    # the browser takes the file's size and time when the page first asks (as a browser's file chooser
    # does at once): asked before the edit, not by chance after it
    assert page.evaluate("document.getElementById('video-file').files[0].size") == junk_video.stat().st_size
    junk_video.write_bytes(b"edited")
    os.utime(junk_video, (time.time() + 5, time.time() + 5))
    page.click("#analyze")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('choose it again')")
    assert not sent and page.is_enabled("#analyze") and page.is_hidden("#progress")


def test_a_slow_uplinks_timeout_suggests_a_smaller_file_or_faster_connection(page, server, junk_video):
    import matplotlib.cbook

    page.route("**/api/v1/analyze*", lambda route: route.fulfill(status=408, json=TIMEOUT_REPLY))
    page.goto(server + "/upload")
    page.set_input_files("#image", matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('faster connection')")
    page.route("**/api/v1/analyze-video*", lambda route: route.fulfill(status=408, json=TIMEOUT_REPLY))
    page.goto(server + "/video")
    analyse(page, junk_video)
    page.wait_for_function("() => document.getElementById('message').textContent.includes('faster connection')")
    assert "did not arrive in time" in page.text_content("#message")
