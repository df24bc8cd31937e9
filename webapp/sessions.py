"""WSGI middleware that caps the Engine.IO sessions one client address may hold open.

An Engine.IO handshake is one cheap GET, but the session it opens lives until its ping
times out: 20,206 handshakes in 30 s cost 216 MB and minutes of CPU. Behind a proxy
every client would share the proxy's address: TRUSTED_PROXIES has the address taken from
X-Forwarded-For (ProxyFix, outside this middleware) instead.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from webapp.errors import wsgi_error


class SessionCap:
    """Refuse (429, JSON) a new session from an address that already holds `limit` of them.

    Args:
        app: the WSGI app (Engine.IO's, wrapping Flask's).
        server: the `socketio.Server`; its `environ` maps each open session to its WSGI environ.
        limit: sessions per address; 0 turns the cap off.
        path: where Engine.IO listens.
    """

    def __init__(self, app, server, limit: int, path: str = "/socket.io"):
        self.app = app
        self.server = server
        self.limit = limit
        self.path = path.rstrip("/")

    def __call__(self, environ, start_response):
        if self.limit and self._is_handshake(environ) and self.open_sessions(environ.get("REMOTE_ADDR")) >= self.limit:
            message = f"at most {self.limit} open sessions per client address"
            return wsgi_error(start_response, 429, "too_many_sessions", message, [("Retry-After", "15")])
        return self.app(environ, start_response)

    def open_sessions(self, address: str | None) -> int:
        """Engine.IO sessions now open from `address`."""
        return sum(1 for environ in list(self.server.environ.values()) if environ.get("REMOTE_ADDR") == address)

    def _is_handshake(self, environ) -> bool:
        path = environ.get("PATH_INFO", "")
        # Engine.IO answers every path under its own (/socket.io/anything/), so every one may open a session
        if path != self.path and not path.startswith(self.path + "/"):
            return False
        return "sid" not in parse_qs(environ.get("QUERY_STRING", ""))
