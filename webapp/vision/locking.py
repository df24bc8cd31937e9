"""Locks that stay real OS locks under eventlet's monkey patching."""
from __future__ import annotations

import sys
import threading


def native_lock():
    """A lock for guarding model calls, which may run in native worker threads.

    Under eventlet (the production server) `threading.Lock` is patched into a green
    lock, which deadlocks when contended from eventlet's native thread pool, where
    inference runs. The original, unpatched lock works from both kinds of thread.
    """
    patcher = sys.modules.get("eventlet.patcher")
    module = patcher.original("threading") if patcher else threading
    return module.Lock()
