// Drawing detections: boxes with labels on a canvas, and probability bars.

// One per class a model may output (webapp/vision/labels.py): contempt comes with FER+ models only.
const COLORS = {
  angry: "#e5484d", disgust: "#8db600", fear: "#8e4ec6", happy: "#f5b400",
  sad: "#3e63dd", surprise: "#f76b15", neutral: "#8b8d98", contempt: "#12a594",
};

/** Colour used for an emotion everywhere in the UI. */
export function colorOf(emotion) {
  return COLORS[emotion] || "#ffffff";
}

/** Dark or white, whichever reads better on `color` (WCAG contrast). */
function readableOn(color) {
  const channels = color.match(/\w\w/g).map((hex) => {
    const c = parseInt(hex, 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2];
  // contrast with #111 (luminance 0.0056) against contrast with white
  return (luminance + 0.05) / 0.0556 >= 1.05 / (luminance + 0.05) ? "#111" : "#fff";
}

// worked out once per colour, not for every label of every frame
const TEXT_COLORS = Object.fromEntries(Object.entries(COLORS).map(([emotion, color]) => [emotion, readableOn(color)]));

/** Text colour on an emotion's colour: dark or white, whichever reads better. */
export function textColorOn(emotion) {
  return TEXT_COLORS[emotion] || "#111";
}

// label text and box lines as they should look on screen, in CSS pixels
const LABEL_CSS_PX = 15;
const LINE_CSS_PX = 2;

/** CSS pixels per canvas pixel of a canvas shown with `object-fit: contain` (or at its own aspect ratio). */
export function displayScale(canvas) {
  if (!canvas.clientWidth || !canvas.clientHeight) return 1;
  return Math.min(canvas.clientWidth / canvas.width, canvas.clientHeight / canvas.height);
}

/**
 * Draw every face of `reply` on `ctx`, whose canvas has the frame's pixel size.
 * `mirror` flips boxes horizontally to match a mirrored video; text stays readable.
 * The face with id `selectedId` (the one on the timeline) gets a thicker box.
 * `numbered` starts each label with the face's place in `reply.faces` (#1, #2, ...) when there are several,
 * to match a table listed in that order.
 * `scale` (CSS pixels per canvas pixel; by default the canvas's own) keeps labels readable however
 * far the canvas is shrunk or enlarged on screen: a 640-pixel frame on a phone is shown at about half size.
 */
export function drawFaces(
  ctx,
  reply,
  { mirror = false, selectedId = null, numbered = false, scale = displayScale(ctx.canvas) } = {},
) {
  const { width, height } = ctx.canvas;
  ctx.clearRect(0, 0, width, height);
  if (!reply || !reply.faces) return;
  const sx = width / reply.width;
  const sy = height / reply.height;
  const baseWidth = LINE_CSS_PX / scale;
  ctx.font = `${Math.round(LABEL_CSS_PX / scale)}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  const numbering = numbered && reply.faces.length > 1;
  reply.faces.forEach((face, i) => {
    const w = face.box.width * sx;
    const h = face.box.height * sy;
    const x = mirror ? width - face.box.x * sx - w : face.box.x * sx;
    const y = face.box.y * sy;
    const color = colorOf(face.emotion);
    const lineWidth = face.id != null && face.id === selectedId ? 2 * baseWidth : baseWidth;
    ctx.lineWidth = lineWidth;
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const label = `${numbering ? `#${i + 1} ` : ""}${face.emotion} ${Math.round(face.score * 100)}%`;
    const pad = 4 / scale;
    const textWidth = ctx.measureText(label).width + 2 * pad;
    const textHeight = parseInt(ctx.font, 10) + 2 * pad;
    // above the box; else below it; else (a face filling the frame) just inside its top
    const ty = y >= textHeight ? y : y + h + textHeight <= height ? y + h + textHeight : Math.min(height, y + textHeight);
    // kept inside the frame: a face at its right edge would have its label cut off, too
    const lx = Math.max(0, Math.min(x - lineWidth / 2, width - textWidth));
    ctx.fillStyle = color;
    ctx.fillRect(lx, ty - textHeight, textWidth, textHeight);
    ctx.fillStyle = textColorOn(face.emotion);
    ctx.fillText(label, lx + pad, ty - pad);
  });
}

/** The face with the largest box, or null. */
export function largestFace(reply) {
  if (!reply || !reply.faces || reply.faces.length === 0) return null;
  return reply.faces.reduce((a, b) => (b.box.width * b.box.height > a.box.width * a.box.height ? b : a));
}

/** Fill `container` with one bar per emotion for `probabilities` (or empty bars). */
export function renderBars(container, emotions, probabilities) {
  if (container.children.length !== emotions.length) {
    container.replaceChildren(...emotions.map((emotion) => {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.emotion = emotion;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = emotion;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.background = colorOf(emotion);
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      row.append(name, track, value);
      return row;
    }));
  }
  for (const row of container.children) {
    const p = probabilities ? probabilities[row.dataset.emotion] : 0;
    row.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    row.querySelector(".value").textContent = probabilities ? `${Math.round(p * 100)}%` : "–";
  }
}
