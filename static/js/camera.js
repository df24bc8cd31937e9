// Camera access: support checks, device list, start/stop, readable errors.

/** Why the camera cannot be used on this page at all, or null when it can. */
export function cameraUnavailableReason() {
  if (!window.isSecureContext) {
    return `This page was opened over plain http at ${location.host}. Browsers only allow the camera on https or on http://localhost. ` +
      "Open it as http://localhost:PORT on this computer, serve it over https, or use the upload page.";
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return "This browser does not give pages access to a camera.";
  }
  return null;
}

/** Open a camera (a deviceId, or the default one) at about 640x480. */
export async function openCamera(deviceId) {
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  return navigator.mediaDevices.getUserMedia({ video, audio: false });
}

/** Cameras the page may use (labels appear once permission is granted). */
export async function listCameras() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((device) => device.kind === "videoinput");
}

/** End every track of a stream, which turns the camera light off. */
export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((track) => track.stop());
}

/**
 * A sentence a person can act on, for a getUserMedia failure (`deviceId`: the camera asked for, if one was),
 * as HTML: the live page puts it in its notice beside a link.
 */
export function describeCameraError(error, deviceId = "") {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera access was denied. Allow the camera for this site in the browser's address bar, then press Start again.";
    case "OverconstrainedError":
      if (deviceId) return "The chosen camera is no longer available. Choose another in the list, then press Start again.";
    // falls through: without a chosen camera, no camera met the request
    case "NotFoundError":
      return "No camera was found. Connect one and press Start again.";
    case "NotReadableError":
    case "AbortError":
      return "The camera is in use by another program or could not be started.";
    default:
      return `The camera could not be started (${escapeHtml(`${error && error.message ? error.message : error}`)}).`;
  }
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
