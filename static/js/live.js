// Live page: camera -> JPEG frames over Socket.IO (one in flight) -> boxes on the overlay.
import { cameraUnavailableReason, describeCameraError, listCameras, openCamera, stopStream } from "./camera.js";
import { drawFaces, largestFace, renderBars } from "./overlay.js";
import { createRecordingControls } from "./recording-controls.js";
import { faceAt } from "./selection.js";
import { connectFrames } from "./socket.js";
import { createTimeline } from "./timeline.js";

const app = document.getElementById("app");
const emotions = JSON.parse(app.dataset.emotions);
const maxFrameBytes = Number(app.dataset.maxFrameBytes);
const video = document.getElementById("video");
const overlay = document.getElementById("overlay");
const toggle = document.getElementById("toggle");
const cameraSelect = document.getElementById("camera");
const mirror = document.getElementById("mirror");
const notice = document.getElementById("notice");
const status = document.getElementById("status");
const stage = document.getElementById("stage");
const MAX_SEND_WIDTH = 640;
const JPEG_QUALITY = 0.8;
// boxes older than this are taken off the video: the server or the connection has stopped answering
const STALE_MS = 2000;
// "no face in view" only after this long without one, so a face the detector misses once is not announced
const NO_FACE_MS = 1000;

// Measurements, also read by the browser tests and the benchmark.
// sendAges: how old each frame was when it was sent (capture to send), the last 600
const stats = { sent: 0, answered: 0, errors: 0, lastError: null, fps: 0, rtts: [], sendAges: [], lastReply: null };
const timeline = createTimeline(document.getElementById("timeline"), emotions);
const recording = createRecordingControls(emotions, {
  record: document.getElementById("record"),
  csv: document.getElementById("download-csv"),
  json: document.getElementById("download-json"),
  status: document.getElementById("record-status"),
  summary: document.getElementById("summary"),
  summaryFaces: document.getElementById("summary-faces"),
});
// recording.state.cap is the cap of the next recording: tests lower it
window.moodlens = { stats, timeline, recording: recording.state };

let stream = null;
let frames = null;
let running = false;
let inFlight = false;
let frameWaiting = false; // a camera frame arrived while one was in flight: the newest goes when the answer comes
let answerTimes = [];
let lastAnswerAt = 0;
let lastFaceAt = 0;
// Face ids restart at 1 on a new connection (a new tracker on the server); the page adds an offset so that
// a face seen after a reconnect never takes over the timeline or recording rows of an earlier one.
let idOffset = 0;
let highestId = 0;
let connectedBefore = false;
const capture = document.createElement("canvas");
const captureCtx = capture.getContext("2d");
const overlayCtx = overlay.getContext("2d");

function showNotice(html) {
  notice.innerHTML = html;
  notice.hidden = !html;
}

function setStatus(text) {
  status.textContent = text;
}

function applyMirror() {
  video.classList.toggle("mirrored", mirror.checked);
  drawFaces(overlayCtx, stats.lastReply, { mirror: mirror.checked, selectedId: timeline.faceId });
}

async function start() {
  const reason = cameraUnavailableReason();
  if (reason) {
    showNotice(`${reason} <a href="${app.dataset.uploadUrl}">Analyse a photo instead</a>.`);
    return;
  }
  showNotice("");
  toggle.disabled = true;
  try {
    stream = await openCamera(cameraSelect.value);
  } catch (error) {
    toggle.disabled = false;
    showNotice(`${describeCameraError(error, cameraSelect.value)} <a href="${app.dataset.uploadUrl}">Analyse a photo instead</a>.`);
    if (cameraSelect.value) await fillCameraList().catch(() => {}); // the chosen camera may be gone
    return;
  }
  // unplugged, or taken by another program: the track ends and no more video frames arrive
  stream.getVideoTracks()[0].addEventListener("ended", () => {
    if (!running) return;
    stop();
    showNotice("The camera stopped: it was unplugged or another program took it. Press <strong>Start camera</strong> to try again.");
  });
  video.srcObject = stream;
  await video.play();
  await fillCameraList();
  frames = frames || connectFrames(onConnection);
  frames.reset();
  timeline.clear(); // the server's tracker starts afresh, so face ids do too
  idOffset = 0;
  highestId = 0;
  lastFaceAt = performance.now();
  running = true;
  document.body.classList.add("streaming");
  toggle.textContent = "Stop";
  toggle.disabled = false;
  recording.enable(true);
  scheduleNext();
}

