// Recording: one row per face per analysed frame, kept in this browser only, with a cap on its size.

// 10 minutes at 30 fps with 5 faces is 90,000 rows: a few tens of MB at most
export const DEFAULT_CAP = { rows: 100_000, ms: 10 * 60_000 };
// a face missing for longer than this was out of view: the gap does not count as its time; or for longer
// than this many of the recording's frame intervals, when answers come further apart (a busy server)
const MAX_ROW_MS = 1000;
const MAX_ROW_FRAMES = 3;
// a recording with no two rows of a face close enough to measure a frame's span: one frame at 30 fps
const FALLBACK_SPAN_MS = 1000 / 30;

/**
 * A recorder for `emotions`. Rows are arrays in the order of `recorder.columns`:
 * t_ms, face_id, x, y, width, height, emotion, score, p_<class>..., frame_width, frame_height.
 * Boxes are in the pixels of the frame the server analysed (the camera's, downscaled before sending):
 * frame_width and frame_height give its size, to map them back.
 */
export function createRecorder(emotions, cap = DEFAULT_CAP) {
  const columns = ["t_ms", "face_id", "x", "y", "width", "height", "emotion", "score", ...emotions.map((e) => `p_${e}`),
    "frame_width", "frame_height"];
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
      // a frame captured before Record was clicked, answered after: not part of the recording
      if (tMs < origin) return true;
      const t = Math.round(tMs - origin);
      if (t > cap.ms) return hitCap("duration");
      // a frame is recorded whole or not at all: half of its faces would skew the summary
      if (recorder.rows.length + reply.faces.length > cap.rows) return hitCap("rows");
      // every answer's time, those without a face too: the summary's frame interval (rows alone would
      // take a face seen once every 2 s for a slow server, and count the gaps as time in view)
      if (lastAnswer != null) answerIntervals.push(t - lastAnswer);
      lastAnswer = t;
      for (const face of reply.faces) {
        const { x, y, width, height } = face.box;
        recorder.rows.push([t, face.id, round(x, 1), round(y, 1), round(width, 1), round(height, 1), face.emotion, round(face.score, 4),
          ...emotions.map((e) => round(face.probabilities[e], 4)), reply.width, reply.height]);
      }
      return true;
    },
    csv() {
      const lines = [columns, ...recorder.rows].map((row) => row.map(csvCell).join(","));
      return new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    },
    json() {
      const rows = recorder.rows.map((row) => Object.fromEntries(columns.map((c, i) => [c, row[i]])));
      const body = { started_at: recorder.startedAt && recorder.startedAt.toISOString(), emotions, rows };
      return new Blob([JSON.stringify(body)], { type: "application/json" });
    },
    summary() {
      return summarize(recorder.rows, emotions, median(answerIntervals));
    },
  };
  let origin = 0;
  let lastAnswer = null;
  const answerIntervals = [];

  function hitCap(reason) {
    recorder.recording = false;
    recorder.capped = reason;
    return false;
  }

  return recorder;
}

/**
 * Per face: seconds in view and the share of that time spent in each emotion.
 * Each row lasts until the face's next row. A row with no next row within MAX_ROW_MS, or MAX_ROW_FRAMES of
 * the recording's frame intervals where that is longer (the face left, the connection dropped, the recording
 * ended) lasts the face's typical span instead: the median of its own
 * spans, which is its frame interval whatever a few slow answers did. A face with no span of its own (seen
 * once, or only in frames far apart) gets the recording's median span (every face is in the same frames), or
 * with none, one frame interval. `frameInterval`: the median time between the recording's answers, faceless
 * ones too (null: from the rows' own times).
 * Returns [{ faceId, seconds, shares: { emotion: 0..1 } }], longest in view first.
 */
export function summarize(rows, emotions, frameInterval = null) {
  const byFace = new Map();
  for (const row of rows) {
    if (!byFace.has(row[1])) byFace.set(row[1], []);
    byFace.get(row[1]).push(row);
  }
  if (frameInterval == null) {
    const times = [...new Set(rows.map((row) => row[0]))].sort((a, b) => a - b);
    frameInterval = median(times.slice(1).map((t, i) => t - times[i])) ?? 0;
  }
  const maxSpan = Math.max(MAX_ROW_MS, MAX_ROW_FRAMES * frameInterval);
  const spans = new Map([...byFace].map(([faceId, faceRows]) => [faceId, spansOf(faceRows, maxSpan)]));
  const recordingSpan =
    median([...spans.values()].flat().filter((span) => span != null)) ?? (frameInterval || FALLBACK_SPAN_MS);
  const result = [];
  for (const [faceId, faceRows] of byFace) {
    const time = Object.fromEntries(emotions.map((e) => [e, 0]));
    const faceSpans = spans.get(faceId);
    const typical = median(faceSpans.filter((span) => span != null)) ?? recordingSpan;
    faceRows.forEach((row, i) => {
      time[row[6]] += faceSpans[i] ?? typical;
    });
    const total = emotions.reduce((sum, e) => sum + time[e], 0);
    const shares = Object.fromEntries(emotions.map((e) => [e, total ? time[e] / total : 0]));
    result.push({ faceId, seconds: total / 1000, shares });
  }
  return result.sort((a, b) => b.seconds - a.seconds);
}

/** Per row of one face: the time to its next row, or null where there is none within `maxSpan`. */
function spansOf(faceRows, maxSpan) {
  return faceRows.map((row, i) => {
    const span = i + 1 < faceRows.length ? faceRows[i + 1][0] - row[0] : Infinity;
    return span <= maxSpan ? span : null;
  });
}

/** A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. */
function csvCell(value) {
  const text = value == null ? "" : `${value}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The median of `values`, or null when there are none. */
function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
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
