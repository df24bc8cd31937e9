// JSON requests to the API. A proxy in front of the app (nginx) answers some failures with an HTML page,
// which would otherwise surface as a JSON parse error; those become the API's own error shape.

const PROXY_MESSAGES = {
  413: "The file is larger than the server accepts.",
  502: "The server is not running or restarting; try again in a moment.",
  503: "The server is busy; try again in a moment.",
  504: "The server took too long to answer; try again, or with a smaller file.",
};

/** `fetch` that resolves with the reply's JSON, or with {error: {code, message}} when the reply is not JSON. */
export async function requestJson(url, options) {
  const response = await fetch(url, options);
  if ((response.headers.get("content-type") || "").includes("application/json")) return response.json();
  const message = PROXY_MESSAGES[response.status] || `The server answered ${response.status} ${response.statusText}.`;
  return { error: { code: `http_${response.status}`, message } };
}

/** Whether `file` can still be read: a file changed on disk since it was chosen fails only once sent. */
export async function readable(file) {
  try {
    await file.slice(0, 1).arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

/** The server's message for a refused upload, with what the user can do about a slow one. */
export function refusalText(error) {
  // the server's answer to a body that did not arrive in time (webapp/body_limits.py): a slow uplink
  if (error.code === "timeout") return `${error.message}: try a smaller file or a faster connection.`;
  return error.message;
}
