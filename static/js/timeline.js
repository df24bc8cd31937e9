// Live timeline: the last 60 s of one face's class probabilities, drawn with uPlot.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { colorOf, largestFace } from "./overlay.js";

export const WINDOW_MS = 60_000;
// a face unseen for longer than this is drawn with a break, not a straight line across the gap
const GAP_MS = 1000;
// a clicked face missed by the detector for up to this long stays selected
const HOLD_MS = 2000;
// a clicked face back under a new id (missed long enough for the server's tracker to number it anew) is
// recognised by its place: a new face whose box overlaps its last one at least this much
const SAME_PLACE_IOU = 0.3;
// the largest face followed stays followed until another is this much larger: two faces of about one
// size would otherwise swap the chart on every frame
const SWITCH_AREA_RATIO = 1.2;
const HEIGHT = 180;
const AXIS = { stroke: "#9a9ca5", grid: { stroke: "#2a2e36", width: 1 }, ticks: { stroke: "#2a2e36", width: 1 } };

/**
 * A timeline in `container` for the probabilities of `emotions`.
 * Returns { push(reply, tMs), select(faceId), clear(), faceId, followsLargest, points, draws }: push each
 * analysis with the time its frame was captured (performance.now() milliseconds).
 */
export function createTimeline(container, emotions) {
  const history = new Map(); // face id -> [{ t, box, p: [probability per emotion] }], oldest first
  let chosen = null; // the face the user clicked, until it has been missed for HOLD_MS
  let shown = null; // the face on the chart
  let lastT = 0;
  let lastFaces = []; // the faces of the last answer
  const plot = new uPlot(
    {
      width: Math.max(200, container.clientWidth),
      height: HEIGHT,
      legend: { show: true, live: false },
      cursor: { show: false },
      scales: { x: { time: false, range: [-WINDOW_MS / 1000, 0] }, y: { range: [0, 1] } },
      axes: [
        { ...AXIS, values: (u, splits) => splits.map((s) => `${s} s`) },
        { ...AXIS, size: 48, values: (u, splits) => splits.map((s) => `${Math.round(s * 100)}%`) },
      ],
      series: [{}, ...emotions.map((emotion) => ({ label: emotion, stroke: colorOf(emotion), width: 1.5, points: { show: false } }))],
    },
    emptyData(emotions.length),
    container,
  );
  new ResizeObserver(() => plot.setSize({ width: Math.max(200, container.clientWidth), height: HEIGHT })).observe(container);

  const timeline = {
    faceId: null,
    followsLargest: true,
    points: 0,
    draws: 0,
    push(reply, tMs) {
      for (const face of reply.faces) {
        if (face.id == null) continue;
        if (!history.has(face.id)) history.set(face.id, []);
        history.get(face.id).push({ t: tMs, box: face.box, p: emotions.map((e) => face.probabilities[e]) });
      }
      lastT = tMs;
      lastFaces = reply.faces.filter((face) => face.id != null);
      forgetBefore(tMs - WINDOW_MS);
      // the clicked face, through the odd frame where it is missed; once it is gone, the largest;
      // with no face in view the last one scrolls on
      if (chosen != null) findChosen(reply);
      if (chosen != null && !(tMs - lastSeen(chosen) <= HOLD_MS)) chosen = null;
      if (chosen != null) shown = chosen;
      else if (reply.faces.length) shown = largestKept(reply);
      else if (!history.has(shown)) shown = null;
      draw(tMs);
    },
    /** Follow face `faceId` (a tracked id) instead of the largest; null: the largest again. */
    select(faceId) {
      chosen = faceId;
      if (faceId == null) {
        // the largest in view now, not the face followed so far, however close in size
        shown = lastFaces.length ? largestFace({ faces: lastFaces }).id : shown;
        draw(lastT);
        return;
      }
      if (history.has(faceId)) {
        shown = faceId;
        draw(lastT);
      }
    },
    clear() {
      history.clear();
      chosen = shown = null;
      lastFaces = [];
      timeline.faceId = null;
      timeline.points = 0;
      plot.setData(emptyData(emotions.length));
    },
  };

  /** When the clicked face is missing, take a face first seen since, in the place it was last seen. */
  function findChosen(reply) {
    const points = history.get(chosen);
    if (!points || reply.faces.some((face) => face.id === chosen)) return;
    const { t: missingSince, box: lastBox } = points[points.length - 1];
    let best = null;
    let bestOverlap = SAME_PLACE_IOU;
    for (const face of reply.faces) {
      if (face.id == null || history.get(face.id)[0].t <= missingSince) continue;
      const overlap = iou(face.box, lastBox);
      if (overlap >= bestOverlap) [best, bestOverlap] = [face, overlap];
    }
    if (best) chosen = best.id;
  }

  /** The face on the chart while none is clicked: the largest, unless the one shown is about as large. */
  function largestKept(reply) {
    const largest = largestFace(reply);
    const current = reply.faces.find((face) => face.id === shown && shown != null);
    return current && area(largest.box) <= SWITCH_AREA_RATIO * area(current.box) ? current.id : largest.id;
  }

  function lastSeen(faceId) {
    const points = history.get(faceId);
    return points ? points[points.length - 1].t : -Infinity;
  }

  function forgetBefore(oldest) {
    for (const [id, points] of history) {
      let drop = 0;
      while (drop < points.length && points[drop].t < oldest) drop++;
      if (drop === points.length) history.delete(id);
      else if (drop) points.splice(0, drop);
    }
  }

  function draw(now) {
    const points = history.get(shown) || [];
    const data = emptyData(emotions.length);
    let previous = null;
    for (const point of points) {
      if (previous && point.t - previous.t > GAP_MS) {
        data[0].push((previous.t + 1 - now) / 1000);
        emotions.forEach((_, i) => data[i + 1].push(null));
      }
      data[0].push((point.t - now) / 1000);
      point.p.forEach((p, i) => data[i + 1].push(p));
      previous = point;
    }
    plot.setData(data);
    timeline.faceId = shown;
    timeline.followsLargest = chosen == null;
    timeline.points = points.length;
    timeline.draws += 1;
  }

  return timeline;
}

function area(box) {
  return box.width * box.height;
}

function iou(a, b) {
  const width = Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x);
  const height = Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y);
  if (width <= 0 || height <= 0) return 0;
  const overlap = width * height;
  return overlap / (area(a) + area(b) - overlap);
}

function emptyData(series) {
  return [[], ...Array.from({ length: series }, () => [])];
}
