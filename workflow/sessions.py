"""Staff sessions kept on the server, so that signing out, a new password or a disabled
account ends them at once, and what a session is shown once (signing links just issued).

The browser's cookie holds a random session token; only its SHA-256 is stored, so a copy of
the database opens no session. A note for a session is encrypted with a key derived from that
token, the app's secret and a random ticket that only the cookie holds, stored for a few
minutes at most. Reading it writes nothing: the web front end drops the ticket from the cookie
as it shows the note, so it is shown once, and the row is deleted by the next batch of
:mod:`workflow.activity` (or when it expires). Neither the cookie nor the database alone
reveals it; after it was shown, the cookie no longer holds the ticket that opens it.

Reading a session writes nothing either: its "last seen" time is noted in a
:class:`workflow.activity.ActivityRecorder` when one is given.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .db import rowcount
from .models import SessionNote, StaffSession, User, utcnow

if TYPE_CHECKING:
    from .activity import ActivityRecorder

__all__ = ["ActiveSession", "start_session", "session_for_token", "end_session",
           "end_sessions_of", "keep_note", "take_note", "NOTE_LIFETIME", "SESSION_TOKEN_BYTES",
           "PENDING_LIFETIME", "NOTE_TICKET_BYTES"]

SESSION_TOKEN_BYTES = 32
NOTE_TICKET_BYTES = 16
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


def session_for_token(session: Session, token: str, *,
                      activity: ActivityRecorder | None = None) -> ActiveSession | None:
    """Return the session a cookie's token opens, or None if it ended, expired or is unknown.

    Its "last seen" time is refreshed when :data:`SEEN_RESOLUTION` old: noted in ``activity``
    when given (nothing is written now, so a read-only transaction will do), else written in
    the caller's transaction.
    """
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
        if activity is not None:
            activity.session_seen(staff_session.id, now)
        else:
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


def _fernet(token: str, secret: bytes, ticket: str = "") -> Fernet:
    material = b"session-note\x00" + token.encode("utf-8")
    if ticket:
        material += b"\x00" + ticket.encode("utf-8")
    key = hmac.new(secret, material, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def keep_note(session: Session, token: str, name: str, value: Any, *, secret: bytes) -> str:
    """Keep a JSON value for the session of ``token`` until :func:`take_note` reads it.

    ``secret`` is the app's secret key; the value is stored encrypted with a key derived from
    it, the session token and a new random ticket, replacing an earlier note of the same name.
    Returns the ticket: :func:`take_note` needs it, and only the session's cookie keeps it.
    """
    active = session_for_token(session, token)
    if active is None:
        raise ValueError("notes are kept only for a session that is open")
    ticket = secrets.token_urlsafe(NOTE_TICKET_BYTES)
    sealed = _fernet(token, secret, ticket).encrypt(
        json.dumps(value).encode("utf-8")).decode("ascii")
    now = utcnow()
    session.execute(delete(SessionNote).where(SessionNote.created_at < now - NOTE_LIFETIME))
    session.execute(delete(SessionNote).where(SessionNote.session_id == active.id,
                                              SessionNote.name == name))
    session.add(SessionNote(session_id=active.id, name=name[:64], sealed=sealed, created_at=now))
    session.flush()
    return ticket


def take_note(session: Session, token: str, name: str, *, secret: bytes, ticket: str,
              activity: ActivityRecorder | None = None) -> Any | None:
    """Return a note of the session of ``token`` opened by ``ticket``; None if there is none
    left (expired, replaced, or the ticket does not open it).

    The note is deleted: by the next flush of ``activity`` when given (nothing is written now,
    so a read-only transaction will do; the caller forgets the ticket so that it is not shown
    again), else in the caller's transaction.
    """
    active = session_for_token(session, token, activity=activity)
    if active is None or not ticket:
        return None
    note = session.scalar(select(SessionNote).where(SessionNote.session_id == active.id,
                                                    SessionNote.name == name))
    if note is None:
        return None
    sealed, created_at = note.sealed, note.created_at
    if activity is not None:
        activity.note_shown(note.id)
    else:
        session.delete(note)
        session.flush()
    if utcnow() - created_at > NOTE_LIFETIME:
        return None
    try:
        return json.loads(_fernet(token, secret, ticket).decrypt(sealed.encode("ascii")))
    except (InvalidToken, ValueError):
        return None
