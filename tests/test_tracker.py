from webapp.vision.labels import EMOTIONS
from webapp.vision.tracker import FaceTracker
from webapp.vision.types import Box, Emotion, FaceResult


def face(x: float, label: str) -> FaceResult:
    probabilities = {e: (0.94 if e == label else 0.01) for e in EMOTIONS}
    return FaceResult(Box(x, 10, 100, 100), 0.9, Emotion.from_probabilities(probabilities))


def test_ids_persist_while_faces_move_a_little():
    tracker = FaceTracker()
    first = tracker.update([face(0, "happy"), face(300, "sad")])
    second = tracker.update([face(305, "sad"), face(8, "happy")])
    assert [f.track_id for f in first] == [1, 2]
    assert [f.track_id for f in second] == [2, 1]


def test_a_single_odd_frame_does_not_flip_the_label():
    tracker = FaceTracker(alpha=0.35)
    for _ in range(5):
        tracker.update([face(0, "happy")])
    blip = tracker.update([face(0, "surprise")])[0]
    assert blip.emotion.label == "happy"
    assert 0.0 < blip.emotion.probabilities["surprise"] < 0.5


def test_label_changes_after_a_few_consistent_frames():
    tracker = FaceTracker(alpha=0.35)
    tracker.update([face(0, "happy")])
    labels = [tracker.update([face(0, "sad")])[0].emotion.label for _ in range(4)]
    assert labels[-1] == "sad"


def test_lost_faces_are_dropped_after_max_missed_frames():
    tracker = FaceTracker(max_missed=2)
    tracker.update([face(0, "happy")])
    for _ in range(3):
        tracker.update([])
    assert tracker.update([face(0, "happy")])[0].track_id == 2


def test_probabilities_stay_normalised():
    tracker = FaceTracker()
    tracker.update([face(0, "happy")])
    smoothed = tracker.update([face(0, "angry")])[0]
    assert abs(sum(smoothed.emotion.probabilities.values()) - 1.0) < 1e-6


def test_six_moving_faces_keep_their_ids_through_missed_frames():
    tracker = FaceTracker(max_missed=5)
    starts = [0, 150, 300, 450, 600, 750]
    first = tracker.update([face(x, "happy") for x in starts])
    ids = [f.track_id for f in first]
    for step in range(1, 8):
        # everyone drifts 6 px a frame; the third face is missed on frames 2-4 (a detector blink)
        visible = [i for i in range(6) if not (i == 2 and 2 <= step <= 4)]
        faces = tracker.update([face(starts[i] + 6 * step, "happy") for i in reversed(visible)])
        assert [f.track_id for f in faces] == [ids[i] for i in reversed(visible)]


def _seconds_to_follow_a_change(fps: float) -> float:
    """Seconds from a happy face turning sad to the smoothed label saying so, sampled at `fps`."""
    tracker = FaceTracker.at_rate(fps)
    for _ in range(round(2 * fps)):
        tracker.update([face(0, "happy")])
    for step in range(1, round(5 * fps)):
        if tracker.update([face(0, "sad")])[0].emotion.label == "sad":
            return (step - 1) / fps
    raise AssertionError("never followed")


def test_a_video_tracker_smooths_over_the_same_time_whatever_the_rate():
    assert vars(FaceTracker.at_rate(30)) == vars(FaceTracker())  # the live stream's rate: the live settings
    live = _seconds_to_follow_a_change(30)
    for fps in (0.5, 1, 5, 10):
        # at the first frame after the change, as live is within a frame of it (a frame-counted
        # tracker waited for a second frame: 2 s at 0.5 fps)
        assert _seconds_to_follow_a_change(fps) == 0 and live < 1 / fps
    assert FaceTracker.at_rate(0).max_missed == 1  # a rate of 0 declared by a container is no error


def test_a_video_tracker_forgets_a_face_gone_for_seconds_at_any_rate():
    for fps in (1, 5, 30):
        tracker = FaceTracker.at_rate(fps)
        tracker.update([face(0, "happy")])
        for _ in range(round(3 * fps)):  # 3 s out of view
            tracker.update([])
        assert tracker.update([face(0, "happy")])[0].track_id == 2


def test_a_face_passing_in_front_of_another_keeps_its_id_and_emotion():
    # B stands at x=200 and is hidden while A, moving right 25 px a frame, is within 60 px of it
    tracker = FaceTracker()
    for frame in range(16):
        a = face(25 * frame, "happy")
        faces = [a] if abs(a.box.x - 200) < 60 else [a, face(200, "sad")]
        tracked = tracker.update(faces)
        assert tracked[0].track_id == 1 and tracked[0].emotion.label == "happy", frame
        if len(tracked) == 2:
            assert tracked[1].track_id == 2 and tracked[1].emotion.label == "sad", frame
