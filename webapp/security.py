"""Security headers on every page, asset and API reply: a strict CSP and no framing by other sites."""

from __future__ import annotations

# No inline script or style anywhere: the pages load ES modules and one stylesheet from 'self'.
# JS may still set element.style (CSSOM), which style-src does not govern. 'self' in connect-src
# covers same-origin ws:/wss: (CSP 3), the Socket.IO transport.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # for browsers that predate frame-ancestors
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # the camera for this origin only (the live page); nothing else the pages never use
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(response):
    """Flask `after_request` hook: set each header unless the view set its own."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response
