"""WSGI entry point for gunicorn (see Procfile): `gunicorn -k eventlet -w 1 webapp.wsgi:app`."""
from webapp import create_app, eventlet_websocket

eventlet_websocket.install()
app = create_app({"ASYNC_MODE": "eventlet"})
