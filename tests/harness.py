"""Test and benchmark harness: where the data and Chromium are, a webcam-like face frame, image bytes,
a fake-camera video, Chromium flags, a production server. Tests (through conftest) and bench/ both use it."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from deploy.procfile import web_process
from webapp.config import DEFAULT_MODEL
from webapp.vision.labels import EMOTIONS
from webapp.vision.litert import read_classes

ROOT = Path(__file__).resolve().parent.parent
# the data kept beside the repository (never in it) and Debian's Chromium; both can be moved
SHARED = Path(os.environ.get("MOODLENS_SHARED", ROOT.parent / "shared"))
FER2013 = SHARED / "datasets" / "fer2013"
FACES_IN_SCENES = SHARED / "datasets" / "faces-in-scenes"
CHROMIUM = os.environ.get("MOODLENS_CHROMIUM", "/usr/bin/chromium")
# the classes the shipped model outputs, read from its file (8 with contempt since the FER+ model)
SHIPPED_CLASSES: tuple[str, ...] = tuple(read_classes(DEFAULT_MODEL) or EMOTIONS)
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Grace Hopper's face in matplotlib's sample photo (512x600), found by hand
GRACE_FACE = (165, 140, 200, 205)
# where `webcam_frame` puts the photo: 0.75 scale at (128, 15)
FRAME_OFFSET, FRAME_SCALE = (128, 15), 0.75


def grace_hopper_rgb() -> np.ndarray:
    """A real face photo that ships in matplotlib's wheel."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def write_random_faces(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A dataset folder of random 48x48 gray faces, `root/<split>/<emotion>/<i>.png`, for smoke runs:
    `per_class` maps each split to its number of faces per class."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for emotion in EMOTIONS:
            (root / split / emotion).mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(root / split / emotion / f"{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def tiny_emotion_model(outputs: int, classes: tuple[str, ...] | None = None, seed: int = 0):
    """An untrained few-layer Keras model on the served 48x48x1 input: Dense(`outputs`, softmax, name "emotion"),
    then, given `classes`, the `EmotionClasses` layer that names them (models made before it have none)."""
    import keras

    from webapp.vision.layers import EmotionClasses

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.Dense(outputs, activation="softmax", name="emotion")(keras.layers.Flatten()(x))
    return keras.Model(inputs, EmotionClasses(classes)(x) if classes else x)


def plain_tflite(model) -> bytes:
    """A Keras model converted as files were before their metadata (class list, flip TTA): none."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def noise_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG of random pixels: as large a file as its size in pixels allows (1.4 bytes per pixel: 3000x2500
    is 10.0 MB), cheap to decode, with no face to find."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return jpeg_bytes(rgb, quality=97)


class ReadWatcher(io.BytesIO):
    """A request body that counts the bytes read from it and calls `on_first_read` once."""

    def __init__(self, data: bytes, on_first_read=None):
        super().__init__(data)
        self.bytes_read, self.on_first_read = 0, on_first_read

    def read(self, size=-1):
        if self.on_first_read is not None:
            self.on_first_read, hook = None, self.on_first_read
            hook()
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's first bytes)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def png_16bit_rgba(width: int, height: int) -> bytes:
    """A real 16-bit RGBA PNG of flat colour: a few hundred KB that decode to width x height x 8 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    compressor = zlib.compressobj(9)
    first = b"\x00" + b"\x12\x34\x56\x78\x9a\xbc\xff\xff" * width  # filter byte, then RGBA samples
    same = b"\x02" + bytes(8 * width)  # filter "Up": the row above again
    data = compressor.compress(first) + b"".join(compressor.compress(same) for _ in range(height - 1))
    data += compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def png_with_text(chunks: int, text_bytes: int, after_pixels: bool = False) -> bytes:
    """A 64x64 PNG carrying `chunks` zTXt chunks of `text_bytes` each once inflated (a few KB of file
    each), before its pixels or, with `after_pixels`, after them."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 80)).save(buffer, "PNG")
    png = buffer.getvalue()
    text = zlib.compress(b"A" * text_bytes, 9)
    extra = b"".join(png_chunk(b"zTXt", b"note%d\x00\x00" % i + text) for i in range(chunks))
    return png_with_chunks(png, extra, after_pixels)


def png_with_chunks(png: bytes, chunks: bytes, after_pixels: bool) -> bytes:
    """`png` with encoded `chunks` (`png_chunk`) after its header or, with `after_pixels`, just before its end."""
    at = len(png) - 12 if after_pixels else 33  # before IEND, or after IHDR
    return png[:at] + chunks + png[at:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def made_up_face(box: tuple[float, float, float, float], classes, emotion: str | None = None, id=None) -> dict:
    """A face as the API's wire format gives it, for a faked server answer: the same probability for every
    one of `classes`, labelled `emotion` (by default the first class)."""
    return {
        "id": id,
        "box": dict(zip(("x", "y", "width", "height"), box, strict=True)),
        "detection_score": 0.9,
        "emotion": emotion or classes[0],
        "score": 0.5,
        "probabilities": {name: 1 / len(classes) for name in classes},
    }


def webcam_frame() -> np.ndarray:
    """A 640x480 RGB frame with one face, as a webcam sends it."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    face = np.asarray(Image.fromarray(grace_hopper_rgb()).resize((384, 450)))
    frame[15:465, 128:512] = face
    return frame


def webcam_face_box() -> tuple[float, float, float, float]:
    """The face's box (x, y, w, h) in `webcam_frame`."""
    x, y, w, h = GRACE_FACE
    return (FRAME_OFFSET[0] + x * FRAME_SCALE, FRAME_OFFSET[1] + y * FRAME_SCALE, w * FRAME_SCALE, h * FRAME_SCALE)


def write_y4m(path: str | Path, frame_rgb: np.ndarray, frames: int = 30, fps: int = 30) -> Path:
    """Write a Y4M video for Chromium's fake camera: `frame_rgb` drifting a few pixels, looped by Chromium."""
    height, width = frame_rgb.shape[:2]
    path = Path(path)
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            shift = int(round(4 * np.sin(2 * np.pi * i / frames)))
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(np.roll(frame_rgb, shift, axis=1), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_production_server(timeout: float = 120, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start the Procfile's server (gunicorn, one eventlet worker, the Procfile's environment) on a loopback port.

    Args:
        timeout: seconds to wait for /healthz.
        env: more environment variables (settings, e.g. BODY_TIMEOUT_S); a value None removes one.

    Returns:
        The process and its base URL, once /healthz answers.

    Raises:
        RuntimeError: the server exited or did not become ready in `timeout` seconds.
    """
    port = free_port()
    # the server's log goes to a file: a pipe nobody reads would fill up and stall the server
    log = tempfile.TemporaryFile()  # noqa: SIM115  (outlives this function: closed by stop_production_server)
    procfile, command = web_process(f"127.0.0.1:{port}")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={
            name: value
            for name, value in {**os.environ, **procfile, **(env or {}), "PORT": str(port)}.items()
            if value is not None
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            message = log.read().decode(errors="replace")[-2000:]
            log.close()
            raise RuntimeError(f"gunicorn exited: {message}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.5)
    stop_production_server(process)
    raise RuntimeError(f"gunicorn did not become ready in {timeout} s")


def worker_pid(process: subprocess.Popen) -> int:
    """The pid of gunicorn's (one) worker under the master `process`."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    if not children:
        raise RuntimeError("gunicorn has no worker")
    return int(children[0])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process, in MB; `field="VmHWM"`: the most it has held since it started
    or since `reset_peak_rss`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak_rss(pid: int) -> bool:
    """Start a process's peak resident memory (VmHWM) again from its present size (Linux 4.0+).

    Returns False where the kernel does not allow it (another user's process, some sandboxes):
    the peak then counts from the process's start, so callers fall back to sampling.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def stop_production_server(process: subprocess.Popen, grace: float = 10) -> None:
    """Stop gunicorn: a graceful TERM first, then KILL if open WebSocket connections hold it up."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)
    process.log.close()


def video_bytes(
    rgb: np.ndarray,
    seconds: float = 2.0,
    fps: int = 30,
    codec: str = "libx264",
    container: str = "mp4",
    size: tuple[int, int] = (640, 480),
    audio: bool = False,
    declare_duration: bool = True,
) -> bytes:
    """Encode a video in memory: `rgb` pasted into a `size` frame, drifting right by 1 px a frame.

    `audio` adds a silent stereo track; `seconds=0` writes a file with a video stream and no frames.
    `declare_duration=False` writes it as a stream is recorded (MediaRecorder's WebM): the muxer
    cannot seek back to the headers, which then hold no duration.
    """
    import av

    width, height = size
    out = io.BytesIO()
    with av.open(out if declare_duration else _Unseekable(out), mode="w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        muxer.start_encoding()  # the headers, even when no frame follows
        sound = muxer.add_stream("aac", rate=16000) if audio else None
        scale = min(1.0, 0.9 * height / rgb.shape[0])
        face = cv2.resize(rgb, None, fx=scale, fy=scale) if scale < 1 else rgb
        for i in range(round(seconds * fps)):
            canvas = np.full((height, width, 3), 90, np.uint8)
            x = min(width - face.shape[1], 20 + i)
            canvas[10 : 10 + face.shape[0], x : x + face.shape[1]] = face
            muxer.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
        muxer.mux(stream.encode())
        if sound is not None:
            muxer.mux(sound.encode())
    return out.getvalue()


@contextlib.contextmanager
def video_frames_delayed(app, wait: Callable[[], object]):
    """`app`'s video pipeline calling `wait()` before it analyses each frame, while the block runs: jobs that
    last long enough to be polled, cancelled or left alone."""
    pipeline = app.extensions["pipelines"]["video"]
    original = pipeline.analyze

    def delayed(rgb, *args):
        wait()
        return original(rgb, *args)

    pipeline.analyze = delayed
    try:
        yield
    finally:
        del pipeline.analyze


class _Unseekable:
    """A file object that can only be written to, as a pipe."""

    def __init__(self, out: io.BytesIO):
        self.write = out.write


def audio_only_bytes(seconds: float = 1.0) -> bytes:
    """An MP4 with one AAC track of silence and no video."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as muxer:
        stream = muxer.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(int(seconds * 16000 / 1024)):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode())
    return out.getvalue()


def twin_app(app, keep_config: bool = True):
    """A new app with `app`'s loaded pipelines, for a real server, and its settings (`keep_config`) or the
    environment's. Flask-SocketIO's test client rewires the Socket.IO server it is made for to talk only to
    test clients, so an app that test clients have used (the session's `app`) can no longer answer real ones."""
    from webapp import create_app

    settings = dict(app.config) if keep_config else {"TESTING": True, "ASYNC_MODE": "threading"}
    return create_app({**settings, "PIPELINES": app.extensions["pipelines"]})


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port from a daemon thread (threaded Werkzeug, WebSocket capable)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def streaming_live_page(playwright, url: str, video: str | Path):
    """Chromium with `video` (a .y4m) as its camera, on the live page at `url`, camera started:
    (browser, page); the caller closes the browser."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"]
    )
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.goto(url + "/")
    page.click("#toggle")
    return browser, page


def watch_page(page) -> tuple[list[str], list[str]]:
    """Collect a Playwright page's JavaScript errors and CSP violations, for the test to assert empty at its end."""
    errors, violations = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI}`));"
    )
    return errors, violations
