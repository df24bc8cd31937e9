// Recording: one row per face per analysed frame, kept in this browser only, with a cap on its size.

// 10 minutes at 30 fps with 5 faces is 90,000 rows: a few tens of MB at most
export const DEFAULT_CAP = { rows: 100_000, ms: 10 * 60_000 };
// a face missing for longer than this was out of view: the gap does not count as its time
const MAX_ROW_MS = 1000;

/**
 * A recorder for `emotions`. Rows are arrays in the order of `recorder.columns`:
 * t_ms, face_id, x, y, width, height, emotion, score, p_<class>...
 */
export function createRecorder(emotions, cap = DEFAULT_CAP) {
  const columns = ["t_ms", "face_id", "x", "y", "width", "height", "emotion", "score", ...emotions.map((e) => `p_${e}`)];
  const recorder = {
    columns,
    rows: [],
    recording: false,
    capped: null, // "rows" or "duration" once the cap stopped the recording
    startedAt: null, // wall-clock time, for file names and the JSON
    start(tMs) {
      recorder.rows = [];
      recorder.recording = true;
      recorder.capped = null;
      recorder.startedAt = new Date();
      origin = tMs;
    },
    stop() {
      recorder.recording = false;
    },
    /** Add the faces of one analysis captured at `tMs`; returns false once the cap has stopped the recording. */
    add(reply, tMs) {
      if (!recorder.recording) return false;
      const t = Math.round(tMs - origin);
      if (t > cap.ms) return hitCap("duration");
      for (const face of reply.faces) {
        if (recorder.rows.length >= cap.rows) return hitCap("rows");
        const { x, y, width, height } = face.box;
        recorder.rows.push([t, face.id, round(x, 1), round(y, 1), round(width, 1), round(height, 1), face.emotion, round(face.score, 4),
          ...emotions.map((e) => round(face.probabilities[e], 4))]);
      }
      return true;
    },
    csv() {
      const lines = [columns.join(","), ...recorder.rows.map((row) => row.map((v) => (v == null ? "" : v)).join(","))];
      return new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    },
    json() {
      const rows = recorder.rows.map((row) => Object.fromEntries(columns.map((c, i) => [c, row[i]])));
      const body = { started_at: recorder.startedAt && recorder.startedAt.toISOString(), emotions, rows };
      return new Blob([JSON.stringify(body)], { type: "application/json" });
    },
    summary() {
      return summarize(recorder.rows, emotions);
    },
  };
  let origin = 0;

  function hitCap(reason) {
    recorder.recording = false;
    recorder.capped = reason;
    return false;
  }

  return recorder;
}

/**
 * Per face: seconds in view and the share of that time spent in each emotion.
 * Each row lasts until the face's next row (at most MAX_ROW_MS); its last row lasts as long as the one before.
 * Returns [{ faceId, seconds, shares: { emotion: 0..1 } }], longest in view first.
 */
export function summarize(rows, emotions) {
  const byFace = new Map();
  for (const row of rows) {
    if (!byFace.has(row[1])) byFace.set(row[1], []);
    byFace.get(row[1]).push(row);
  }
  const result = [];
  for (const [faceId, faceRows] of byFace) {
    const time = Object.fromEntries(emotions.map((e) => [e, 0]));
    let previousSpan = MAX_ROW_MS / 30; // a lone row counts as one frame at 30 fps
    faceRows.forEach((row, i) => {
      const span = i + 1 < faceRows.length ? Math.min(faceRows[i + 1][0] - row[0], MAX_ROW_MS) : previousSpan;
      time[row[6]] += span;
      previousSpan = span;
    });
    const total = emotions.reduce((sum, e) => sum + time[e], 0);
    const shares = Object.fromEntries(emotions.map((e) => [e, total ? time[e] / total : 0]));
    result.push({ faceId, seconds: total / 1000, shares });
  }
  return result.sort((a, b) => b.seconds - a.seconds);
}

function round(value, digits) {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Offer `blob` as a download named `filename`. */
export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  // the browser has started reading the blob by now; freeing it at once can cancel large downloads
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
