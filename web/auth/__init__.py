"""Staff sign-in: who is asking (session cookie or API token), and the rule that they must be.

Every view needs a signed-in user unless it is marked :func:`public`. The check runs before
every request, so a route added later is protected without anyone remembering to protect it.
Pages answer a stranger with a redirect to the sign-in page; the JSON API answers 401.

Sessions live on the server (:mod:`workflow.sessions`): the signed cookie carries only a
random session token, and the session it names counts until it is signed out, expires, or
its account gets a new password or is disabled. A copied cookie stops working then too.

An account with two-factor sign-in gets, after its password, a pending session that opens only
the code page (``/sign-in/two-factor``); when administrators require two-factor sign-in, an
account without it gets one that opens only the set-up page, and a session already open is
sent there too. What each role may do once signed in is :mod:`web.auth.roles`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
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
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from workflow.accounts import ROLE_LABELS, role_at_least, user_for_token
from workflow.models import User
from workflow.sessions import (
    NOTE_LIFETIME,
    ActiveSession,
    end_session,
    keep_note,
    session_for_token,
    start_session,
    take_note,
)
from workflow.settings import REQUIRE_TWO_FACTOR, get_setting

from ..database import get_db
from . import roles

__all__ = ["bp", "init_app", "public", "StaffUser", "sign_in_user", "sign_out_user",
           "safe_next", "is_api_request", "keep_shown_once", "take_shown_once", "requires",
           "seal_for_page", "open_from_page",
           "any_role", "PENDING_ENDPOINTS", "secret_key"]

requires = roles.requires
any_role = roles.any_role

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., object])
PUBLIC_ENDPOINTS = frozenset({"static"})


@dataclass(frozen=True)
class StaffUser:
    """The signed-in member of staff, as plain values."""

    id: int
    email: str
    is_admin: bool
    role: str = "staff"
    two_factor: bool = False

    @classmethod
    def of(cls, user: User | ActiveSession) -> StaffUser:
        if isinstance(user, ActiveSession):
            return cls(id=user.user_id, email=user.email, is_admin=user.role == "admin",
                       role=user.role, two_factor=user.two_factor)
        return cls(id=user.id, email=user.email, is_admin=user.role == "admin",
                   role=user.role, two_factor=user.totp_enabled_at is not None)

    @property
    def can_edit(self) -> bool:
        """Whether the account may change letters (staff and administrators)."""
        return role_at_least(self.role, "staff")

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


# What a pending session opens: its own step, signing out, and the static files.
PENDING_ENDPOINTS = {
    "two_factor": frozenset({"auth.two_factor", "auth.sign_out", "auth.sign_in"}),
    "setup_two_factor": frozenset({"auth.two_factor_setup", "auth.sign_out", "auth.sign_in"}),
}
PENDING_PAGES = {"two_factor": "auth.two_factor", "setup_two_factor": "auth.two_factor_setup"}


def public(view: F) -> F:
    """Mark a view as open to anyone, signed in or not."""
    view.is_public = True  # type: ignore[attr-defined]
    return view


def is_api_request() -> bool:
    """Say whether this request is for the JSON API (answered in JSON, never with a page)."""
    return request.path == "/api" or request.path.startswith("/api/")


SESSION_KEY = "sid"


def _cookie_token() -> str | None:
    token = session.get(SESSION_KEY)
    return token if isinstance(token, str) and token else None


def sign_in_user(db_session: Session, user: User, *, pending: str | None = None) -> None:
    """Start a fresh server-side session for a user inside the caller's transaction.

    The browser's earlier session, if any, ends, and the cookie is cleared first, so nothing
    from before signing in (a planted session, say) carries over. A ``pending`` session
    (``two_factor``, ``setup_two_factor``) opens only its own step.
    """
    old = _cookie_token()
    if old:
        end_session(db_session, old, "signed in again")
    session.clear()
    session[SESSION_KEY] = start_session(
        db_session, user, hours=current_app.config["SESSION_HOURS"], ip=request.remote_addr,
        user_agent=request.user_agent.string or None, pending=pending)
    session.permanent = True


def sign_out_user() -> None:
    """End this browser's session on the server and clear its cookie."""
    token = _cookie_token()
    if token:
        with get_db().transaction() as db_session:
            end_session(db_session, token)
    session.clear()


def _secret() -> bytes:
    key = current_app.config["SECRET_KEY"]
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def secret_key() -> bytes:
    """The app's secret key as bytes (what the domain derives its encryption keys from)."""
    return _secret()


TICKET_KEY = "shown_once:"


