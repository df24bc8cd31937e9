"""Video files: probe the container, decode from memory, analyse sampled frames with the live tracker."""

from __future__ import annotations

import csv
import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from webapp.vision.budget import DecodeLimits
from webapp.vision.display import Display, frame_display
from webapp.vision.labels import EMOTIONS
from webapp.vision.tracker import FaceTracker
from webapp.vision.types import FaceResult, rescaled

if TYPE_CHECKING:
    import av
    import numpy as np

# MP4 and MOV are one demuxer in FFmpeg, MKV and WebM another; anything else (AVI, GIF, a JPEG) is refused
CONTAINERS = ("mov", "mp4", "matroska", "webm")
CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4")
# how MP4/MOV (an ISO box) and MKV/WebM (EBML) files start: a file that does is a damaged video, not "not a video"
_VIDEO_MAGIC = (b"\x1a\x45\xdf\xa3",)
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
# longer side a frame is analysed at, as large JPEGs are: the detectors see
# 128-192 px and the classifier 48, while a 35 MP frame is 100 MB as RGB and over 1 GB in the detector's copies
ANALYSED_SIDE = DecodeLimits.draft_side
# decoded frames the decoder's threads may hold at once, in bytes (as MAX_DECODE_MB's default for one image):
# each frame thread holds one, and an 8K frame is 50 MB, so 17 threads on a 16-core server would be 850 MB
FRAME_THREADS_BUDGET = 100 * 1024 * 1024


class VideoError(Exception):
    """A video that cannot be analysed; `code` is the API's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class _Cancelled(Exception):
    """The job was cancelled between two decoded frames."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, before any frame is decoded; in an analysis, `width` x `height`
    are the frames' as players show them (a phone's display rotation applied)."""

    container: str
    codec: str
    width: int
    height: int
    duration_s: float | None


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its time in seconds and its tracked faces."""

    t: float
    faces: tuple[FaceResult, ...]
    # faces detected, of which `faces` holds the largest, up to the pipeline's `max_faces`; None: as many as `faces`
    faces_found: int | None = None

    @property
    def over_face_limit(self) -> bool:
        return self.faces_found is not None and self.faces_found > len(self.faces)

    def to_dict(self) -> dict:
        found = len(self.faces) if self.faces_found is None else self.faces_found
        return {"t": round(self.t, 3), "faces": [face.to_dict() for face in self.faces], "faces_found": found}


@dataclass(frozen=True)
class VideoAnalysis:
    """Every sampled frame of a video, with the container's facts and the time taken."""

    info: VideoInfo
    sampled_fps: float
    frames: tuple[VideoFrame, ...]
    elapsed_s: float
    # the classifier's classes: the summary's and the CSV's emotion columns
    classes: tuple[str, ...] = EMOTIONS

    @property
    def duration_s(self) -> float:
        """The container's duration, or the last decoded frame's time when it declares none."""
        if self.info.duration_s is not None:
            return self.info.duration_s
        return self.frames[-1].t if self.frames else 0.0

    def summary(self) -> dict:
        """Per-track and overall emotion counts (each face in each sampled frame counts once)."""
        tracks: dict[int, dict] = {}
        overall: Counter[str] = Counter()
        for frame in self.frames:
            for face in frame.faces:
                overall[face.emotion.label] += 1
                track = tracks.setdefault(
                    face.track_id, {"id": face.track_id, "first_t": frame.t, "frames": 0, "emotions": Counter()}
                )
                track["last_t"], track["frames"] = frame.t, track["frames"] + 1
                track["emotions"][face.emotion.label] += 1
        face_frames = sum(overall.values())
        return {
            "sampled_frames": len(self.frames),
            "frames_with_faces": sum(1 for frame in self.frames if frame.faces),
            "frames_over_face_limit": sum(1 for frame in self.frames if frame.over_face_limit),
            "tracks": [
                {
                    "id": t["id"],
                    "first_t": round(t["first_t"], 3),
                    "last_t": round(t["last_t"], 3),
                    "frames": t["frames"],
                    "emotion": t["emotions"].most_common(1)[0][0],
                }
                for t in tracks.values()
            ],
            "emotions": {
                label: round(overall[label] / face_frames, 4) if face_frames else 0.0 for label in self.classes
            },
            "dominant": overall.most_common(1)[0][0] if overall else None,
        }

    def to_dict(self) -> dict:
        """The API's JSON reply."""
        return {
            "duration_s": round(self.duration_s, 3),
            "sampled_fps": self.sampled_fps,
            "width": self.info.width,
            "height": self.info.height,
            "frames": [frame.to_dict() for frame in self.frames],
            "summary": self.summary(),
            "timings_ms": {"total": round(self.elapsed_s * 1000, 1)},
        }

    def to_csv(self) -> str:
        """One row per face per sampled frame; a frame without faces is one row with only `t`."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["t", "id", "x", "y", "width", "height", "detection_score", "emotion", "score", *self.classes])
        for frame in self.frames:
            if not frame.faces:
                writer.writerow([round(frame.t, 3)] + [""] * (8 + len(self.classes)))
            for face in frame.faces:
                d = face.to_dict()
                box = d["box"]
                writer.writerow(
                    [
                        round(frame.t, 3),
                        d["id"],
                        *(box[key] for key in ("x", "y", "width", "height")),
                        d["detection_score"],
                        d["emotion"],
                        d["score"],
                        *(d["probabilities"][e] for e in self.classes),
                    ]
                )
        return out.getvalue()


def available() -> bool:
    """Whether PyAV can be imported: `requirements.txt` installs it, `requirements-live.txt` (live stream and
    images only, for lean instances) does not."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _looks_like_video(head: bytes) -> bool:
    return head.startswith(_VIDEO_MAGIC) or head[4:8] in _ISO_BOXES