function stop() {
  running = false;
  frameWaiting = false;
  stopStream(stream);
  stream = null;
  video.srcObject = null;
  clearFaces();
  document.body.classList.remove("streaming");
  toggle.textContent = "Start camera";
  recording.enable(false);
}

/** Take the boxes, bars and frame rate off the page: they no longer describe what the camera shows. */
function clearFaces() {
  stats.lastReply = null;
  overlayCtx.clearRect(0, 0, overlay.width, overlay.height);
  renderBars(document.getElementById("bars"), emotions, null);
  answerTimes = [];
  stats.fps = 0;
  document.getElementById("fps").textContent = "– fps";
}

function onConnection(state) {
  if (state !== "connected") {
    setStatus("reconnecting…");
    clearFaces();
    return;
  }
  if (connectedBefore) idOffset = highestId;
  connectedBefore = true;
  setStatus("");
}

async function fillCameraList() {
  const cameras = await listCameras();
  const current = stream && stream.getVideoTracks()[0].getSettings().deviceId;
  cameraSelect.replaceChildren(...cameras.map((camera, i) => new Option(camera.label || `Camera ${i + 1}`, camera.deviceId, false, camera.deviceId === current)));
  cameraSelect.disabled = cameras.length < 2;
}

// Pace to the camera: one attempt per new video frame, skipped while a frame is in flight.
function scheduleNext() {
  if (!running) return;
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onVideoFrame);
  else requestAnimationFrame(onVideoFrame);
}

// One frame stays in flight. A camera frame that arrives meanwhile is noted, and the frame on screen
// when the answer comes back is sent at once: the newest one, so the boxes lag the camera by one
// analysis, not two, and an answer that misses the next camera frame by a few milliseconds costs no
// whole frame interval.
function onVideoFrame() {
  if (!running) return;
  if (stats.lastReply && performance.now() - lastAnswerAt > STALE_MS) clearFaces();
  if (video.videoWidth && frames.connected) {
    if (!inFlight) sendFrame();
    else frameWaiting = true;
  }
  scheduleNext();
}

