// Video page: upload a video as a job, poll its progress (cancellable), then draw the emotion timeline.
import { acceptFiles } from "./dropzone.js";
import { readable, refusalText, requestJson } from "./http.js";
import { colorOf } from "./overlay.js";

const app = document.getElementById("app");
const emotions = JSON.parse(app.dataset.emotions);
const maxBytes = Number(app.dataset.maxVideoMb) * 1024 * 1024;
const form = document.getElementById("video-form");
const input = document.getElementById("video-file");
const fpsInput = document.getElementById("fps");
const analyseButton = document.getElementById("analyze");
const cancelButton = document.getElementById("cancel");
const progress = document.getElementById("progress");
const message = document.getElementById("message");
const preview = document.getElementById("preview");
const previewNote = document.getElementById("preview-note");
const timeline = document.getElementById("timeline");
const downloads = document.getElementById("downloads");
const summaryTable = document.getElementById("summary");
const jsonLink = document.getElementById("download-json");
const csvLink = document.getElementById("download-csv");
const POLL_MS = 300;
const HOLD_MS = 4000; // how long a refusal stays in the status line before progress may replace it
// The status line is a live region: each new text is read out. Progress goes there in 10% steps (or
// whole seconds of video) at most this often; the bar shows every poll's value.
const ANNOUNCE_MS = 3000;
// Behind a load balancer a poll can reach an instance that does not hold the job (nginx takes one that
// failed to connect out of rotation for 10 s): a job is taken as gone only after this long of 404s.
const GONE_AFTER_MS = 12_000;
// chart margins and text, in CSS pixels: the backing store is sized to the shown size times the pixel ratio
const PAD = { left: 36, right: 8, top: 8 };
const FONT_PX = 12;
const LINE_PX = 16; // one line of the legend or of the time axis
const MIN_CHART_PX = 60; // the plot keeps at least this much height however many legend lines wrap

let busy = false; // from the upload's start to the job's end: one analysis at a time
let upload = null; // AbortController of the upload in progress
let jobUrl = null; // the job this page follows, once the upload is done
let result = null;
let previewUrl = null;
let playable = true; // false once the browser failed to play the preview: the timeline cannot seek it
let cursorT = 0; // the time the timeline's cursor shows, seconds
let area = null; // the timeline's plot area (CSS pixels) as last drawn: clicks are mapped through it
let downloadUrls = []; // the Blob URLs of the result's downloads, freed with it
let heldUntil = 0; // progress leaves the status line alone until then: a refusal must be read
let announcedAt = -Infinity; // when progress last went to the status line

function say(text, { hold = false, force = false } = {}) {
  if (!hold && !force && performance.now() < heldUntil) return;
  heldUntil = hold ? performance.now() + HOLD_MS : 0;
  // rewriting the same text would have screen readers announce it again
  if (message.textContent !== text) message.textContent = text;
}

/** Show a poll's progress: the bar at once, the status line in coarse steps (see ANNOUNCE_MS). */
function showProgress(job) {
  let text;
  if (job.progress == null) {
    // a video that declares no duration (a recorded WebM): no fraction to show, only how far it got
    progress.removeAttribute("value");
    text = `Analysing… ${Math.floor(job.video_s ?? 0)} s of video done`;
  } else {
    progress.value = job.progress;
    text = `Analysing… ${Math.floor(job.progress * 10) * 10}%`;
  }
  if (text === message.textContent || performance.now() - announcedAt < ANNOUNCE_MS) return;
  if (performance.now() < heldUntil) return; // a refusal is being read: the next poll says it
  announcedAt = performance.now();
  say(text);
}

function setBusy(value) {
  busy = value;
  analyseButton.disabled = value;
  input.disabled = value;
  cancelButton.hidden = !value;
  progress.hidden = !value;
}

function resetResult() {
  for (const element of [preview, previewNote, timeline, downloads, summaryTable]) element.hidden = true;
  result = null;
  // the old preview would go on decoding (and holding its file) until the element is emptied
  preview.pause();
  preview.removeAttribute("src");
  preview.load();
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  for (const url of downloadUrls) URL.revokeObjectURL(url);
  downloadUrls = [];
}

