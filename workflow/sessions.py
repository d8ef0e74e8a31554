"""Staff sessions kept on the server, so that signing out, a new password or a disabled
account ends them at once, and what a session is shown once (signing links just issued).

The browser's cookie holds a random session token; only its SHA-256 is stored, so a copy of
the database opens no session. A note for a session is encrypted with a key derived from that
token and the app's secret, stored for a few minutes at most, and deleted when it is read:
neither the cookie nor the database alone reveals it, and after it was shown neither holds it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .db import rowcount
from .models import SessionNote, StaffSession, User, utcnow

__all__ = ["ActiveSession", "start_session", "session_for_token", "end_session",
           "end_sessions_of", "keep_note", "take_note", "NOTE_LIFETIME", "SESSION_TOKEN_BYTES",
           "PENDING_LIFETIME"]

SESSION_TOKEN_BYTES = 32
NOTE_LIFETIME = dt.timedelta(minutes=15)
# Seen-at times are refreshed at most this often, so that reading pages rarely writes.
SEEN_RESOLUTION = dt.timedelta(minutes=1)
# Ended and expired sessions are kept this long (who signed in from where), then dropped.
ENDED_KEPT = dt.timedelta(days=90)


PENDING_LIFETIME = dt.timedelta(minutes=15)
"""How long a sign-in may wait for its second factor, or for two-factor set-up."""


@dataclass(frozen=True)
class ActiveSession:
    """A session that counts: its row id and the account's plain values.

    ``pending`` is None for a full sign-in; ``two_factor`` while the password was right and
    the second factor is awaited; ``setup_two_factor`` while an account that must have
    two-factor sign-in sets it up. A pending session opens nothing else.
    """

    id: int
    user_id: int
    email: str
    is_admin: bool
    role: str = "staff"
    pending: str | None = None
    two_factor: bool = False


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(session: Session, user: User, *, hours: int, ip: str | None = None,
                  user_agent: str | None = None, pending: str | None = None) -> str:
    """Start a session of ``hours`` for a user and return its token (for the cookie only).

    A ``pending`` session (see :class:`ActiveSession`) lasts :data:`PENDING_LIFETIME`.
    """
    now = utcnow()
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    session.execute(delete(SessionNote).where(SessionNote.created_at < now - NOTE_LIFETIME))
    old = select(StaffSession.id).where(StaffSession.expires_at < now - ENDED_KEPT)
    session.execute(delete(SessionNote).where(SessionNote.session_id.in_(old)))
    session.execute(delete(StaffSession).where(StaffSession.expires_at < now - ENDED_KEPT))
    lifetime = PENDING_LIFETIME if pending else dt.timedelta(hours=hours)
    session.add(StaffSession(token_hash=_hash(token), user_id=user.id, created_at=now,
                             last_seen_at=now, expires_at=now + lifetime, pending=pending,
                             ip=(ip or None) and ip[:64],
                             user_agent=(user_agent or None) and user_agent[:512]))
    session.flush()
    return token


def session_for_token(session: Session, token: str) -> ActiveSession | None:
    """Return the session a cookie's token opens, or None if it ended, expired or is unknown."""
    if not isinstance(token, str) or not token or len(token) > 100:
        return None
    now = utcnow()
    row = session.execute(
        select(StaffSession, User).join(User, User.id == StaffSession.user_id)
        .where(StaffSession.token_hash == _hash(token))).first()
    if row is None:
        return None
    staff_session, user = row
    if staff_session.ended_at is not None or now >= staff_session.expires_at or \
            user.disabled_at is not None:
        return None
    if now - staff_session.last_seen_at >= SEEN_RESOLUTION:
        staff_session.last_seen_at = now
    return ActiveSession(staff_session.id, user.id, user.email, user.role == "admin",
                         user.role, staff_session.pending, user.totp_enabled_at is not None)


def _end(session: Session, condition: Any, reason: str) -> int:
    now = utcnow()
    ids = select(StaffSession.id).where(condition, StaffSession.ended_at.is_(None))
    session.execute(delete(SessionNote).where(SessionNote.session_id.in_(ids)))
    return rowcount(session.execute(
        update(StaffSession).where(condition, StaffSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)))


def end_session(session: Session, token: str, reason: str = "signed out") -> bool:
    """End the session of a cookie's token (and drop its notes); say whether one was open."""
    if not isinstance(token, str) or not token:
        return False
    return _end(session, StaffSession.token_hash == _hash(token), reason) > 0


def end_sessions_of(session: Session, user_id: int, reason: str) -> int:
    """End every open session of an account; return how many there were."""
    return _end(session, StaffSession.user_id == user_id, reason)


def _fernet(token: str, secret: bytes) -> Fernet:
    key = hmac.new(secret, b"session-note\x00" + token.encode("utf-8"), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def keep_note(session: Session, token: str, name: str, value: Any, *, secret: bytes) -> None:
    """Keep a JSON value for the session of ``token`` until :func:`take_note` reads it.

    ``secret`` is the app's secret key; the value is stored encrypted with a key derived from
    it and the session token, replacing an earlier note of the same name.
    """
    active = session_for_token(session, token)
    if active is None:
        raise ValueError("notes are kept only for a session that is open")
    sealed = _fernet(token, secret).encrypt(json.dumps(value).encode("utf-8")).decode("ascii")
    now = utcnow()
    session.execute(delete(SessionNote).where(SessionNote.created_at < now - NOTE_LIFETIME))
    session.execute(delete(SessionNote).where(SessionNote.session_id == active.id,
                                              SessionNote.name == name))
    session.add(SessionNote(session_id=active.id, name=name[:64], sealed=sealed, created_at=now))
    session.flush()


def take_note(session: Session, token: str, name: str, *, secret: bytes) -> Any | None:
    """Return a note of the session of ``token`` and delete it; None if there is none left."""
    active = session_for_token(session, token)
    if active is None:
        return None
    note = session.scalar(select(SessionNote).where(SessionNote.session_id == active.id,
                                                    SessionNote.name == name))
    if note is None:
        return None
    sealed, created_at = note.sealed, note.created_at
    session.delete(note)
    session.flush()
    if utcnow() - created_at > NOTE_LIFETIME:
        return None
    try:
        return json.loads(_fernet(token, secret).decrypt(sealed.encode("ascii")))
    except (InvalidToken, ValueError):
        return None