/** The current video frame as JPEG bytes, with the time it was captured. */
async function encodeFrame() {
  const scale = Math.min(1, MAX_SEND_WIDTH / video.videoWidth);
  capture.width = Math.round(video.videoWidth * scale);
  capture.height = Math.round(video.videoHeight * scale);
  captureCtx.drawImage(video, 0, 0, capture.width, capture.height);
  const capturedAt = performance.now();
  // toBlob copies the canvas when called, so the next frame may be drawn while this one encodes
  const blob = await new Promise((resolve) => capture.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  if (!blob) throw new Error("the browser could not encode it as JPEG");
  if (blob.size > maxFrameBytes) throw new Error(`frame of ${blob.size} bytes exceeds the server's limit`);
  return { bytes: await blob.arrayBuffer(), capturedAt };
}

async function sendFrame() {
  inFlight = true;
  frameWaiting = false;
  try {
    let encoded;
    try {
      encoded = await encodeFrame();
    } catch (error) {
      reportError({ code: "client", message: `this frame could not be sent: ${error.message || error}` });
      return;
    }
    stats.sent += 1;
    stats.sendAges.push(performance.now() - encoded.capturedAt);
    if (stats.sendAges.length > 600) stats.sendAges.shift();
    let reply;
    try {
      reply = await frames.sendFrame(encoded.bytes);
    } catch {
      reportError({ code: "client", message: frames.connected ? "the server did not answer in time" : "reconnecting…" });
      return;
    }
    if (!running) return;
    if (reply.error) {
      reportError(reply.error);
      return;
    }
    // the round trip counts from capture: how far the boxes lag behind the camera
    onReply(reply, performance.now() - encoded.capturedAt, encoded.capturedAt);
  } finally {
    inFlight = false;
    if (frameWaiting && running && frames.connected) sendFrame();
  }
}

function reportError(error) {
  stats.errors += 1;
  stats.lastError = error;
  setStatus(error.message);
}

function onReply(reply, rtt, capturedAt) {
  const now = performance.now();
  for (const face of reply.faces) {
    if (face.id == null) continue;
    face.id += idOffset;
    highestId = Math.max(highestId, face.id);
  }
  lastAnswerAt = now;
  if (reply.faces.length) lastFaceAt = now;
  stats.answered += 1;
  stats.rtts.push(rtt);
  if (stats.rtts.length > 600) stats.rtts.shift();
  answerTimes.push(now);
  answerTimes = answerTimes.filter((t) => now - t <= 1000);
  stats.fps = answerTimes.length;
  stats.lastReply = reply;
  if (overlay.width !== video.videoWidth || overlay.height !== video.videoHeight) {
    overlay.width = video.videoWidth;
    overlay.height = video.videoHeight;
  }
  timeline.push(reply, capturedAt);
  recording.add(reply, capturedAt);
  drawFaces(overlayCtx, reply, { mirror: mirror.checked, selectedId: timeline.faceId });
  showSelected(reply);
  const recent = stats.rtts.slice(-30).sort((a, b) => a - b);
  document.getElementById("fps").textContent = `${stats.fps} fps`;
  document.getElementById("latency").textContent = `${Math.round(recent[Math.floor(recent.length / 2)])} ms`;
  setStatus(now - lastFaceAt > NO_FACE_MS ? "no face in view" : "");
}

// The bars and the timeline follow the same face: the largest, or the one clicked.
function showSelected(reply) {
  const face = reply.faces.find((f) => f.id === timeline.faceId) || null;
  const largest = largestFace(reply);
  let title = "Largest face";
  if (face) title = face === largest ? `Largest face (#${face.id})` : `Face #${face.id}`;
  else if (timeline.faceId != null) title = `Face #${timeline.faceId} (out of view)`;
  document.getElementById("bars-title").textContent = title;
  document.getElementById("timeline-title").textContent = `Last 60 seconds: ${timeline.faceId == null ? "no face yet" : `face #${timeline.faceId}`}`;
  renderBars(document.getElementById("bars"), emotions, face && face.probabilities);
}

function follow(face) {
  if (!face || face.id == null) return;
  timeline.select(face.id);
  drawFaces(overlayCtx, stats.lastReply, { mirror: mirror.checked, selectedId: timeline.faceId });
  showSelected(stats.lastReply);
}

overlay.addEventListener("click", (event) => {
  follow(faceAt(overlay, stats.lastReply, event.clientX, event.clientY, { mirror: mirror.checked }));
});
// Without a mouse: Enter or Space on the focused video follows the next face, left to right as shown.
overlay.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" && event.key !== " ") return;
  event.preventDefault();
  const faces = ((stats.lastReply && stats.lastReply.faces) || []).filter((face) => face.id != null);
  if (!faces.length) return;
  faces.sort((a, b) => (mirror.checked ? b.box.x - a.box.x : a.box.x - b.box.x));
  const current = faces.findIndex((face) => face.id === timeline.faceId);
  follow(faces[(current + 1) % faces.length]);
});
// the stage takes the camera's shape, so a portrait phone camera fills the width instead of a 4:3 box
video.addEventListener("resize", () => {
  if (video.videoWidth && video.videoHeight) stage.style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`;
});

toggle.addEventListener("click", () => (running ? stop() : start()));
mirror.addEventListener("change", applyMirror);
cameraSelect.addEventListener("change", async () => {
  if (!running) return;
  stop();
  await start();
});
window.addEventListener("pagehide", stop);
renderBars(document.getElementById("bars"), emotions, null);
applyMirror();
const reason = cameraUnavailableReason();
if (reason) showNotice(`${reason} <a href="${app.dataset.uploadUrl}">Analyse a photo instead</a>.`);
