"""Flask test-client and Socket.IO test-client tests of the web layer, with the real pipeline."""

import io
import os

import numpy as np
import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from tests.harness import jpeg_bytes, png_claiming
from tests.scenes import group_photo, match
from webapp.vision.types import Box


def test_pages_render_with_local_assets_only(client):
    for path in ("/", "/upload", "/video"):
        page = client.get(path)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "https://" not in html and "http://" not in html
    with client.get("/static/vendor/socket.io-client/socket.io.esm.min.js") as script:
        assert script.status_code == 200


def test_vendored_chart_library_is_served_locally(client):
    html = client.get("/").get_data(as_text=True)
    assert "/static/vendor/uplot/uPlot.min.css" in html
    for path in ("uPlot.esm.js", "uPlot.min.css", "LICENSE"):
        with client.get(f"/static/vendor/uplot/{path}") as asset:
            assert asset.status_code == 200 and asset.content_length > 1000


def test_healthz_reports_readiness_and_models(client):
    body = client.get("/healthz").get_json()
    assert body["ready"] is True
    assert body["models"]["stream"]["detector"] == "blazeface-auto"
    assert body["models"]["image"]["detector"] == "blazeface-tiled"
    assert body["models"]["stream"]["classifier"].endswith(".tflite")
    assert body["instance"].endswith(f":{os.getpid()}")  # host:pid unless INSTANCE names it


def test_analyze_multipart(client, grace_jpeg):
    reply = client.post("/api/v1/analyze", data={"image": (io.BytesIO(grace_jpeg), "grace.jpg")})
    assert reply.status_code == 200
    body = reply.get_json()
    assert len(body["faces"]) == 1 and body["width"] == 512
    assert abs(sum(body["faces"][0]["probabilities"].values()) - 1) < 1e-3


def test_analyze_finds_every_face_of_a_large_group_photo(client):
    # 18 faces 60 px tall in a 3000 px photo: the whole-image pass sees them at 4 px; more than MAX_FACES
    photo, truth = group_photo()
    reply = client.post("/api/v1/analyze", data=jpeg_bytes(photo), content_type="image/jpeg")
    assert reply.status_code == 200
    found = [Box(**face["box"]) for face in reply.get_json()["faces"]]
    assert match(found, truth) == (18, 0)


def test_analyze_raw_body(client, grace_jpeg):
    reply = client.post("/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg")
    assert reply.status_code == 200 and len(reply.get_json()["faces"]) == 1


def test_no_face_is_not_an_error(client):
    reply = client.post(
        "/api/v1/analyze", data=jpeg_bytes(np.full((64, 64, 3), 40, np.uint8)), content_type="image/jpeg"
    )
    assert reply.status_code == 200 and reply.get_json()["faces"] == []


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"data": b"", "content_type": "image/jpeg"}, 400, "empty"),
        ({"data": b"\x89garbage" * 100, "content_type": "application/octet-stream"}, 400, "not_an_image"),
        ({"data": {"other": (io.BytesIO(b"x"), "x.jpg")}}, 400, "missing_image"),
        ({"data": png_claiming(50_000, 50_000), "content_type": "image/png"}, 413, "too_large"),
        ({"data": b"\xff\xd8" + b"\x00" * (3 * 1024 * 1024), "content_type": "image/jpeg"}, 413, "too_large"),
    ],
    ids=["empty", "garbage", "wrong-field", "decompression-bomb", "oversize-upload"],
)
def test_bad_uploads_get_json_errors(client, kwargs, status, code):
    reply = client.post("/api/v1/analyze", **kwargs)
    assert reply.status_code == status
    assert reply.get_json()["error"]["code"] == code


def test_gif_is_unsupported(client):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    reply = client.post("/api/v1/analyze", data=buffer.getvalue(), content_type="image/gif")
    assert reply.status_code == 415 and reply.get_json()["error"]["code"] == "unsupported_format"


def test_unknown_api_route_and_method_are_json(client):
    assert client.get("/api/v1/nope").get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/analyze").status_code == 405


def test_socket_frame_gets_faces_in_the_ack(socket_client, webcam_frame):
    reply = socket_client.emit("frame", jpeg_bytes(webcam_frame), callback=True)
    assert reply["width"] == 640 and reply["height"] == 480
    assert len(reply["faces"]) == 1
    assert reply["faces"][0]["id"] == 1
    again = socket_client.emit("frame", jpeg_bytes(webcam_frame), callback=True)
    assert again["faces"][0]["id"] == 1  # tracked across frames