async function analyse(file) {
  if (busy) {
    // a second job would be refused (one per server by default) or race this one for the page
    say("A video is being analysed: cancel it before choosing another.", { hold: true });
    return;
  }
  if (!file) {
    say("Choose a video first."); // the result on the page stays
    return;
  }
  resetResult();
  if (file.size > maxBytes) {
    say(`That file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${app.dataset.maxVideoMb} MB.`);
    return;
  }
  setBusy(true);
  if (!(await readable(file))) {
    finish("The file changed or can't be read; choose it again.");
    return;
  }
  const body = new FormData();
  body.append("video", file);
  progress.removeAttribute("value"); // indeterminate while the upload travels
  say("Uploading…");
  announcedAt = -Infinity; // the first progress is said at once
  let reply;
  upload = new AbortController();
  try {
    const url = `${app.dataset.analyzeUrl}?async=1&fps=${encodeURIComponent(fpsInput.value || "5")}`;
    reply = await requestJson(url, { method: "POST", body, signal: upload.signal });
  } catch (error) {
    finish(error.name === "AbortError" ? "Cancelled." : `The server could not be reached (${error.message}).`);
    return;
  } finally {
    upload = null;
  }
  if (reply.error) {
    finish(refusalText(reply.error));
    return;
  }
  jobUrl = reply.url;
  await poll(reply.url, file);
}

async function poll(url, file) {
  // polling rather than Socket.IO: the page needs no connection of its own, and a lost reply costs one interval
  let missingSince = null; // when polls started answering 404 (null: the last one found the job)
  while (jobUrl === url) {
    let job;
    try {
      job = await requestJson(url);
    } catch (error) {
      job = { error: { code: "network", message: error.message } };
    }
    // no answer, or a proxy's page while an instance restarts: the job may still be running
    if (jobUrl !== url) return; // cancelled while the poll was out
    if (job.error && !job.state && (job.error.code === "network" || job.error.code.startsWith("http_5"))) {
      say(`Lost the server (${job.error.message}); retrying…`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS * 3));
      continue;
    }
    if (job.error && job.error.code === "not_found" && !job.state) {
      // another instance's answer, or the job really is gone: only a while of them says which
      missingSince ??= performance.now();
      if (performance.now() - missingSince <= GONE_AFTER_MS) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        continue;
      }
    }
    if (job.error && !job.state) {
      finish(job.error.message);
      return;
    }
    missingSince = null;
    if (job.state === "running") {
      showProgress(job);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      continue;
    }
    if (job.state === "done") {
      const csv = await fetchCsv(url);
      if (jobUrl !== url) return; // cancelled (or another video chosen) while the CSV came
      finish("");
      show(file, job.result, csv);
    } else if (job.state === "cancelled") {
      finish("Cancelled.");
    } else {
      finish(job.error.message);
    }
    return;
  }
}

// The CSV is fetched once, now: the server forgets a finished job after 10 minutes or 8 newer jobs,
// and a link to the job would then answer 404.
async function fetchCsv(url) {
  try {
    const response = await fetch(`${url}?format=csv`);
    return response.ok ? await response.blob() : null;
  } catch {
    return null;
  }
}

function finish(text) {
  jobUrl = null;
  setBusy(false);
  say(text, { force: true });
}

/** A crowd: the server labels only the largest faces of a frame (its MAX_FACES), so say how often that cut in. */
function overLimitNote(reply) {
  const over = reply.summary.frames_over_face_limit ?? 0;
  if (!over) return "";
  // a loop, not Math.max(...frames): a long video's frames could pass the engine's argument limit
  let labelled = 0;
  for (const frame of reply.frames) if (frame.faces_found > frame.faces.length) labelled = Math.max(labelled, frame.faces.length);
  const frames = over === 1 ? "1 frame" : `${over} frames`;
  let which = "only the largest are labelled"; // no frame marked (a reply that does not say which)
  if (labelled === 1) which = "the largest of each is labelled";
  else if (labelled > 1) which = `the ${labelled} largest of each are labelled`;
  return ` In ${frames}, more faces were found than the server labels: ${which}.`;
}

