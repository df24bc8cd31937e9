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
const MAX_SEND_WIDTH = 640;
const JPEG_QUALITY = 0.8;

// Measurements, also read by the browser tests and the benchmark.
const stats = { sent: 0, answered: 0, errors: 0, lastError: null, fps: 0, rtts: [], lastReply: null };
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
let nextFrame = null; // encoded while a frame is in flight, sent when its answer arrives
let answerTimes = [];
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
    showNotice(`${describeCameraError(error)} <a href="${app.dataset.uploadUrl}">Analyse a photo instead</a>.`);
    return;
  }
  video.srcObject = stream;
  await video.play();
  await fillCameraList();
  frames = frames || connectFrames((state) => setStatus(state === "connected" ? "" : "reconnecting…"));
  frames.reset();
  timeline.clear(); // the server's tracker starts afresh, so face ids do too
  running = true;
  document.body.classList.add("streaming");
  toggle.textContent = "Stop";
  toggle.disabled = false;
  recording.enable(true);
  scheduleNext();
}

function stop() {
  running = false;
  nextFrame = null;
  stopStream(stream);
  stream = null;
  video.srcObject = null;
  stats.lastReply = null;
  overlayCtx.clearRect(0, 0, overlay.width, overlay.height);
  renderBars(document.getElementById("bars"), emotions, null);
  document.body.classList.remove("streaming");
  toggle.textContent = "Start camera";
  recording.enable(false);
  document.getElementById("fps").textContent = "– fps";
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

// A camera frame that arrives while another is being analysed is encoded at once and sent the moment
// the answer comes back: one frame stays in flight, but an answer that misses the next camera frame by
// a few milliseconds no longer costs a whole frame interval.
function onVideoFrame() {
  if (!running) return;
  if (video.videoWidth && frames.connected) {
    if (!inFlight) sendFrame(encodeFrame());
    else if (!nextFrame) {
      nextFrame = encodeFrame();
      nextFrame.catch(() => {}); // its error is reported when it is sent
    }
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
  if (blob.size > maxFrameBytes) throw new Error(`frame of ${blob.size} bytes exceeds the server's limit`);
  return { bytes: await blob.arrayBuffer(), capturedAt };
}

async function sendFrame(encoded) {
  inFlight = true;
  try {
    const { bytes, capturedAt } = await encoded;
    stats.sent += 1;
    const reply = await frames.sendFrame(bytes);
    if (!running) return;
    if (reply.error) {
      stats.errors += 1;
      stats.lastError = reply.error;
      setStatus(reply.error.message);
      return;
    }
    // the round trip counts from capture: how far the boxes lag behind the camera
    onReply(reply, performance.now() - capturedAt, capturedAt);
  } catch (error) {
    stats.errors += 1;
    stats.lastError = { code: "client", message: String(error.message || error) };
    setStatus(frames.connected ? "the server did not answer in time" : "reconnecting…");
  } finally {
    inFlight = false;
    const queued = nextFrame;
    nextFrame = null;
    if (queued && running) sendFrame(queued);
  }
}

function onReply(reply, rtt, capturedAt) {
  const now = performance.now();
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
  setStatus(reply.faces.length ? "" : "no face in view");
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

overlay.addEventListener("click", (event) => {
  const face = faceAt(overlay, stats.lastReply, event.clientX, event.clientY, { mirror: mirror.checked });
  if (!face || face.id == null) return;
  timeline.select(face.id);
  drawFaces(overlayCtx, stats.lastReply, { mirror: mirror.checked, selectedId: timeline.faceId });
  showSelected(stats.lastReply);
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
