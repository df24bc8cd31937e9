"""Real headless Chromium on the video page: progress while the server works, cancel, then the timeline."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    made_up_face,
    serve_in_thread,
    video_bytes,
    video_frames_delayed,
    watch_page,
)

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")


@pytest.fixture(scope="module")
def slow_app(app):
    """The session's app with video frames slowed to 60 ms each, so progress can be seen."""
    with video_frames_delayed(app, lambda: time.sleep(0.06)):
        yield app


@pytest.fixture(scope="module")
def server(slow_app):
    with serve_in_thread(slow_app) as url:
        yield url


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, grace_rgb):
    path = tmp_path_factory.mktemp("video") / "face.mp4"
    path.write_bytes(video_bytes(grace_rgb, seconds=4.0))
    return path


@pytest.fixture()
def page():
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors, violations = watch_page(page)
        yield page
        browser.close()
    assert not errors, f"JavaScript errors: {errors}"
    assert not violations, f"CSP violations: {violations}"


def test_video_page_shows_progress_then_the_timeline(page, server, face_video):
    page.goto(server + "/video")
    page.fill("#fps", "10")
    choose_and_analyse(page, face_video)
    # 40 frames at >= 60 ms: several polls see the job part-way
    page.wait_for_function(
        "() => { const p = document.getElementById('progress'); return !p.hidden && p.value > 0 && p.value < 1; }",
        timeout=30_000,
    )
    assert "Analysing" in page.text_content("#message")
    page.wait_for_function("() => !document.getElementById('timeline').hidden", timeout=60_000)
    assert page.is_hidden("#progress")
    assert "40 frames analysed" in page.text_content("#message")
    assert page.text_content("#summary tbody tr td:nth-child(4)") == "40"
    assert page.get_attribute("#download-csv", "href").startswith("blob:")
    page.wait_for_function("() => document.getElementById('preview').readyState >= 1", timeout=10_000)
    box = page.locator("#timeline").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    current = page.evaluate("() => document.getElementById('preview').currentTime")
    assert 2.0 < current < 4.0  # three quarters of the chart's time axis, less its left margin
    page.screenshot(path=str(ARTIFACTS / "video_page.png"), full_page=True)


def choose_and_analyse(page, path):
    """Choose a video, then press Analyse: choosing alone leaves frames per second to set."""
    page.set_input_files("#video-file", str(path))
    page.click("#analyze")


def analyse_video(page, face_video, fps="2"):
    page.fill("#fps", fps)
    choose_and_analyse(page, face_video)
    page.wait_for_function(
        "() => document.getElementById('message').textContent.includes('frames analysed')", timeout=60_000
    )


def test_the_csv_download_outlives_the_job_on_the_server(page, server, slow_app, face_video):
    page.goto(server + "/video")
    analyse_video(page, face_video)
    # the server forgets finished jobs after 10 minutes or 8 newer ones: here, at once
    jobs = slow_app.extensions["video_jobs"]
    keep_s, jobs.keep_s = jobs.keep_s, 0
    try:
        jobs.get("expire-them-all")
    finally:
        jobs.keep_s = keep_s
    with page.expect_download() as info:
        page.click("#download-csv")
    lines = Path(info.value.path()).read_text().splitlines()
    assert lines[0].startswith("t,id,x,y,width,height,detection_score,emotion,score")
    assert len(lines) == 1 + 8  # one face in each of 8 frames: 4 s at 2 per second


def test_a_new_analysis_frees_the_last_ones_downloads(page, server, face_video):
    page.add_init_script(
        """const revoke = URL.revokeObjectURL;
           window.revokedUrls = [];
           URL.revokeObjectURL = (url) => { window.revokedUrls.push(url); revoke(url); };"""
    )
    page.goto(server + "/video")
    analyse_video(page, face_video)
    first = [page.get_attribute(f"#download-{kind}", "href") for kind in ("json", "csv")]
    page.click("#analyze")  # the same file again
    page.wait_for_function("() => !document.getElementById('downloads').hidden", timeout=60_000)
    second = [page.get_attribute(f"#download-{kind}", "href") for kind in ("json", "csv")]
    revoked = page.evaluate("window.revokedUrls")
    assert first[0] in revoked and second[0] not in revoked  # the JSON's Blob URL
    assert first[1].startswith("blob:") and first[1] in revoked and second[1] not in revoked  # the CSV's


