// Video page: upload a video as a job, poll its progress (cancellable), then draw the emotion timeline.
import { acceptFiles } from "./dropzone.js";
import { requestJson } from "./http.js";
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
const timeline = document.getElementById("timeline");
const downloads = document.getElementById("downloads");
const summaryTable = document.getElementById("summary");
const jsonLink = document.getElementById("download-json");
const csvLink = document.getElementById("download-csv");
const POLL_MS = 300;
const HOLD_MS = 4000; // how long a refusal stays in the status line before progress may replace it
const PAD = { left: 36, right: 8, top: 8, bottom: 22 };

let busy = false; // from the upload's start to the job's end: one analysis at a time
let upload = null; // AbortController of the upload in progress
let jobUrl = null; // the job this page follows, once the upload is done
let result = null;
let previewUrl = null;
let downloadUrls = []; // the Blob URLs of the result's downloads, freed with it
let heldUntil = 0; // progress leaves the status line alone until then: a refusal must be read

function say(text, { hold = false, force = false } = {}) {
  if (!hold && !force && performance.now() < heldUntil) return;
  heldUntil = hold ? performance.now() + HOLD_MS : 0;
  message.textContent = text;
}

function setBusy(value) {
  busy = value;
  analyseButton.disabled = value;
  input.disabled = value;
  cancelButton.hidden = !value;
  progress.hidden = !value;
}

function resetResult() {
  for (const element of [preview, timeline, downloads, summaryTable]) element.hidden = true;
  result = null;
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
  const body = new FormData();
  body.append("video", file);
  setBusy(true);
  progress.removeAttribute("value"); // indeterminate while the upload travels
  say("Uploading…");
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
    finish(reply.error.message);
    return;
  }
  jobUrl = reply.url;
  await poll(reply.url, file);
}

async function poll(url, file) {
  // polling rather than Socket.IO: the page needs no connection of its own, and a lost reply costs one interval
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
    if (job.error && !job.state) {
      finish(job.error.message);
      return;
    }
    progress.value = job.progress;
    if (job.state === "running") {
      say(`Analysing… ${Math.round(job.progress * 100)}%`);
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

function show(file, reply, csv) {
  result = reply;
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  preview.hidden = false;
  const withFaces = reply.summary.frames_with_faces;
  message.textContent =
    `${reply.frames.length} frames analysed (${reply.sampled_fps} per second of ${reply.duration_s.toFixed(1)} s), ` +
    `${withFaces} with a face; mostly ${reply.summary.dominant ?? "no face"}.`;
  const json = new Blob([JSON.stringify(reply, null, 1)], { type: "application/json" });
  jsonLink.href = blobUrl(json);
  // no CSV (the job was forgotten or the connection dropped in between): no link that would fail
  csvLink.hidden = !csv;
  if (csv) csvLink.href = blobUrl(csv);
  else message.textContent += " The CSV could not be fetched: analyse the video again for it.";
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

function xOf(t) {
  const span = Math.max(result.duration_s, 1e-3);
  return PAD.left + (t / span) * (timeline.width - PAD.left - PAD.right);
}

function yOf(p) {
  return PAD.top + (1 - p) * (timeline.height - PAD.top - PAD.bottom);
}

// One line per emotion: the probability of the largest face in each sampled frame; gaps where no face was
// found, and a break where the largest face is another tracked face: one person's line never runs into another's.
function draw() {
  if (!result) return;
  const ctx = timeline.getContext("2d");
  ctx.clearRect(0, 0, timeline.width, timeline.height);
  ctx.fillStyle = "#8a93a6";
  ctx.font = "11px sans-serif";
  ctx.fillText("100%", 2, yOf(1) + 9);
  ctx.fillText("0", 2, yOf(0));
  ctx.fillText(`${result.duration_s.toFixed(1)} s`, timeline.width - PAD.right - 40, timeline.height - 6);
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
      const [x, y] = [xOf(frame.t), yOf(face.probabilities[emotion])];
      if (face.id === drawnId) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      drawnId = face.id;
    }
    ctx.stroke();
  }
  let legendX = PAD.left + 4;
  for (const emotion of emotions) {
    ctx.fillStyle = colorOf(emotion);
    ctx.fillText(emotion, legendX, timeline.height - 6);
    legendX += ctx.measureText(emotion).width + 12;
  }
  ctx.strokeStyle = "#ffffff";
  ctx.beginPath();
  ctx.moveTo(xOf(preview.currentTime || 0), yOf(1));
  ctx.lineTo(xOf(preview.currentTime || 0), yOf(0));
  ctx.stroke();
}

timeline.addEventListener("click", (event) => {
  if (!result) return;
  const bounds = timeline.getBoundingClientRect();
  const x = ((event.clientX - bounds.left) / bounds.width) * timeline.width;
  const fraction = Math.min(1, Math.max(0, (x - PAD.left) / (timeline.width - PAD.left - PAD.right)));
  preview.currentTime = fraction * result.duration_s;
  draw();
});
preview.addEventListener("timeupdate", draw);
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