def test_a_reset_during_an_analysis_leaves_the_old_frame_out_of_the_new_tracker(app):
    from flask import request

    from tests.scenes import place_face
    from webapp import create_app, events, socketio_of

    stream = app.extensions["pipelines"]["stream"]

    class ResetMidway:
        """The stream pipeline; the client's reset (a camera switch) arrives while the frame is analysed."""

        armed = False

        def analyze_bytes(self, data):
            analysis = stream.analyze_bytes(data)
            if self.armed:
                events._clients[request.sid].reset()
            return analysis

        def describe(self):
            return stream.describe()

    midway = ResetMidway()
    twin = create_app({**app.config, "PIPELINES": {**app.extensions["pipelines"], "stream": midway}})
    sio = socketio_of(twin).test_client(twin)
    old_camera = jpeg_bytes(place_face(150, centre=(0.25, 0.5))[0])
    new_camera = jpeg_bytes(place_face(150, centre=(0.75, 0.5))[0])
    assert sio.emit("frame", old_camera, callback=True)["faces"][0]["id"] == 1
    midway.armed = True
    sio.emit("frame", old_camera, callback=True)
    midway.armed = False
    # the new camera's face is the new tracker's first: the old camera's face is not tracked there
    assert sio.emit("frame", new_camera, callback=True)["faces"][0]["id"] == 1
    sio.disconnect()


def test_reset_forgets_the_faces_and_takes_any_arguments(socket_client, webcam_frame):
    from tests.scenes import place_face

    face = jpeg_bytes(place_face(150)[0])
    assert socket_client.emit("frame", face, callback=True)["faces"][0]["id"] == 1
    for args in ((), ("garbage",), (b"\x00" * 1000, {"a": [1]})):
        assert socket_client.emit("reset", *args, callback=True) == {"ok": True}
        assert socket_client.emit("frame", face, callback=True)["faces"][0]["id"] == 1  # a new tracker's first


def test_a_connection_the_server_holds_no_state_for_is_told_to_reconnect(app, webcam_frame):
    from webapp import events, socketio_of

    sio = socketio_of(app).test_client(app)
    sio.emit("frame", jpeg_bytes(webcam_frame), callback=True)
    events._clients.clear()  # as on an instance restarted under a client that kept its session
    for event, args in (("frame", (jpeg_bytes(webcam_frame),)), ("reset", ())):
        assert sio.emit(event, *args, callback=True)["error"]["code"] == "not_connected"
    sio.disconnect()


@pytest.mark.parametrize(
    "payload", ["text", {"frame": 1}, [1, 2], 42, None], ids=["str", "dict", "list", "int", "none"]
)
def test_socket_wrong_payload_types_get_an_error_ack(socket_client, payload):
    reply = socket_client.emit("frame", payload, callback=True)
    assert reply["error"]["code"] == "bad_payload"


@pytest.mark.parametrize(
    "payload, code",
    [(b"", "empty"), (b"not a jpeg at all", "not_an_image"), (b"\xff\xd8\xff" + b"\x11" * 300 * 1024, "too_large")],
    ids=["zero-bytes", "garbage", "oversize"],
)
def test_socket_bad_frames_get_an_error_ack(socket_client, payload, code):
    assert socket_client.emit("frame", payload, callback=True)["error"]["code"] == code


