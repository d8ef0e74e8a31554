"""Staff sign-in: who is asking (session cookie or API token), and the rule that they must be.

Every view needs a signed-in user unless it is marked :func:`public`. The check runs before
every request, so a route added later is protected without anyone remembering to protect it.
Pages answer a stranger with a redirect to the sign-in page; the JSON API answers 401.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from workflow.accounts import user_for_token
from workflow.models import User

from ..database import get_db

__all__ = ["bp", "init_app", "public", "StaffUser", "sign_in_user", "safe_next",
           "is_api_request"]

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., object])
PUBLIC_ENDPOINTS = frozenset({"static"})


@dataclass(frozen=True)
class StaffUser:
    """The signed-in member of staff, as plain values."""

    id: int
    email: str
    is_admin: bool

    @classmethod
    def of(cls, user: User) -> StaffUser:
        return cls(id=user.id, email=user.email, is_admin=user.is_admin)


def public(view: F) -> F:
    """Mark a view as open to anyone, signed in or not."""
    view.is_public = True  # type: ignore[attr-defined]
    return view


def is_api_request() -> bool:
    """Say whether this request is for the JSON API (answered in JSON, never with a page)."""
    return request.path == "/api" or request.path.startswith("/api/")


def _password_stamp(user: User) -> str:
    # Changing the password changes the stamp, which ends every session signed in before.
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def sign_in_user(user: User) -> None:
    """Start a fresh session for a user (a new cookie, so no earlier session is reused)."""
    session.clear()
    session["user_id"] = user.id
    session["stamp"] = _password_stamp(user)
    session.permanent = True


def safe_next(target: str | None) -> str | None:
    """Return a local path to go to after signing in, or None if it leads elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def load_user() -> None:
    """Find who is asking: an API token on /api, the session cookie elsewhere."""
    g.user = None
    if is_api_request():
        token = _bearer_token()
        if token:
            with get_db().transaction() as db_session:
                user = user_for_token(db_session, token)
                g.user = StaffUser.of(user) if user else None
        return
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return
    with get_db().transaction() as db_session:
        user = db_session.get(User, user_id)
        if user is not None and session.get("stamp") == _password_stamp(user):
            g.user = StaffUser.of(user)
    if g.user is None:
        session.clear()


def require_sign_in() -> Response | tuple[Response, int] | None:
    """Turn away anyone not signed in from every view that is not public."""
    if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
        return None  # no such route (a 404 follows) or a static file
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "is_public", False) or g.user is not None:
        return None
    if is_api_request() or getattr(view, "answers_json", False):
        if is_api_request():
            response = jsonify(error="Sign in with an API token: send the header "
                                     "'Authorization: Bearer <token>'.")
            response.headers["WWW-Authenticate"] = 'Bearer realm="counterpart"'
        else:
            response = jsonify(error="Your session has ended; sign in again.")
        return response, 401
    target = request.full_path if request.method == "GET" else request.path
    return redirect(url_for("auth.sign_in", next=target.rstrip("?")))


def init_app(app: Flask) -> None:
    """Check who is asking before every request."""
    app.before_request(load_user)
    app.before_request(require_sign_in)
    app.register_blueprint(bp)


from . import views  # noqa: E402,F401  (registers the routes on bp)