function show(file, reply, csv) {
  result = reply;
  playable = true;
  cursorT = 0;
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  preview.hidden = false;
  const withFaces = reply.summary.frames_with_faces;
  say(
    `${reply.frames.length} frames analysed (${reply.sampled_fps} per second of ${reply.duration_s.toFixed(1)} s), ` +
      `${withFaces} with a face; mostly ${reply.summary.dominant ?? "no face"}.` +
      overLimitNote(reply) +
      // no CSV (the job was forgotten or the connection dropped in between): no link that would fail
      (csv ? "" : " The CSV could not be fetched: analyse the video again for it."),
    { force: true },
  );
  const json = new Blob([JSON.stringify(reply, null, 1)], { type: "application/json" });
  jsonLink.href = blobUrl(json);
  csvLink.hidden = !csv;
  if (csv) csvLink.href = blobUrl(csv);
  downloads.hidden = false;
  const rows = reply.summary.tracks.map((track) => {
    const row = document.createElement("tr");
    const cells = [String(track.id), `${track.first_t.toFixed(1)} s`, `${track.last_t.toFixed(1)} s`, String(track.frames), track.emotion];
    row.replaceChildren(...cells.map((text) => Object.assign(document.createElement("td"), { textContent: text })));
    row.children[4].style.color = colorOf(track.emotion);
    return row;
  });
  summaryTable.tBodies[0].replaceChildren(...rows);
  summaryTable.hidden = rows.length === 0;
  timeline.hidden = false;
  draw();
}

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  downloadUrls.push(url);
  return url;
}

// A video the browser cannot decode (HEVC in Chromium without its codec) was analysed on the server all
// the same: its player would sit at 0:00, so it goes, and the timeline's cursor moves alone.
preview.addEventListener("error", () => {
  if (!previewUrl || !preview.error) return; // the element emptied by a new analysis
  playable = false;
  preview.hidden = true;
  previewNote.textContent =
    "This browser cannot play this video's format (its codec), so there is no preview; the analysis is not affected.";
  previewNote.hidden = false;
});

/** The chart's size in CSS pixels, with the backing store set to it times the pixel ratio (sharp on any screen). */
function fitTimeline(ctx) {
  const width = timeline.clientWidth;
  const height = timeline.clientHeight;
  const ratio = window.devicePixelRatio || 1;
  const [backingWidth, backingHeight] = [Math.round(width * ratio), Math.round(height * ratio)];
  if (timeline.width !== backingWidth || timeline.height !== backingHeight) {
    timeline.width = backingWidth;
    timeline.height = backingHeight;
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0); // drawn in CSS pixels from here on
  return { width, height };
}

/** The legend's entries, wrapped onto as many lines as the width needs: [{emotion, x, line}]. */
function legendLayout(ctx, width) {
  const entries = [];
  let [x, line] = [PAD.left + 4, 0];
  for (const emotion of emotions) {
    const w = ctx.measureText(emotion).width;
    if (x + w > width - PAD.right && x > PAD.left + 4) [x, line] = [PAD.left + 4, line + 1];
    entries.push({ emotion, x, line });
    x += w + 12;
  }
  return entries;
}

/** Where the plot area lies, in CSS pixels: under it one line for the time axis, then the legend's lines. */
function plotArea(size, legendLines) {
  const bottom = Math.max(PAD.top + MIN_CHART_PX, size.height - LINE_PX * (1 + legendLines) - 4);
  return { left: PAD.left, right: size.width - PAD.right, top: PAD.top, bottom };
}

function xOf(area, t) {
  const span = Math.max(result.duration_s, 1e-3);
  return area.left + (t / span) * (area.right - area.left);
}

function yOf(area, p) {
  return area.top + (1 - p) * (area.bottom - area.top);
}

