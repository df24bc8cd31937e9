"""Video jobs: a bounded registry of analyses in progress or done, which the video page polls and can cancel."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from webapp.vision.budget import BusyError, release_free_memory
from webapp.vision.video import VideoAnalysis


@dataclass
class VideoJob:
    """One video analysis. `state`: running, done, failed or cancelled."""

    id: str
    state: str = "running"
    progress: float = 0.0
    result: VideoAnalysis | None = None
    error: tuple[str, str] | None = None
    cancel_requested: bool = False
    finished_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict:
        """The job's state as the polling page sees it (the result only once done)."""
        reply = {"id": self.id, "state": self.state, "progress": round(self.progress, 4)}
        if self.result is not None:
            reply["result"] = self.result.to_dict()
        if self.error is not None:
            reply["error"] = {"code": self.error[0], "message": self.error[1]}
        return reply


class VideoJobs:
    """At most `limit` video analyses at once; finished jobs are kept `keep_s` seconds, at most `keep` of them.

    A video job holds its upload (up to MAX_VIDEO_MB) and a decoder for its whole run:
    a cap that refuses (503) instead of queueing keeps memory and CPU bounded, and the live
    stream keeps its share of the cores.

    Args:
        limit: running jobs allowed at once.
        lock: a lock usable from green and native threads (`webapp.concurrency.lock_factory`).
        keep: finished jobs remembered for polling; the oldest are forgotten first.
        keep_s: seconds a finished job is remembered.
    """

    def __init__(self, limit: int = 1, lock=None, keep: int = 8, keep_s: float = 600.0):
        self.limit, self.keep, self.keep_s = limit, keep, keep_s
        self._lock = lock or threading.Lock()
        self._jobs: dict[str, VideoJob] = {}

    def start(self) -> VideoJob:
        """Register a running job.

        Raises:
            BusyError: `limit` jobs are running already.
        """
        with self._lock:
            self._expire()
            if sum(job.state == "running" for job in self._jobs.values()) >= self.limit:
                raise BusyError(f"{self.limit} video(s) are being analysed; retry later")
            job = VideoJob(secrets.token_urlsafe(12))
            self._jobs[job.id] = job
            return job

    def finish(self, job: VideoJob, result: VideoAnalysis | None = None, error: tuple[str, str] | None = None) -> None:
        """Record how a job ended: its result, its error, or (neither) its cancellation."""
        with self._lock:
            job.result, job.error, job.finished_at = result, error, time.monotonic()
            job.state = "done" if result is not None else "failed" if error is not None else "cancelled"
            if result is not None:
                job.progress = 1.0
        release_free_memory()  # the upload and the decoder's buffers are gone

    def get(self, job_id: str) -> VideoJob | None:
        """The job, if it is running or finished recently."""
        with self._lock:
            self._expire()
            return self._jobs.get(job_id)

    def _expire(self) -> None:
        now = time.monotonic()
        finished = sorted(
            (job for job in self._jobs.values() if job.finished_at is not None), key=lambda job: job.finished_at
        )
        for i, job in enumerate(finished):
            if now - job.finished_at > self.keep_s or i < len(finished) - self.keep:
                del self._jobs[job.id]
