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
// After a refused, failed or unanswered frame the page waits before sending again, doubling up to the
// maximum: sending on every camera frame would only get more refusals from a server that is struggling.
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 4000;
// What the status says for each error code; the server's own messages are written for developers.
const ERROR_TEXT = {
  busy: "the server is busy; retrying…",
  rate_limited: "the server asked for fewer frames; slowing down…",
  internal_error: "the server could not analyse a frame; retrying…",
  timeout: "the server did not answer; retrying…",
  disconnected: "reconnecting…",
  not_connected: "the server lost this session; reload the page",
  encode_failed: "this browser could not encode a camera frame; retrying…",
};
const OTHER_ERROR_TEXT = "a camera frame could not be analysed; retrying…";

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
// Counts starts and stops: a frame loop or an answer from an earlier session compares it and gives up,
// so a restart never runs two loops or draws the old camera's faces.
let session = 0;
let cancelFrameRequest = () => {};
let inFlight = false;
let retryDelay = 0; // 0 while frames are being answered
let retryAt = 0;
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
  // rewriting the same text would have screen readers announce it again
  if (status.textContent !== text) status.textContent = text;
}

function applyMirror() {
  video.classList.toggle("mirrored", mirror.checked);
  drawOverlay(stats.lastReply);
}

// An answer about a frame of another shape than the one shown (a phone turned while it was analysed)
// would be stretched over the new one: nothing is drawn until an answer about the new shape comes.
function drawOverlay(reply) {
  if (video.videoWidth && (overlay.width !== video.videoWidth || overlay.height !== video.videoHeight)) {
    overlay.width = video.videoWidth;
    overlay.height = video.videoHeight;
  }
  const shown = reply && overlay.height && reply.height ? overlay.width / overlay.height : 0;
  const sameShape = shown && Math.abs(reply.width / reply.height / shown - 1) < 0.02;
  drawFaces(overlayCtx, sameShape ? reply : null, { mirror: mirror.checked, selectedId: timeline.faceId });
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
  stopBackingOff();
  running = true;
  session += 1;
  document.body.classList.add("streaming");
  toggle.textContent = "Stop";
  toggle.disabled = false;
  recording.enable(true);
  scheduleNext(session);
}

function stop() {
  running = false;
  session += 1;
  // Chromium keeps a pending video-frame callback across streams and runs it on the next one's first frame
  cancelFrameRequest();
  frameWaiting = false;
  stopStream(stream);
  stream = null;
  video.srcObject = null;
  clearFaces();
  setStatus("");
  document.body.classList.remove("streaming");
  toggle.textContent = "Start camera";
  recording.enable(false);
}

/** Take the boxes, bars, frame rate and lag off the page: they no longer describe what the camera shows. */
function clearFaces() {
  stats.lastReply = null;
  overlayCtx.clearRect(0, 0, overlay.width, overlay.height);
  renderBars(document.getElementById("bars"), emotions, null);
  document.getElementById("bars-title").textContent = "Largest face";
  answerTimes = [];
  stats.fps = 0;
  document.getElementById("fps").textContent = "– fps";
  document.getElementById("latency").textContent = "– ms";
}

function onConnection(state) {
  if (state !== "connected") {
    setStatus("reconnecting…");
    clearFaces();
    return;
  }
  if (connectedBefore) idOffset = highestId;
  connectedBefore = true;
  stopBackingOff(); // a new connection has nothing in flight on the server
  setStatus("");
}

async function fillCameraList() {
  const cameras = await listCameras();
  const current = stream && stream.getVideoTracks()[0].getSettings().deviceId;
  cameraSelect.replaceChildren(...cameras.map((camera, i) => new Option(camera.label || `Camera ${i + 1}`, camera.deviceId, false, camera.deviceId === current)));
  cameraSelect.disabled = cameras.length < 2;
}

// Pace to the camera: one attempt per new video frame, skipped while a frame is in flight.
function scheduleNext(generation) {
  const onFrame = () => onVideoFrame(generation);
  if (video.requestVideoFrameCallback) {
    const handle = video.requestVideoFrameCallback(onFrame);
    cancelFrameRequest = () => video.cancelVideoFrameCallback(handle);
  } else {
    const handle = requestAnimationFrame(onFrame);
    cancelFrameRequest = () => cancelAnimationFrame(handle);
  }
}

