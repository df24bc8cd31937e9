"""Video jobs: a bounded registry of analyses in progress or done, which the video page polls and can cancel."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from webapp.vision.budget import BusyError, release_free_memory
from webapp.vision.video import VideoAnalysis

# seconds a client told "busy" should wait: a video job lasts seconds to a minute
VIDEO_RETRY_AFTER_S = 5


class JobsBusy(BusyError):
    """Every video job slot is taken, by running jobs or by uploads being read."""

    retry_after_s = VIDEO_RETRY_AFTER_S


@dataclass(frozen=True)
class JobResult:
    """A finished analysis as the API sends it, serialised once.

    A 600 s video's result took 3.4 s to turn into 49 MB of JSON, and every poll did it
    again on the event loop; its Python objects also take more memory than these bytes
    (a tenth of that result: 14.3 MB of objects, 4.5 MB of JSON, 1.8 MB of CSV).
    """

    json_body: bytes
    csv_body: bytes

    @classmethod
    def of(cls, analysis: VideoAnalysis) -> JobResult:
        """Serialise `analysis` as JSON and as CSV."""
        return cls(json.dumps(analysis.to_dict(), separators=(",", ":")).encode(), analysis.to_csv().encode())


@dataclass
class VideoJob:
    """One video analysis. `state`: running, done, failed or cancelled."""

    id: str
    state: str = "running"
    progress: float | None = 0.0  # None while the video's length is unknown (it declares no duration)
    video_s: float = 0.0  # seconds of video analysed so far
    result: JobResult | None = None
    error: tuple[str, str] | None = None
    cancel_requested: bool = False
    finished_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)
    polled: bool = False  # whether its client has asked about it: it then knows the id

    def never_polled_for(self) -> float:
        """Seconds since the job started, if nobody has polled it yet; 0 once someone has. A page that
        learnt the id cancels the job when it leaves; a hidden tab whose timers a browser suspends
        must find its job still running when it comes back."""
        return 0.0 if self.polled else time.monotonic() - self.started_at

    def cancel(self) -> None:
        """Ask the analysis to stop: it does within one decoded frame."""
        self.cancel_requested = True

    def to_dict(self) -> dict:
        """The job's state, without its result (`json_parts` adds it)."""
        progress = None if self.progress is None else round(self.progress, 4)
        reply = {"id": self.id, "state": self.state, "progress": progress, "video_s": round(self.video_s, 2)}
        if self.error is not None:
            reply["error"] = {"code": self.error[0], "message": self.error[1]}
        return reply

    def json_parts(self) -> list[bytes]:
        """The job's state as the polling page sees it, as JSON in parts: a done job's stored result
        goes out as it is, neither re-encoded nor copied into one reply."""
        state = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        if self.result is None:
            return [state]
        return [state[:-1], b',"result":', self.result.json_body, b"}"]


class UploadSlot:
    """A job slot held while a video's body is read, so no more bodies are read than there are slots.

    `VideoJobs.start` turns it into its job's slot; leaving it (`with`) gives it back otherwise.
    """

    def __init__(self, jobs: VideoJobs):
        self._jobs = jobs
        self.held = True

    def __enter__(self) -> UploadSlot:
        return self

    def __exit__(self, *exc_info) -> None:
        self._jobs.release(self)


class VideoJobs:
    """At most `limit` video analyses at once; finished jobs are kept `keep_s` seconds, at most `keep` of them.

    A video job holds its upload (up to MAX_VIDEO_MB) and a decoder for its whole run:
    a cap that refuses (503) instead of queueing keeps memory and CPU bounded, and the live
    stream keeps its share of the cores. Uploads being read count against the cap too
    (`reserve`): six 190 MB bodies read at once, only to be refused, took 1 GB.

    Args:
        limit: running jobs allowed at once.
        lock: a lock usable from green and native threads (`webapp.concurrency.lock_factory`).
        keep: finished jobs remembered for polling; the oldest are forgotten first.
        keep_s: seconds a finished job is remembered.
        release_memory: hands freed memory back to the system when a job ends (under eventlet, off the
            event loop: `webapp.concurrency.off_the_event_loop`).
    """

    def __init__(
        self,
        limit: int = 1,
        lock=None,
        keep: int = 8,
        keep_s: float = 600.0,
        release_memory: Callable[[], None] = release_free_memory,
    ):
        self.limit, self.keep, self.keep_s = limit, keep, keep_s
        self.release_memory = release_memory
        self._lock = lock or threading.Lock()
        self._jobs: dict[str, VideoJob] = {}
        self._uploads = 0  # slots held by uploads not yet started as jobs

    def reserve(self) -> UploadSlot:
        """Hold a slot for an upload, before its body is read.

        Raises:
            JobsBusy: every slot is taken.
        """
        with self._lock:
            self._check_free()
            self._uploads += 1
            return UploadSlot(self)

    def release(self, slot: UploadSlot) -> None:
        """Give back an upload's slot that did not become a job (a refused or failed upload)."""
        with self._lock:
            self._end_upload(slot)

    def start(self, slot: UploadSlot | None = None) -> VideoJob:
        """Register a running job, in its upload's slot when it holds one.

        Raises:
            JobsBusy: without a slot, every slot is taken.
        """
        with self._lock:
            if slot is None or not self._end_upload(slot):
                self._check_free()
            job = VideoJob(secrets.token_urlsafe(12))
            self._jobs[job.id] = job
            return job

    def _end_upload(self, slot: UploadSlot) -> bool:
        """`slot`'s upload is over (its job starts in the slot, or it was refused): drop it from the uploads'
        count, the lock held. False if it was over already."""
        if not slot.held:
            return False
        slot.held, self._uploads = False, self._uploads - 1
        return True

    def _check_free(self) -> None:
        self._expire()
        if sum(job.state == "running" for job in self._jobs.values()) + self._uploads >= self.limit:
            raise JobsBusy(f"{self.limit} video(s) are being uploaded or analysed; retry later")

    def finish(self, job: VideoJob, result: JobResult | None = None, error: tuple[str, str] | None = None) -> None:
        """Record how a job ended: its result, its error, or (neither) its cancellation."""
        with self._lock:
            job.result, job.error, job.finished_at = result, error, time.monotonic()
            job.state = "done" if result is not None else "failed" if error is not None else "cancelled"
            if result is not None:
                job.progress = 1.0
        self.release_memory()  # the upload and the decoder's buffers are gone

    def forget(self, job: VideoJob) -> None:
        """Drop a job that nobody will poll (a synchronous request's, once answered)."""
        with self._lock:
            self._jobs.pop(job.id, None)

    def get(self, job_id: str) -> VideoJob | None:
        """The job, if it is running or finished recently; asking counts as polling it."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
            if job is not None:
                job.polled = True
            return job

    def _expire(self) -> None:
        now = time.monotonic()
        finished = sorted(
            (job for job in self._jobs.values() if job.finished_at is not None), key=lambda job: job.finished_at
        )
        for i, job in enumerate(finished):
            if now - job.finished_at > self.keep_s or i < len(finished) - self.keep:
                del self._jobs[job.id]