def _open(source, max_pixels: int) -> av.container.InputContainer:
    """The container, its headers read. FFmpeg decodes a first frame or two to fill in what the headers
    leave out; told `max_pixels` it leaves larger ones undecoded (an 8192x6144 H.264 file took +119 MB
    before `probe` could refuse it from its headers; +20 MB now)."""
    import av

    head = source.read(12)
    source.seek(0)
    try:
        return av.open(source, mode="r", options={"max_pixels": str(max_pixels)})
    except av.error.EOFError:
        if _looks_like_video(head):  # headers and then nothing: a recording stopped before its first frame
            raise VideoError("no_frames", "the video holds no frames") from None
        raise VideoError("not_a_video", "the file is not a video (MP4, WebM, MOV or MKV)") from None
    except (av.error.FFmpegError, ValueError, OSError):
        if _looks_like_video(head):
            raise VideoError("corrupt_video", "the video is damaged or truncated: its headers cannot be read") from None
        raise VideoError("not_a_video", "the file is not a video (MP4, WebM, MOV or MKV)") from None


def probe(
    container: av.container.InputContainer, max_seconds: float, max_pixels: int = DecodeLimits.max_pixels
) -> VideoInfo:
    """Check an opened container against what can be analysed, from its headers only.

    Raises:
        VideoError: not_a_video (another container), no_video_stream (audio only),
            unsupported_codec, too_large (frames over `max_pixels`), too_long (declared
            duration over `max_seconds`).
    """
    import av

    names = container.format.name.split(",")
    if not any(name in CONTAINERS for name in names):
        raise VideoError("not_a_video", f"{container.format.long_name} is not a video container (MP4, WebM, MOV, MKV)")
    if not container.streams.video:
        if container.streams.audio:
            raise VideoError("no_video_stream", "the file holds audio only")
        raise VideoError("no_video_stream", "the file holds no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name is None:
        raise VideoError("corrupt_video", "the video stream's headers are damaged")
    codec = stream.codec_context.name
    if codec not in CODECS:
        raise VideoError("unsupported_codec", f"video codec {codec!r} is not supported (use {', '.join(CODECS)})")
    _check_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
    duration = None
    if container.duration is not None:
        duration = container.duration / av.time_base
    elif stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    if duration is not None and duration > max_seconds:
        raise VideoError("too_long", f"the video lasts {duration:.0f} s; the limit is {max_seconds:g} s")
    return VideoInfo(container.format.name, codec, stream.codec_context.width, stream.codec_context.height, duration)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    # a 200 KB file can hold thousands of 8192x8192 frames: each one costs the decoder and the detector
    # hundreds of megabytes, however few of them are sampled
    if width * height > max_pixels:
        raise VideoError(
            "too_large", f"the video's frames are {width}x{height} pixels; the limit is {max_pixels:,} pixels"
        )


def sampled_frames(
    container,
    stream,
    fps: float,
    max_seconds: float,
    max_pixels: int = DecodeLimits.max_pixels,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames at `fps` at most, one at a time, with their times in seconds from the first frame.

    `cancelled` is polled at every decoded frame, sampled or not: at a low `fps` most of the
    decoding happens between two samples.

    Raises:
        VideoError: corrupt_video (undecodable data before any frame), too_long
            (frames past `max_seconds`: the container's duration can be missing or wrong),
            too_large (a frame over `max_pixels`: the size can change mid-stream; or one grown past what
            the stream's frame threads may hold, `frame_threads_limit`).
    """
    import av

    step, next_t, start, yielded = 1.0 / fps, 0.0, None, False
    # before decoding: the codec context follows the stream's size as it changes
    declared, threads_limit = (stream.codec_context.width, stream.codec_context.height), frame_threads_limit(stream)
    try:
        for frame in container.decode(stream):
            if cancelled is not None and cancelled():
                raise _Cancelled()
            _check_size(frame.width, frame.height, max_pixels)
            if frame.width * frame.height > threads_limit:
                raise VideoError(
                    "too_large",
                    f"the video's frames grow to {frame.width}x{frame.height} mid-stream, from the "
                    f"{declared[0]}x{declared[1]} its headers declare; "
                    f"frames over {threads_limit:,} pixels must be declared",
                )
            if frame.time is None:
                continue
            start = frame.time if start is None else start
            t = frame.time - start
            if t > max_seconds:
                raise VideoError("too_long", f"the video runs past the {max_seconds:g} s limit")
            # a millisecond's slack: 30 fps timestamps never land exactly on 0.2 s steps
            if t >= next_t - 1e-3:
                next_t = (int(t / step + 1e-3) + 1) * step
                yielded = True
                yield t, frame
    except av.error.EOFError:
        return  # a stream that ends early: no_frames if nothing came, else what came
    except av.error.FFmpegError:
        if not yielded:
            raise VideoError("corrupt_video", "the video's frames cannot be decoded") from None
        # a truncated file: its frames so far are the answer


def decoder_threads(pixels: int, cores: int | None = None) -> int:
    """Frame threads for frames of `pixels`: FFmpeg's own choice (cores + 1, at most 16; 1 on one core)
    unless the frames they would hold (4:2:0, 1.5 bytes a pixel) exceed `FRAME_THREADS_BUDGET`; at least one.
    `cores`: the cores this process may run on (its affinity, not the machine's count)."""
    cores = cores or len(os.sched_getaffinity(0))
    automatic = 1 if cores == 1 else min(cores + 1, 16)
    return max(1, min(automatic, FRAME_THREADS_BUDGET // max(1, pixels * 3 // 2)))


def frame_threads_limit(stream) -> int:
    """The largest frame (pixels) `stream`'s decoder may hold one of per frame thread within
    `FRAME_THREADS_BUDGET`, or the size its headers declare if larger (their thread count was chosen for it).

    The threads are chosen from the declared size, but a stream can grow mid-way (a 114 KB file: 200
    frames of 64x64, then 36 MP ones), and each thread then holds one grown frame: 1.7 GB on 16 cores.
    A webcam recording that steps up its resolution stays far below this."""
    declared = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
    return max(declared, FRAME_THREADS_BUDGET * 2 // (3 * max(1, stream.thread_count or 1)))


def _analysed_rgb(frame: av.VideoFrame, display: Display) -> np.ndarray:
    """The frame as RGB, as `display` shows it, shrunk to `ANALYSED_SIDE` on its longer side when it is larger."""
    scale = ANALYSED_SIDE / max(frame.width, frame.height)
    if scale >= 1:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
        rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return display.apply(rgb)


def analyze_video(
    source,
    pipeline,
    fps: float = 5.0,
    max_seconds: float = 600.0,
    progress: Callable[[float, float | None], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    max_pixels: int = DecodeLimits.max_pixels,
) -> VideoAnalysis | None:
    """Analyse a video held in memory, `fps` frames per second, tracking faces across them.

    Args:
        source: a seekable binary file object (e.g. `io.BytesIO`); nothing touches the disk.
        pipeline: an `EmotionPipeline` (`analyze(rgb)`, `classes`).
        fps: frames analysed per second of video.
        max_seconds: longest video accepted.
        progress: called after each sampled frame with the seconds of video done and the fraction of
            the video done (None for a video that declares no duration, as a recorded WebM).
        cancelled: polled before each decoded frame; when it answers True the analysis stops.
        max_pixels: largest frame (width x height) accepted.

    Returns:
        The analysis, or None when cancelled.

    Raises:
        VideoError: see `probe` and `sampled_frames`; no_frames when no frame could be decoded.
    """
    started = time.perf_counter()
    with _open(source, max_pixels) as container:
        info = probe(container, max_seconds, max_pixels)
        if progress is not None and not info.duration_s:
            progress(0.0, None)  # said at once: no fraction is coming, so none should show before the first frame
        stream = container.streams.video[0]
        # read while the container is open: closing it frees the stream's data under PyAV's object
        rate = sampled_rate(stream, fps)
        stream.thread_type = "AUTO"  # frame threads: decoding is half the cost of a 640x480 frame
        stream.thread_count = decoder_threads(info.width * info.height)
        tracker = FaceTracker.at_rate(rate)
        frames = []
        try:
            for t, frame in sampled_frames(container, stream, fps, max_seconds, max_pixels, cancelled):
                display = frame_display(frame)  # it comes with the frames, not the headers
                shown_width, shown_height = display.size(frame.width, frame.height)
                if not frames:
                    info = replace(info, width=shown_width, height=shown_height)
                rgb = _analysed_rgb(frame, display)
                # boxes in the shown frame's own pixels, not the shrunk copy's
                analysis = pipeline.analyze(rgb)
                faces = rescaled(analysis.faces, rgb.shape, shown_width, shown_height)
                frames.append(VideoFrame(t, tracker.update(faces), analysis.faces_found))
                if progress is not None:
                    progress(t, min(1.0, t / info.duration_s) if info.duration_s else None)
        except _Cancelled:
            return None
    if not frames:
        raise VideoError("no_frames", "the video holds no decodable frame")
    return VideoAnalysis(info, rate, tuple(frames), time.perf_counter() - started, pipeline.classes)


def sampled_rate(stream, fps: float) -> float:
    """Frames analysed per second: `fps` as asked, or the video's own average rate where that is lower
    (a 10 fps video has 10 frames a second to give, whatever was asked)."""
    own = stream.average_rate or stream.guessed_rate
    return min(fps, round(float(own), 3)) if own else fps
