"""Run the app locally: `python -m webapp` serves http://localhost:5000 (PORT, HOST override).

A threaded server for one machine; deployments use the Procfile (gunicorn + eventlet).
"""

import logging
import os
import sys

from webapp import create_app, socketio_of
from webapp.config import SettingsError


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its "production deployment" warning misleads locally
    host = os.environ.get("HOST", "127.0.0.1")
    # a setting that cannot work is one line naming it, not a traceback
    port = os.environ.get("PORT", "5000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"moodlens: PORT must be a port number (1-65535), got {port!r}")
    port = int(port)
    try:
        app = create_app({"ASYNC_MODE": "threading"})
    except SettingsError as error:
        sys.exit(f"moodlens: {error}")
    logging.getLogger("webapp").info(
        "Moodlens is ready: open http://%s:%d", "localhost" if host in ("127.0.0.1", "0.0.0.0") else host, port
    )
    socketio_of(app).run(app, host=host, port=port, allow_unsafe_werkzeug=True, log_output=False)


if __name__ == "__main__":
    main()