def test_video_page_cancels(page, server, face_video):
    page.goto(server + "/video")
    page.fill("#fps", "30")
    choose_and_analyse(page, face_video)
    page.wait_for_function("() => !document.getElementById('cancel').hidden", timeout=30_000)
    page.wait_for_function("() => document.getElementById('progress').value > 0", timeout=30_000)
    page.click("#cancel")
    page.wait_for_function("() => document.getElementById('message').textContent === 'Cancelled.'", timeout=30_000)
    assert page.is_hidden("#timeline") and page.is_hidden("#progress")


def test_a_video_dropped_during_an_analysis_does_not_take_its_place(page, server, face_video):
    page.goto(server + "/video")
    page.fill("#fps", "10")
    choose_and_analyse(page, face_video)
    page.wait_for_function("() => document.getElementById('progress').value > 0", timeout=30_000)
    assert page.is_disabled("#video-file")
    page.evaluate(
        """() => { const data = new DataTransfer(); data.items.add(new File(['x'], 'other.mp4', {type: 'video/mp4'}));
                   document.getElementById('video-form').dispatchEvent(new DragEvent('drop', {dataTransfer: data})); }"""
    )
    assert "cancel it before" in page.text_content("#message")
    assert page.is_visible("#cancel") and page.is_visible("#progress")
    # the first job goes on to its own result, and can still be cancelled until then
    page.wait_for_function("() => !document.getElementById('timeline').hidden", timeout=60_000)
    assert "40 frames analysed" in page.text_content("#message")
    assert page.is_enabled("#video-file")


def test_video_page_reports_a_bad_file(page, server, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"not a video" * 100)
    page.goto(server + "/video")
    choose_and_analyse(page, bad)
    page.wait_for_function("() => document.getElementById('message').textContent.includes('not a video')")
    assert page.is_hidden("#progress") and page.is_hidden("#timeline")


def answer_every_video_with(page, result: dict):
    """Make up the server's side: every video sent becomes a job that is done with `result` (read at each poll)."""
    page.route("**/api/v1/analyze-video*", lambda route: route.fulfill(json={"url": "/api/v1/jobs/made-up"}))
    page.route(
        "**/api/v1/jobs/made-up*",
        lambda route: route.fulfill(
            body="t\n" if "format=csv" in route.request.url else None,
            json=None if "format=csv" in route.request.url else {"state": "done", "progress": 1, "result": result},
        ),
    )


def test_the_timeline_breaks_where_the_largest_face_is_another_person(page, server, face_video):
    # the server's reply is made up here: face 1 is the largest for two frames, then face 2 is
    emotions = page.context.request.get(server + "/healthz").json()["emotions"]
    faces = [made_up_face((0, 0, 9, 9), emotions, id=i) for i in (1, 1, 2, 2)]
    result = {
        "duration_s": 4.0,
        "sampled_fps": 1,
        "frames": [{"t": t, "faces": [face]} for t, face in enumerate(faces)],
        "summary": {"frames_with_faces": 4, "dominant": emotions[0], "tracks": []},
    }
    answer_every_video_with(page, result)
    page.add_init_script("""
      window.lines = 0;
      const lineTo = CanvasRenderingContext2D.prototype.lineTo;
      CanvasRenderingContext2D.prototype.lineTo = function (...point) { window.lines += 1; return lineTo.apply(this, point); };
    """)
    page.goto(server + "/video")
    analyse_video(page, face_video)
    page.evaluate("() => { window.lines = 0; }")
    box = page.locator("#timeline").bounding_box()
    page.mouse.click(box["x"] + 5, box["y"] + box["height"] / 2)  # draws the chart again
    # per emotion, a segment for each face's two frames, none between them; then the playhead's line (for
    # each drawing: the preview's timeupdate, when it comes, draws the chart once more)
    time.sleep(0.5)
    lines = page.evaluate("() => window.lines")
    assert lines in (2 * len(emotions) + 1, 2 * (2 * len(emotions) + 1)), lines


def test_the_video_page_says_when_frames_held_more_faces_than_labelled(page, server, face_video):
    emotions = page.context.request.get(server + "/healthz").json()["emotions"]
    face = made_up_face((0, 0, 9, 9), emotions, id=1)
    result = {
        "duration_s": 3.0,
        "sampled_fps": 1,
        "frames": [{"t": t, "faces": [face], "faces_found": found} for t, found in enumerate((1, 4, 3))],
        "summary": {"frames_with_faces": 3, "frames_over_face_limit": 2, "dominant": emotions[0], "tracks": []},
    }
    answer_every_video_with(page, result)
    page.goto(server + "/video")
    analyse_video(page, face_video)
    page.wait_for_function("() => !document.getElementById('timeline').hidden")
    message = page.text_content("#message")
    assert "In 2 frames, more faces were found than the server labels: the largest of each is labelled." in message
    # a summary whose frames do not say which were over the limit still reads as a sentence
    for frame in result["frames"]:
        del frame["faces_found"]
    analyse_video(page, face_video)
    page.wait_for_function("() => document.getElementById('message').textContent.includes('only the largest')")
    assert (
        "In 2 frames, more faces were found than the server labels: only the largest are labelled."
        in page.text_content("#message")
    )


