// After a recording: one stacked bar per face, the share of its time in view spent in each emotion.
import { colorOf, textColorOn } from "./overlay.js";

/** Fill `container` with the output of recorder.summarize (an empty recording says so). */
export function renderSummary(container, summary, emotions) {
  if (!summary.length) {
    const empty = document.createElement("p");
    empty.className = "hint";
    empty.textContent = "No face was recorded.";
    container.replaceChildren(empty);
    return;
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const emotion of emotions) {
    const key = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorOf(emotion);
    key.append(swatch, emotion);
    legend.append(key);
  }
  container.replaceChildren(legend, ...summary.map((face) => faceRow(face, emotions)));
}

function faceRow(face, emotions) {
  const row = document.createElement("div");
  row.className = "summary-face";
  row.dataset.faceId = face.faceId;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = `Face #${face.faceId} · ${face.seconds.toFixed(1)} s`;
  const stack = document.createElement("span");
  stack.className = "stack";
  for (const emotion of emotions) {
    const share = face.shares[emotion];
    if (!share) continue;
    const part = document.createElement("span");
    part.className = "part";
    part.dataset.emotion = emotion;
    part.style.width = `${(share * 100).toFixed(2)}%`;
    part.style.background = colorOf(emotion);
    part.style.color = textColorOn(emotion);
    part.title = `${emotion} ${Math.round(share * 100)}%`;
    // a label only where it fits
    if (share >= 0.12) part.textContent = `${emotion} ${Math.round(share * 100)}%`;
    stack.append(part);
  }
  row.append(name, stack);
  return row;
}