// One frame stays in flight. A camera frame that arrives meanwhile is noted, and the frame on screen
// when the answer comes back is sent at once: the newest one, so the boxes lag the camera by one
// analysis, not two, and an answer that misses the next camera frame by a few milliseconds costs no
// whole frame interval.
function onVideoFrame(generation) {
  if (generation !== session) return;
  if (stats.lastReply && performance.now() - lastAnswerAt > STALE_MS) clearFaces();
  if (video.videoWidth && frames.connected && !backingOff()) {
    if (!inFlight) sendFrame();
    else frameWaiting = true;
  }
  scheduleNext(generation);
}

function backingOff() {
  return performance.now() < retryAt;
}

function backOff() {
  retryDelay = Math.min(MAX_RETRY_MS, retryDelay ? retryDelay * 2 : FIRST_RETRY_MS);
  retryAt = performance.now() + retryDelay;
}

function stopBackingOff() {
  retryDelay = 0;
  retryAt = 0;
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

// A frame of an earlier session may still be in flight after a restart: the new session waits for its
// answer (the server analyses one frame per connection at a time) and then ignores it.
async function sendFrame() {
  const generation = session;
  inFlight = true;
  frameWaiting = false;
  try {
    let encoded;
    try {
      encoded = await encodeFrame();
    } catch (error) {
      if (generation === session) reportError({ code: "encode_failed", message: `${error.message || error}` });
      return;
    }
    if (generation !== session) return;
    stats.sent += 1;
    stats.sendAges.push(performance.now() - encoded.capturedAt);
    if (stats.sendAges.length > 600) stats.sendAges.shift();
    let reply;
    try {
      reply = await frames.sendFrame(encoded.bytes);
    } catch {
      const code = frames.connected ? "timeout" : "disconnected";
      if (generation === session) reportError({ code, message: "no answer to the frame" });
      return;
    }
    if (generation !== session) return;
    if (reply.error) {
      reportError(reply.error);
      return;
    }
    if (!answersInOurClasses(reply)) {
      // a reconnect reached an instance serving another model: its rows and bars would not fit this page's
      stop();
      showNotice("The server now answers with other emotions (a different model). <a href=\"\">Reload the page</a> to use it.");
      return;
    }
    stopBackingOff();
    // the round trip counts from capture: how far the boxes lag behind the camera
    onReply(reply, performance.now() - encoded.capturedAt, encoded.capturedAt);
  } finally {
    inFlight = false;
    if (frameWaiting && running && frames.connected && !backingOff()) sendFrame();
  }
}

/** Whether every face of `reply` has a probability for each of this page's emotions, and for no other. */
function answersInOurClasses(reply) {
  return reply.faces.every((face) => {
    const names = Object.keys(face.probabilities);
    return names.length === emotions.length && emotions.every((emotion) => emotion in face.probabilities);
  });
}

/** Count the error, keep it for the tests, say it in words a user can act on, and wait before the next frame. */
function reportError(error) {
  stats.errors += 1;
  stats.lastError = error;
  setStatus(ERROR_TEXT[error.code] || OTHER_ERROR_TEXT);
  backOff();
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
  timeline.push(reply, capturedAt);
  recording.add(reply, capturedAt);
  drawOverlay(reply);
  showSelected(reply);
  const recent = stats.rtts.slice(-30).sort((a, b) => a - b);
  document.getElementById("fps").textContent = `${stats.fps} fps`;
  document.getElementById("latency").textContent = `${Math.round(recent[Math.floor(recent.length / 2)])} ms`;
  let text = now - lastFaceAt > NO_FACE_MS ? "no face in view" : "";
  // one text whatever the counts: a status that changed with them would be announced on every frame
  if (reply.faces_found > reply.faces.length) text = `more faces in view than the server labels: the ${reply.faces.length} largest`;
  setStatus(text);
}

// The bars and the timeline follow the same face: the largest, or the one clicked.
function showSelected(reply) {
  const face = reply.faces.find((f) => f.id === timeline.faceId) || null;
  const largest = largestFace(reply);
  let title = "Largest face";
  if (face) title = timeline.followsLargest || face === largest ? `Largest face (#${face.id})` : `Face #${face.id}`;
  else if (timeline.faceId != null) title = `Face #${timeline.faceId} (out of view)`;
  document.getElementById("bars-title").textContent = title;
  document.getElementById("timeline-title").textContent = `Last 60 seconds: ${timeline.faceId == null ? "no face yet" : `face #${timeline.faceId}`}`;
  renderBars(document.getElementById("bars"), emotions, face && face.probabilities);
}

/** Follow `face` on the bars and the timeline; null: the largest face again. */
function follow(face) {
  if (face && face.id == null) return;
  timeline.select(face ? face.id : null);
  if (!stats.lastReply) return;
  drawOverlay(stats.lastReply);
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
