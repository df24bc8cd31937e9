// The Record / Stop button, the downloads, the status line and the summary of a recording.
import { DEFAULT_CAP, createRecorder, download } from "./recorder.js";
import { renderSummary } from "./summary.js";

/**
 * Wire the recording controls: `elements` holds the record button, the CSV and JSON buttons, the status
 * line, and the summary section with its container for the bars.
 * Returns { state, add(reply, tMs), stop(), enable(on) }; `state.cap` is the cap the next recording gets.
 */
export function createRecordingControls(emotions, { record, csv, json, status, summary, summaryFaces }) {
  const state = { cap: { ...DEFAULT_CAP }, rows: 0, capped: null, recording: false };
  let recorder = createRecorder(emotions);
  let startedAt = 0;
  let shownSecond = -1;
  let capTimer = 0;
  let unsaved = false; // a stopped recording with rows, not downloaded yet
  let discardAsked = false;

  function start() {
    if (unsaved && !discardAsked) {
      // one press must not throw away minutes of rows nobody downloaded
      discardAsked = true;
      status.textContent = `The last recording (${recorder.rows.length} rows) is not downloaded. Press Record again to discard it and start anew.`;
      return;
    }
    unsaved = discardAsked = false;
    recorder = createRecorder(emotions, state.cap);
    startedAt = performance.now();
    recorder.start(startedAt);
    shownSecond = -1;
    Object.assign(state, { rows: 0, capped: null, recording: true });
    record.textContent = "Stop recording";
    record.classList.add("on");
    summary.hidden = true;
    setDownloads(false);
    status.textContent = "recording…";
    // the duration cap is checked as answers come; without answers (a lost connection) this timer ends it
    const cap = state.cap.ms;
    capTimer = setTimeout(() => add({ width: 0, height: 0, faces: [] }, startedAt + cap + 1), cap + 1);
  }

  function stop() {
    if (!state.recording) return;
    clearTimeout(capTimer);
    recorder.stop();
    unsaved = recorder.rows.length > 0;
    Object.assign(state, { rows: recorder.rows.length, capped: recorder.capped, recording: false });
    record.textContent = "Record";
    record.classList.remove("on");
    const limit = recorder.capped === "rows" ? `${state.cap.rows.toLocaleString("en")} rows` : duration(state.cap.ms);
    const capped = recorder.capped ? `Stopped: the recording reached its cap of ${limit}. ` : "";
    status.textContent = `${capped}${recorder.rows.length} rows`;
    setDownloads(recorder.rows.length > 0);
    renderSummary(summaryFaces, recorder.summary(), emotions);
    summary.hidden = false;
  }

  function add(reply, tMs) {
    if (!recorder.recording) return;
    const going = recorder.add(reply, tMs);
    state.rows = recorder.rows.length;
    if (!going) stop();
    // once a second: the status line is a live region, and a screen reader reads every change aloud
    else if (Math.floor((tMs - startedAt) / 1000) !== shownSecond) {
      shownSecond = Math.floor((tMs - startedAt) / 1000);
      status.textContent = `● ${shownSecond} s, ${recorder.rows.length} rows`;
    }
  }

  function setDownloads(enabled) {
    csv.disabled = !enabled;
    json.disabled = !enabled;
  }

  /** moodlens-2026-11-28T14-32-25.csv: when the recording started, in the user's local time. */
  function fileName(extension) {
    const at = recorder.startedAt;
    const two = (n) => `${n}`.padStart(2, "0");
    const date = `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())}`;
    const time = `${two(at.getHours())}-${two(at.getMinutes())}-${two(at.getSeconds())}`;
    return `moodlens-${date}T${time}.${extension}`;
  }

  record.addEventListener("click", () => (state.recording ? stop() : start()));
  csv.addEventListener("click", () => saved(recorder.csv(), fileName("csv")));
  json.addEventListener("click", () => saved(recorder.json(), fileName("json")));

  function saved(blob, filename) {
    download(blob, filename);
    unsaved = discardAsked = false;
  }

  return {
    state,
    add,
    stop,
    /** Recording needs frames: the button works only while the camera runs. */
    enable(on) {
      if (!on) stop();
      record.disabled = !on;
    },
  };
}

function duration(ms) {
  return ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`;
}
