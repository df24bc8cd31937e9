"""The one error format of the API and the Socket.IO acks: {"error": {"code", "message"}}."""

from __future__ import annotations

from webapp.vision.imaging import ImageError

# HTTP status for each ImageError code
HTTP_STATUS = {"too_large": 413, "unsupported_format": 415, "busy": 503}
# seconds a client told "busy" should wait before retrying
RETRY_AFTER_S = 1


def error_body(code: str, message: str) -> dict:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message}}


def from_image_error(error: ImageError) -> tuple[dict, int]:
    """Body and HTTP status for an undecodable image."""
    return error_body(error.code, error.message), HTTP_STATUS.get(error.code, 400)
