"""Security headers on every answer, and a session cookie sent over HTTPS only when the app
is served over HTTPS.

The Content-Security-Policy allows scripts and styles only from the app's own static files:
no inline ``<script>``, no ``onclick=`` and no ``style=`` attribute anywhere. Pages that hold
letters, documents and page pictures are not stored by browsers or proxies (``no-store``).
"""

from __future__ import annotations

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

__all__ = ["init_app", "CONTENT_SECURITY_POLICY", "SessionInterface"]

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


def set_security_headers(response: Response) -> Response:
    """Add the security headers an answer lacks."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.scheme == "https":
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static" and "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
    return response


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever this request came over HTTPS (directly or
    through a trusted proxy), besides when ``SESSION_COOKIE_SECURE`` says so."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or request.is_secure)


def init_app(app: Flask) -> None:
    """Add the headers to every answer of the app, and mark its cookie Secure over HTTPS."""
    app.session_interface = SessionInterface()
    app.after_request(set_security_headers)
