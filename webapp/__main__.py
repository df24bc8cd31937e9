"""Run the app: `python -m webapp` serves http://localhost:5000 (PORT, HOST override).

Uses eventlet, as the Procfile's gunicorn worker does: one process, many clients.
"""
import eventlet

eventlet.monkey_patch()

import logging  # noqa: E402
import os  # noqa: E402

from webapp import create_app, socketio  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app({"ASYNC_MODE": "eventlet"})
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    logging.getLogger("webapp").info("Moodlens on http://%s:%d", "localhost" if host in ("127.0.0.1", "0.0.0.0") else host, port)
    socketio.run(app, host=host, port=port, log_output=False)


if __name__ == "__main__":
    main()