def test_a_chosen_video_waits_for_analyse_and_takes_the_frames_per_second_set_after(page, server, face_video):
    page.goto(server + "/video")
    page.set_input_files("#video-file", str(face_video))
    assert "press Analyse" in page.text_content("#message") and page.is_hidden("#progress")
    page.fill("#fps", "1")
    with page.expect_request("**/api/v1/analyze-video*") as sent:
        page.click("#analyze")
    assert "fps=1" in sent.value.url
    page.wait_for_function("() => !document.getElementById('timeline').hidden", timeout=60_000)


def test_a_dropped_video_is_the_one_analyse_sends(page, server, face_video):
    import base64

    page.goto(server + "/video")
    page.fill("#fps", "1")
    page.evaluate(
        """(data) => { const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                       const drop = new DataTransfer(); drop.items.add(new File([bytes], 'dropped.mp4', {type: 'video/mp4'}));
                       document.getElementById('video-form').dispatchEvent(new DragEvent('drop', {dataTransfer: drop})); }""",
        base64.b64encode(face_video.read_bytes()).decode(),
    )
    assert page.evaluate("() => document.getElementById('video-file').files[0].name") == "dropped.mp4"
    page.click("#analyze")  # sent "Choose a video first." and hid the last result
    page.wait_for_function("() => !document.getElementById('timeline').hidden", timeout=60_000)
    assert "4 frames analysed" in page.text_content("#message")


def test_cancel_ends_the_wait_even_when_the_server_cannot_be_reached(page, server, face_video):
    page.goto(server + "/video")
    page.fill("#fps", "30")
    with page.expect_response("**/api/v1/analyze-video*") as started:
        choose_and_analyse(page, face_video)
    page.wait_for_function("() => document.getElementById('progress').value > 0", timeout=30_000)
    page.route("**/api/v1/jobs/**", lambda route: route.abort())
    page.wait_for_function("() => document.getElementById('message').textContent.includes('Lost the server')")
    page.click("#cancel")
    assert page.text_content("#message") == "Cancelled." and page.is_enabled("#analyze")
    page.unroute("**/api/v1/jobs/**")
    time.sleep(1.5)  # polls that were out come back to a page that has moved on
    assert page.text_content("#message") == "Cancelled." and page.is_hidden("#timeline")
    # the server never heard the cancel: its job runs on, holding the one slot the next test needs
    page.context.request.delete(server + started.value.json()["url"])


def test_leaving_the_page_cancels_its_job(page, server, slow_app, face_video):
    page.goto(server + "/video")
    page.fill("#fps", "30")
    with page.expect_response("**/api/v1/analyze-video*") as started:
        choose_and_analyse(page, face_video)
    job_id = started.value.json()["url"].rsplit("/", 1)[-1]
    page.wait_for_function("() => document.getElementById('progress').value > 0", timeout=30_000)
    page.goto(server + "/upload")
    jobs = slow_app.extensions["video_jobs"]
    deadline = time.monotonic() + 10
    while jobs.get(job_id).state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.get(job_id).state == "cancelled"  # the next user would have found the one slot taken


def test_a_refused_drop_stays_readable_while_the_job_goes_on(page, server, face_video):
    page.goto(server + "/video")
    page.fill("#fps", "30")  # 120 frames at >= 60 ms: the job outlasts the wait below
    choose_and_analyse(page, face_video)
    page.wait_for_function("() => document.getElementById('progress').value > 0", timeout=30_000)
    page.evaluate(
        """() => { const data = new DataTransfer(); data.items.add(new File(['x'], 'other.mp4', {type: 'video/mp4'}));
                   document.getElementById('video-form').dispatchEvent(new DragEvent('drop', {dataTransfer: data})); }"""
    )
    time.sleep(1.5)  # five polls: each used to write its progress over the refusal
    assert "cancel it before" in page.text_content("#message")
    page.click("#cancel")  # the one video slot is the next test's
