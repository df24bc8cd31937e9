"""The one error format of the API and the Socket.IO acks: {"error": {"code", "message"}}."""

from __future__ import annotations

import json
from http import HTTPStatus

from webapp.security import HEADERS as SECURITY_HEADERS
from webapp.vision.imaging import ImageError

# HTTP status for each ImageError code
HTTP_STATUS = {"too_large": 413, "unsupported_format": 415, "busy": 503}
# seconds a client told "busy" should wait before retrying
RETRY_AFTER_S = 1


def error_body(code: str, message: str) -> dict:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message}}


# HTTP status for each VideoError code (and a job's internal_error); the rest are 400
VIDEO_STATUS = {"not_a_video": 415, "unsupported_codec": 415, "too_long": 413, "too_large": 413, "internal_error": 500}


def from_video_error(code: str, message: str) -> tuple[dict, int]:
    """Body and HTTP status for a video that cannot be analysed."""
    return error_body(code, message), VIDEO_STATUS.get(code, 400)


def from_image_error(error: ImageError) -> tuple[dict, int]:
    """Body and HTTP status for an undecodable image."""
    return error_body(error.code, error.message), HTTP_STATUS.get(error.code, 400)


def wsgi_error(start_response, status: int, code: str, message: str, headers: list | None = None) -> list[bytes]:
    """An error answered by WSGI middleware, before Flask: the same JSON and security headers as the app's."""
    body = json.dumps(error_body(code, message)).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS.items(),
            *(headers or []),
        ],
    )
    return [body]