def test_truncated_frame_gets_an_error_ack(socket_client, webcam_frame):
    data = jpeg_bytes(webcam_frame)
    assert socket_client.emit("frame", data[: len(data) // 3], callback=True)["error"]["code"] == "corrupt_image"


def test_frame_flood_is_rate_limited_and_other_clients_are_unaffected(app, socket_client, webcam_frame):
    from webapp import socketio_of

    tiny = jpeg_bytes(webcam_frame[:8, :8])
    codes = [
        socket_client.emit("frame", tiny, callback=True).get("error", {}).get("code")
        for _ in range(app.config["MAX_FPS_PER_CLIENT"] + 10)
    ]
    assert "rate_limited" in codes
    other = socketio_of(app).test_client(app)
    assert len(other.emit("frame", jpeg_bytes(webcam_frame), callback=True)["faces"]) == 1
    other.disconnect()


def test_server_survives_bad_input_and_keeps_serving(client, socket_client, grace_jpeg):
    socket_client.emit("frame", "junk", callback=True)
    client.post("/api/v1/analyze", data=b"junk", content_type="image/jpeg")
    assert client.post("/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg").status_code == 200


def test_pipeline_crash_becomes_a_500_json_and_an_error_ack(model_path, grace_jpeg):
    from webapp import create_app, socketio_of

    class Broken:
        def analyze_bytes(self, data):
            raise RuntimeError("boom")

        def describe(self):
            return {}

    app = create_app({"TESTING": True, "ASYNC_MODE": "threading", "PIPELINES": {"stream": Broken(), "image": Broken()}})
    reply = app.test_client().post("/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg")
    assert reply.status_code == 500 and reply.get_json()["error"]["code"] == "internal_error"
    sio = socketio_of(app).test_client(app)
    assert sio.emit("frame", grace_jpeg, callback=True)["error"]["code"] == "internal_error"
    sio.disconnect()


def test_large_uploads_are_never_spooled_to_disk(client, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    big = jpeg_bytes(np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8))
    assert len(big) > 600 * 1024  # above Werkzeug's 500 KB in-memory threshold
    # encoded here, in memory: the test client itself would spool a big multipart body to a temporary file
    boundary, body = encode_multipart({"image": FileStorage(io.BytesIO(big), "noise.jpg", content_type="image/jpeg")})
    reply = client.post("/api/v1/analyze", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert reply.status_code == 200


def test_raw_body_with_curls_default_content_type(client, grace_jpeg):
    reply = client.post("/api/v1/analyze", data=grace_jpeg, content_type="application/x-www-form-urlencoded")
    assert reply.status_code == 200 and len(reply.get_json()["faces"]) == 1


def test_crop_mode_answers_a_face_crop_with_the_image_as_its_box(client, grace_rgb):
    crop = grace_rgb[140:345, 165:365]
    for size in (48, 112, 224):
        data = jpeg_bytes(np.asarray(Image.fromarray(crop).resize((size, size))))
        body = client.post("/api/v1/analyze?faces=whole", data=data, content_type="image/jpeg").get_json()
        assert len(body["faces"]) == 1
        assert body["faces"][0]["box"] == {"x": 0.0, "y": 0.0, "width": float(size), "height": float(size)}
    blank = client.post(
        "/api/v1/analyze?faces=whole",
        data={"image": (io.BytesIO(jpeg_bytes(np.full((48, 48, 3), 99, np.uint8))), "f.jpg")},
    )
    assert blank.status_code == 200 and len(blank.get_json()["faces"]) == 1


def test_a_face_crop_without_crop_mode_is_found_by_the_padded_retry(client, grace_rgb):
    crop = np.asarray(Image.fromarray(grace_rgb[140:345, 165:365]).resize((112, 112)))
    body = client.post("/api/v1/analyze", data=jpeg_bytes(crop), content_type="image/jpeg").get_json()
    assert len(body["faces"]) == 1 and body["faces"][0]["box"]["width"] > 60


def test_unknown_faces_mode_is_a_json_400(client, grace_jpeg):
    reply = client.post("/api/v1/analyze?faces=some", data=grace_jpeg, content_type="image/jpeg")
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == "bad_parameter"


def test_bad_input_in_crop_mode_gets_the_same_errors(client):
    reply = client.post(
        "/api/v1/analyze?faces=whole", data=b"\x89garbage" * 100, content_type="application/octet-stream"
    )
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == "not_an_image"
    reply = client.post("/api/v1/analyze?faces=whole", data=b"", content_type="image/jpeg")
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == "empty"


def test_a_second_app_in_the_process_leaves_the_first_apps_stream_alone(app, webcam_frame):
    # each app has its own Socket.IO server: building another (a test, a second app in a worker) must
    # not take over the sessions of one already serving
    import socketio as socketio_client

    from tests.harness import serve_in_thread, twin_app

    serving = twin_app(app)
    with serve_in_thread(serving) as url:
        twin_app(app)
        with socketio_client.SimpleClient() as client:
            client.connect(url, wait_timeout=10)
            reply = client.call("frame", jpeg_bytes(webcam_frame), timeout=30)
    assert len(reply["faces"]) == 1


def test_the_api_and_the_socket_ack_give_probabilities_in_the_models_order(client, socket_client, grace_jpeg):
    from tests.harness import SHIPPED_CLASSES

    photo = client.post("/api/v1/analyze", data=grace_jpeg, content_type="image/jpeg").get_data(as_text=True)
    ack = socket_client.emit("frame", grace_jpeg, callback=True)
    import json

    served = json.loads(photo)["faces"][0]["probabilities"]
    assert tuple(served) == tuple(ack["faces"][0]["probabilities"]) == SHIPPED_CLASSES


def test_a_keras_model_on_a_server_without_tensorflow_is_refused_at_start_up(monkeypatch):
    import importlib.util

    from tests.harness import ROOT
    from webapp import config

    settings = {**config.from_env(), "MODEL_PATH": str(ROOT / "checkpoints/sc-w64-a20-s51/best.keras")}
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "keras" else found(name, *rest)
    )
    with pytest.raises(config.SettingsError, match="is a Keras model, which needs TensorFlow"):
        config.check(settings)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"DETECTOR": "nope"}, "DETECTOR must be one of"),
        ({"FLIP_TTA": "ture"}, "FLIP_TTA must be"),
        ({"MAX_UPLOAD_MB": "abc"}, "MAX_UPLOAD_MB must be an integer"),
        ({"UPLOAD_MAX_FACES": "0"}, "UPLOAD_MAX_FACES must be positive"),
        ({"MAX_HELD_BODIES_MB": "21"}, "MAX_HELD_BODIES_MB must be at least 22"),
        ({"UPLOAD_DETECTOR": "tiles"}, "UPLOAD_DETECTOR must be one of"),
        ({"MODEL_PATH": "missing.tflite"}, "MODEL_PATH 'missing.tflite' does not exist"),
        ({"PORT": "http"}, "PORT must be a port number"),
        ({"PORT": "99999"}, "PORT must be a port number"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_local_server_with_one_line(setting, named):
    import subprocess
    import sys

    from tests.harness import ROOT

    run = subprocess.run(
        [sys.executable, "-m", "webapp"],
        cwd=ROOT,
        env={**os.environ, **setting},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("moodlens: ") and named in run.stderr
    assert "Traceback" not in run.stderr
