// Upload page: send a still image to the JSON API, draw the faces, list probabilities.
import { acceptFiles } from "./dropzone.js";
import { readable, refusalText, requestJson } from "./http.js";
import { colorOf, displayScale, drawFaces } from "./overlay.js";

const app = document.getElementById("app");
const emotions = JSON.parse(app.dataset.emotions);
const form = document.getElementById("upload-form");
const input = document.getElementById("image");
const message = document.getElementById("message");
const canvas = document.getElementById("annotated");
const table = document.getElementById("faces");
const analyseButton = document.getElementById("analyze");
const maxBytes = Number(app.dataset.maxUploadMb) * 1024 * 1024;
// a small photo is drawn enlarged to at least this many pixels across, so its labels fit and read
const MIN_DRAWN_PX = 360;
// and a large one shrunk to at most this many: a 40 MP photo drawn whole took two 160 MB canvases, and
// iOS Safari leaves a canvas over 16.7 MP blank
const MAX_DRAWN_PX = 4096;
// the boxes are drawn on this canvas, then over the photo: one for the page, not one per drawing
const layer = document.createElement("canvas");
let latest = 0; // the newest request: a photo chosen while another is analysed replaces it on the page
let shown = null; // the photo and reply on the page, drawn again when the page's width changes
let drawnWidth = 0; // the width (CSS pixels) it was drawn for

async function analyse(file) {
  if (!file) {
    message.textContent = "Choose a photo first."; // the result on the page stays
    return;
  }
  const request = ++latest;
  table.hidden = true;
  canvas.hidden = true;
  if (shown) shown.bitmap.close(); // a large photo's decoded pixels, freed now rather than by the collector
  shown = null;
  if (file.size > maxBytes) {
    analyseButton.disabled = false; // a photo still in flight is dropped: it no longer holds the button
    message.textContent = `That file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${app.dataset.maxUploadMb} MB.`;
    return;
  }
  message.textContent = "Analysing…";
  analyseButton.disabled = true; // choosing a photo already sent it: a click would send it twice
  if (!(await readable(file))) {
    if (request !== latest) return;
    analyseButton.disabled = false;
    message.textContent = "The file changed or can't be read; choose it again.";
    return;
  }
  const body = new FormData();
  body.append("image", file);
  let reply;
  try {
    reply = await requestJson(app.dataset.analyzeUrl, { method: "POST", body });
  } catch (error) {
    reply = { error: { message: `The server could not be reached (${error.message}).` } };
  } finally {
    if (request === latest) analyseButton.disabled = false;
  }
  if (request !== latest) return;
  if (reply.error) {
    message.textContent = refusalText(reply.error);
    return;
  }
  if (!answersInOurClasses(reply)) {
    // an instance serving another model (a deploy under way): its columns would not fit this page's table
    message.textContent = "The server now answers with other emotions (a different model): reload the page to use it.";
    return;
  }
  try {
    await show(file, reply, request);
  } catch (error) {
    if (request === latest) message.textContent = `The photo was analysed but could not be shown (${error.message}).`;
  }
}

/** Whether every face of `reply` has a probability for each of this page's emotions, and for no other. */
function answersInOurClasses(reply) {
  return reply.faces.every((face) => {
    const names = Object.keys(face.probabilities);
    return names.length === emotions.length && emotions.every((emotion) => emotion in face.probabilities);
  });
}

async function show(file, reply, request) {
  // The server applies EXIF orientation; createImageBitmap does too, so the boxes line up.
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  if (request !== latest) return;
  const longer = Math.max(reply.width, reply.height);
  const enlarged = Math.max(1, Math.ceil(MIN_DRAWN_PX / longer));
  const shrunk = Math.min(1, MAX_DRAWN_PX / longer); // the boxes follow: they are drawn to the canvas's size
  canvas.width = Math.max(1, Math.round(reply.width * enlarged * shrunk));
  canvas.height = Math.max(1, Math.round(reply.height * enlarged * shrunk));
  canvas.classList.toggle("enlarged", enlarged > 1);
  canvas.hidden = false; // shown before drawing: labels are sized for the size it is shown at
  shown = { bitmap, reply };
  draw();
  const count = reply.faces.length;
  const ms = Math.round(reply.timings_ms.total);
  message.textContent = count ? `${count} face${count > 1 ? "s" : ""} found (${ms} ms).` : "No face found in this photo.";
  // a crowd over the server's limit: say so, or the faces without a box look missed
  if (reply.faces_found > count) message.textContent = `${reply.faces_found} faces found; the ${count} largest are labelled (the server's limit) (${ms} ms).`;
  const rows = reply.faces.map((face, i) => {
    const row = document.createElement("tr");
    const cells = [String(i + 1), face.emotion, ...emotions.map((e) => `${(face.probabilities[e] * 100).toFixed(1)}%`)];
    row.replaceChildren(...cells.map((text) => Object.assign(document.createElement("td"), { textContent: text })));
    row.children[1].style.color = colorOf(face.emotion);
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = count === 0;
}

function draw() {
  const { bitmap, reply } = shown;
  drawnWidth = canvas.clientWidth;
  if (layer.width !== canvas.width || layer.height !== canvas.height) {
    layer.width = canvas.width;
    layer.height = canvas.height;
  }
  // numbered: a group photo's labels say which row of the table is theirs
  drawFaces(layer.getContext("2d"), reply, { scale: displayScale(canvas), numbered: true });
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = !canvas.classList.contains("enlarged"); // a small crop's pixels, not a blur
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  ctx.drawImage(layer, 0, 0);
}

// labels are sized for the width the photo is shown at: drawn again when it changes (a window resized,
// a phone turned), or they grew or shrank with the photo
new ResizeObserver(() => {
  if (shown && !canvas.hidden && canvas.clientWidth !== drawnWidth) draw();
}).observe(canvas);

acceptFiles(form, input, analyse);