def keep_shown_once(name: str, value: Any) -> None:
    """Keep a JSON value on the server for this session's next :func:`take_shown_once`.

    The value is stored encrypted; the cookie keeps only the ticket that opens it (never the
    value), until it is shown.
    """
    token = _cookie_token()
    if token is None:
        raise RuntimeError("only a signed-in session keeps values to show once")
    with get_db().transaction() as db_session:
        ticket = keep_note(db_session, token, name, value, secret=_secret())
    session[TICKET_KEY + name] = ticket


def take_shown_once(name: str) -> Any | None:
    """Return a value kept by :func:`keep_shown_once`, once; None when there is none.

    It writes nothing (a GET shows it): the cookie forgets its ticket, so that it is not shown
    again, and the stored note is deleted by the next batch of activity (or expires).
    """
    ticket = session.pop(TICKET_KEY + name, None)
    token = _cookie_token()
    if token is None or not isinstance(ticket, str) or not ticket:
        return None
    database = get_db()
    with database.read() as db_session:
        return take_note(db_session, token, name, secret=_secret(), ticket=ticket,
                         activity=database.activity)


def _page_fernet(name: str, token: str) -> Fernet:
    material = b"page-seal\x00" + token.encode("utf-8") + b"\x00" + name.encode("utf-8")
    key = hmac.new(_secret(), material, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal_for_page(name: str, value: Any) -> str:
    """Seal a JSON value that a page must hand back with its form (a hidden field), for a GET
    that may not keep it on the server: encrypted with a key of the app's secret and this
    session, so only this session's next request opens it (:func:`open_from_page`), within
    :data:`workflow.sessions.NOTE_LIFETIME`. Never put there what the page must not show."""
    token = _cookie_token()
    if token is None:
        raise RuntimeError("only a signed-in session seals values for its pages")
    return _page_fernet(name, token).encrypt(json.dumps(value).encode("utf-8")).decode("ascii")


def open_from_page(name: str, sealed: str | None) -> Any | None:
    """Open what :func:`seal_for_page` sealed under ``name`` for this session; None when it
    is missing, altered, another session's, or older than the note lifetime."""
    token = _cookie_token()
    if token is None or not isinstance(sealed, str) or not sealed or len(sealed) > 4096:
        return None
    try:
        opened = _page_fernet(name, token).decrypt(
            sealed.encode("ascii"), ttl=int(NOTE_LIFETIME.total_seconds()))
        return json.loads(opened)
    except (InvalidToken, ValueError):
        return None


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
    """Find who is asking: an API token on /api, the session cookie elsewhere.

    ``g.user`` is set for a full sign-in only; a session waiting for its second factor, or for
    two-factor set-up, is ``g.pending`` (with ``g.pending_step`` naming the step). It only
    reads (a read-only transaction, whatever the method): "last seen" and "last used" times
    are noted in the database's activity recorder and written in batches. Static files skip
    it entirely.
    """
    g.user = None
    g.pending = None
    g.pending_step = None
    if request.endpoint == "static":
        return  # a static file needs no one: it never touches the database
    database = get_db()
    if is_api_request():
        token = _bearer_token()
        if token:
            with database.read() as db_session:
                user = user_for_token(db_session, token, activity=database.activity)
                g.user = StaffUser.of(user) if user else None
        return
    token = _cookie_token()
    if token is None:
        if SESSION_KEY in session:
            session.clear()
        return
    with database.read() as db_session:
        active = session_for_token(db_session, token, activity=database.activity)
        step = active.pending if active is not None else None
        if active is not None and step is None and not active.two_factor and \
                get_setting(db_session, REQUIRE_TWO_FACTOR):
            step = "setup_two_factor"  # required since this session began
    if active is None:
        session.clear()
    elif step is None:
        g.user = StaffUser.of(active)
    else:
        g.pending = StaffUser.of(active)
        g.pending_step = step


def require_sign_in() -> Response | tuple[Response, int] | None:
    """Turn away anyone not signed in from every view that is not public."""
    if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
        return None  # no such route (a 404 follows) or a static file
    view = current_app.view_functions.get(request.endpoint)
    step = g.get("pending_step")
    if step is not None and request.endpoint in PENDING_ENDPOINTS[step]:
        return None
    if getattr(view, "is_public", False) or g.user is not None:
        return None
    if step is not None and not is_api_request() and \
            not getattr(view, "answers_json", False):
        target = request.full_path if request.method == "GET" else request.path
        return redirect(url_for(PENDING_PAGES[step], next=target.rstrip("?")))
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
    app.before_request(roles.check_role)
    app.register_blueprint(bp)


from . import two_factor, views  # noqa: E402,F401  (register the routes on bp)
