"""WSGI entry point for gunicorn (see Procfile): `gunicorn -k eventlet -w 1 webapp.wsgi:app`."""

import gc

from webapp import create_app
from webapp.concurrency import speed_up_eventlet_websocket

speed_up_eventlet_websocket()
app = create_app({"ASYNC_MODE": "eventlet"})
# The models and libraries loaded above are millions of objects that live as long as the worker;
# frozen, a full garbage collection no longer walks them (one took ~190 ms and stalled every client).
gc.collect()
gc.freeze()
