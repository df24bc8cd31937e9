"""WSGI entry point for gunicorn (see Procfile): `gunicorn -k eventlet -w 1 webapp.wsgi:app`."""

from webapp import create_app
from webapp.concurrency import speed_up_eventlet_websocket

speed_up_eventlet_websocket()
app = create_app({"ASYNC_MODE": "eventlet"})
