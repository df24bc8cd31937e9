"""Follow faces across video frames and smooth their emotions, so labels don't flicker."""

from __future__ import annotations

from dataclasses import dataclass, replace

from webapp.vision.types import Emotion, FaceResult

# the rate the live page sends frames at (camera-paced), which the default settings are for
LIVE_FPS = 30.0


@dataclass
class _Track:
    track_id: int
    face: FaceResult
    missed: int = 0


class FaceTracker:
    """Greedy IoU tracker with an exponential moving average of each face's probabilities.

    One tracker per video stream. `update` matches this frame's faces to the previous
    ones by box overlap, keeps their ids, and blends probabilities:
    smoothed = (1 - alpha) * previous + alpha * current.

    Args:
        alpha: weight of the newest frame (1.0 = no smoothing).
        min_iou: minimum overlap to count as the same face.
        max_missed: frames a face may vanish before its track is dropped.
    """

    def __init__(self, alpha: float = 0.35, min_iou: float = 0.3, max_missed: int = 5):
        self.alpha, self.min_iou, self.max_missed = alpha, min_iou, max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    @classmethod
    def at_rate(cls, fps: float) -> FaceTracker:
        """A tracker for frames 1/`fps` s apart that smooths, and waits for a missing face, as long
        in seconds as the default one does on the live stream's ~30 frames a second. At a video's
        default 5 fps that is little smoothing (alpha 0.92) and a face missing from two frames in
        a row tracked anew: the frames are already 0.2 s apart.

        Counted in frames, the same settings would smooth a 1 fps video over seconds and keep a
        vanished face's id for 5 s, and a 30 fps one over a tenth of a second: one video's
        tracks and emotions would depend on the rate it was sampled at.
        """
        live = cls()
        frames_per_step = LIVE_FPS / max(fps, 1e-3)  # a container may declare a rate of about 0
        return cls(
            alpha=1 - (1 - live.alpha) ** frames_per_step,
            min_iou=live.min_iou,
            max_missed=max(1, round(live.max_missed / frames_per_step)),
        )

    def update(self, faces: tuple[FaceResult, ...] | list[FaceResult]) -> tuple[FaceResult, ...]:
        """Return `faces` with track ids and smoothed emotions, in the input order.

        Tracks are matched in order of how recently they were seen, those of the last frame first: a
        missing face's track keeps its last box, and a face passing in front of it overlapped that box
        more than its own, took its id and blended in its emotion (and the hidden face took the mover's
        id when it came back).
        """
        matched_faces: dict[int, int] = {}
        used_tracks: set[int] = set()
        for missed in sorted({track.missed for track in self._tracks}):
            pairs = sorted(
                (
                    (face.box.iou(track.face.box), i, t)
                    for i, face in enumerate(faces)
                    if i not in matched_faces
                    for t, track in enumerate(self._tracks)
                    if track.missed == missed
                ),
                reverse=True,
            )
            for iou, i, t in pairs:
                if iou < self.min_iou:
                    break
                if i not in matched_faces and t not in used_tracks:
                    matched_faces[i] = t
                    used_tracks.add(t)
        results = []
        for i, face in enumerate(faces):
            if i in matched_faces:
                track = self._tracks[matched_faces[i]]
                face = replace(face, emotion=self._blend(track.face.emotion, face.emotion), track_id=track.track_id)
                track.face, track.missed = face, 0
            else:
                face = replace(face, track_id=self._next_id)
                self._tracks.append(_Track(self._next_id, face))
                used_tracks.add(len(self._tracks) - 1)
                self._next_id += 1
            results.append(face)
        for t, track in enumerate(self._tracks):
            if t not in used_tracks:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        return tuple(results)

    def _blend(self, previous: Emotion, current: Emotion) -> Emotion:
        blended = {
            label: (1 - self.alpha) * previous.probabilities[label] + self.alpha * p
            for label, p in current.probabilities.items()
        }
        return Emotion.from_probabilities(blended)
