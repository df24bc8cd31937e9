// Which face a click on the overlay lands on.

/**
 * The face of `reply` under a click at (clientX, clientY) on `canvas`, or null.
 * The canvas is shown with object-fit: contain, so letterbox margins are taken off first; with
 * `mirror` the boxes are drawn flipped, so the click is flipped back into image pixels.
 */
export function faceAt(canvas, reply, clientX, clientY, { mirror = false } = {}) {
  if (!reply || !reply.faces || !reply.faces.length || !canvas.width || !canvas.height) return null;
  const rect = canvas.getBoundingClientRect();
  const scale = Math.min(rect.width / canvas.width, rect.height / canvas.height);
  let x = (clientX - rect.left - (rect.width - canvas.width * scale) / 2) / scale;
  const y = (clientY - rect.top - (rect.height - canvas.height * scale) / 2) / scale;
  if (mirror) x = canvas.width - x;
  const ix = (x * reply.width) / canvas.width;
  const iy = (y * reply.height) / canvas.height;
  const hits = reply.faces.filter(({ box }) => ix >= box.x && ix <= box.x + box.width && iy >= box.y && iy <= box.y + box.height);
  // nested or overlapping boxes: the smallest is the one the user most likely aimed at
  hits.sort((a, b) => a.box.width * a.box.height - b.box.width * b.box.height);
  return hits[0] || null;
}