// One line per emotion: the probability of the largest face in each sampled frame; gaps where no face was
// found, and a break where the largest face is another tracked face: one person's line never runs into another's.
function draw() {
  if (!result || timeline.hidden) return;
  const ctx = timeline.getContext("2d");
  const size = fitTimeline(ctx);
  ctx.clearRect(0, 0, size.width, size.height);
  ctx.font = `${FONT_PX}px system-ui, sans-serif`;
  const legend = legendLayout(ctx, size.width);
  area = plotArea(size, legend.at(-1).line + 1);
  ctx.fillStyle = "#8a93a6";
  ctx.textBaseline = "alphabetic";
  ctx.fillText("100%", 2, yOf(area, 1) + FONT_PX - 2);
  ctx.fillText("0", 2, yOf(area, 0));
  const axisY = area.bottom + LINE_PX - 2;
  const end = `${result.duration_s.toFixed(1)} s`;
  const endX = area.right - ctx.measureText(end).width;
  ctx.fillText(end, endX, axisY);
  for (const emotion of emotions) {
    ctx.strokeStyle = colorOf(emotion);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let drawnId = null; // the face the line is following; null: none
    for (const frame of result.frames) {
      const face = frame.faces[0]; // the API lists faces largest first
      if (!face) {
        drawnId = null;
        continue;
      }
      const [x, y] = [xOf(area, frame.t), yOf(area, face.probabilities[emotion])];
      if (face.id === drawnId) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      drawnId = face.id;
    }
    ctx.stroke();
  }
  for (const { emotion, x, line } of legend) {
    ctx.fillStyle = colorOf(emotion);
    ctx.fillText(emotion, x, axisY + LINE_PX * (line + 1));
  }
  drawCursor(ctx, axisY, endX - 8);
}

/** The playhead (or, with no playable preview, the clicked time), and its time on the axis line left of `maxX`. */
function drawCursor(ctx, axisY, maxX) {
  const t = playable ? preview.currentTime || 0 : cursorT;
  const x = xOf(area, t);
  ctx.strokeStyle = "#ffffff";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(x, yOf(area, 1));
  ctx.lineTo(x, yOf(area, 0));
  ctx.stroke();
  // its time under it: the readout a click moves, also where no preview shows the time
  const label = `${t.toFixed(1)} s`;
  const w = ctx.measureText(label).width;
  ctx.fillStyle = "#ffffff";
  ctx.fillText(label, Math.max(area.left, Math.min(x - w / 2, maxX - w)), axisY);
}

timeline.addEventListener("click", (event) => {
  if (!result || !area) return;
  const x = event.clientX - timeline.getBoundingClientRect().left; // CSS pixels, as the chart is drawn in
  const fraction = Math.min(1, Math.max(0, (x - area.left) / (area.right - area.left)));
  cursorT = fraction * result.duration_s;
  // a preview that cannot play would only pretend to seek: the cursor alone moves
  if (playable) preview.currentTime = cursorT;
  draw();
});
preview.addEventListener("timeupdate", draw);
// drawn again for its new size: a window resized, a phone turned, the page zoomed
new ResizeObserver(draw).observe(timeline);
// Cancel ends the wait on the page at once; stopping the job on the server is best effort (it may be
// unreachable: the page then waited for it, and showed the cancelled job's result once it came back).
function cancelJob({ leaving = false } = {}) {
  if (upload) upload.abort();
  if (!jobUrl) return;
  // keepalive: the request outlives a page being left, whose job would hold the server's one slot
  fetch(jobUrl, { method: "DELETE", keepalive: leaving }).catch(() => {});
  if (!leaving) finish("Cancelled.");
}

cancelButton.addEventListener("click", () => cancelJob());
window.addEventListener("pagehide", () => cancelJob({ leaving: true }));
// the chosen file waits for Analyse: frames per second may still be set
acceptFiles(form, input, analyse, {
  startOnChoose: false,
  onChoose: (file) => file && !busy && say(`${file.name}: press Analyse to start.`),
});
