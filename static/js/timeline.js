// Live timeline: the last 60 s of one face's class probabilities, drawn with uPlot.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { colorOf, largestFace } from "./overlay.js";

export const WINDOW_MS = 60_000;
// a face unseen for longer than this is drawn with a break, not a straight line across the gap
const GAP_MS = 1000;
// a clicked face missed by the detector for up to this long stays selected
const HOLD_MS = 2000;
const HEIGHT = 180;
const AXIS = { stroke: "#9a9ca5", grid: { stroke: "#2a2e36", width: 1 }, ticks: { stroke: "#2a2e36", width: 1 } };

/**
 * A timeline in `container` for the probabilities of `emotions`.
 * Returns { push(reply, tMs), select(faceId), clear(), faceId, points, draws }: push each analysis with the
 * time its frame was captured (performance.now() milliseconds).
 */
export function createTimeline(container, emotions) {
  const history = new Map(); // face id -> [{ t, p: [probability per emotion] }], oldest first
  let chosen = null; // the face the user clicked, until it has been missed for HOLD_MS
  let shown = null; // the face on the chart
  let lastT = 0;
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
    points: 0,
    draws: 0,
    push(reply, tMs) {
      for (const face of reply.faces) {
        if (face.id == null) continue;
        if (!history.has(face.id)) history.set(face.id, []);
        history.get(face.id).push({ t: tMs, p: emotions.map((e) => face.probabilities[e]) });
      }
      lastT = tMs;
      forgetBefore(tMs - WINDOW_MS);
      // the clicked face, through the odd frame where it is missed; once it is gone, the largest;
      // with no face in view the last one scrolls on
      if (chosen != null && !(tMs - lastSeen(chosen) <= HOLD_MS)) chosen = null;
      if (chosen != null) shown = chosen;
      else if (reply.faces.length) shown = largestFace(reply).id;
      else if (!history.has(shown)) shown = null;
      draw(tMs);
    },
    /** Follow face `faceId` (a tracked id) instead of the largest. */
    select(faceId) {
      chosen = faceId;
      if (history.has(faceId)) {
        shown = faceId;
        draw(lastT);
      }
    },
    clear() {
      history.clear();
      chosen = shown = null;
      timeline.faceId = null;
      timeline.points = 0;
      plot.setData(emptyData(emotions.length));
    },
  };

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
    timeline.points = points.length;
    timeline.draws += 1;
  }

  return timeline;
}

function emptyData(series) {
  return [[], ...Array.from({ length: series }, () => [])];
}
