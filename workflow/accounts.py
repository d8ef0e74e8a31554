"""Staff accounts and API tokens: creation, passwords, sign-in, disabling, and tokens with a
lifetime that can be listed and revoked.

A new password and a disabled account end the account's sessions and revoke its API tokens at
once; a disabled account cannot sign in until it is enabled again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .db import rowcount
from .errors import CounterpartError, NotFoundError, StateError
from .models import ApiToken, User, utcnow
from .sessions import end_sessions_of

__all__ = ["create_user", "authenticate", "set_password", "change_own_password",
           "create_api_token", "user_for_token", "list_api_tokens", "revoke_api_tokens",
           "disable_user", "enable_user", "find_user", "TokenInfo", "generate_password",
           "count_users", "normalise_email", "MIN_PASSWORD_LENGTH", "DEFAULT_TOKEN_DAYS",
           "MAX_TOKEN_DAYS"]

MIN_PASSWORD_LENGTH = 10
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 3650
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_HASHER = PasswordHasher()
# Verifying against this keeps a sign-in with an unknown email as slow as one with a known email.
_DUMMY_HASH = _HASHER.hash("not a real password")


def normalise_email(email: str) -> str:
    """Lower-case and trim an email address, or raise if it is not one."""
    value = (email or "").strip().lower()
    if not _EMAIL_RE.match(value) or len(value) > 254:
        raise CounterpartError(f"{email!r} is not an email address.")
    return value


def generate_password() -> str:
    """Make a random password that is easy to copy."""
    return secrets.token_urlsafe(15)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CounterpartError(f"The password must have at least {MIN_PASSWORD_LENGTH} "
                               "characters.")


def count_users(session: Session) -> int:
    """Count the staff accounts."""
    return session.scalar(select(func.count()).select_from(User)) or 0


def create_user(session: Session, email: str, password: str, *, is_admin: bool = False) -> User:
    """Create a staff account with a hashed password."""
    address = normalise_email(email)
    _check_password(password)
    if session.scalar(select(User).where(User.email == address)):
        raise CounterpartError(f"There is already an account for {address}.")
    user = User(email=address, password_hash=_HASHER.hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User:
    """Return the account of an email address, or raise NotFoundError naming it."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFoundError(f"There is no account for {email.strip()}.")
    return user


def _revoke_tokens_of(session: Session, user_id: int) -> int:
    return rowcount(session.execute(
        update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())))


def set_password(session: Session, email: str, password: str) -> User:
    """Replace an account's password, ending its sessions and revoking its API tokens."""
    user = find_user(session, email)
    _check_password(password)
    user.password_hash = _HASHER.hash(password)
    end_sessions_of(session, user.id, "password changed")
    _revoke_tokens_of(session, user.id)
    return user


def change_own_password(session: Session, user_id: int, current: str, new: str) -> User:
    """Change a signed-in account's password after checking its current one.

    Like :func:`set_password` it ends every session of the account (the caller starts a new
    one for the browser that asked) and revokes its API tokens.
    """
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        raise NotFoundError("This account no longer exists or is disabled.")
    try:
        _HASHER.verify(user.password_hash, current)
    except (VerificationError, InvalidHashError):
        raise CounterpartError("The current password is not right; nothing was changed.") \
            from None
    if new == current:
        raise CounterpartError("The new password must differ from the current one.")
    return set_password(session, user.email, new)


def disable_user(session: Session, email: str) -> User:
    """Disable an account: it cannot sign in, its sessions end and its API tokens are revoked."""
    user = find_user(session, email)
    if user.disabled_at is not None:
        raise StateError(f"The account {user.email} is already disabled.")
    user.disabled_at = utcnow()
    end_sessions_of(session, user.id, "account disabled")
    _revoke_tokens_of(session, user.id)
    return user


def enable_user(session: Session, email: str) -> User:
    """Let a disabled account sign in again (its revoked API tokens stay revoked)."""
    user = find_user(session, email)
    if user.disabled_at is None:
        raise StateError(f"The account {user.email} is not disabled.")
    user.disabled_at = None
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """Return the account these credentials open, or None (also for a disabled account)."""
    try:
        address = normalise_email(email)
    except CounterpartError:
        address = ""
    user = session.scalar(select(User).where(User.email == address)) if address else None
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled_at is not None:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.last_sign_in_at = utcnow()
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(session: Session, email: str, label: str = "", *,
                     days: int = DEFAULT_TOKEN_DAYS) -> str:
    """Create an API token for an account, valid for ``days`` days, and return it.

    Only its SHA-256 is stored. Raises NotFoundError for an unknown account and
    CounterpartError for a disabled one or a lifetime outside 1 to ``MAX_TOKEN_DAYS`` days.
    """
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFoundError(f"There is no account for {email}; create it first with "
                            f"`counterpart create-user {email}`.")
    if user.disabled_at is not None:
        raise CounterpartError(f"The account {user.email} is disabled; enable it first with "
                               f"`counterpart enable-user {user.email}`.")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_TOKEN_DAYS:
        raise CounterpartError(f"The token's lifetime must be 1 to {MAX_TOKEN_DAYS} days, "
                               f"not {days!r}.")
    token = "cpt_" + secrets.token_urlsafe(32)
    now = utcnow()
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(token), label=label[:100],
                         created_at=now, expires_at=now + dt.timedelta(days=days)))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """Return the account an API token belongs to, or None if it is unknown, revoked,
    expired or its account disabled."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or now >= row.expires_at or \
            row.user.disabled_at is not None:
        return None
    row.last_used_at = now
    return row.user


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about an API token: never the token itself."""

    label: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if utcnow() >= self.expires_at else "active"


def list_api_tokens(session: Session, email: str) -> list[TokenInfo]:
    """Describe every API token of an account, oldest first."""
    user = find_user(session, email)
    return [TokenInfo(t.label, t.created_at, t.last_used_at, t.expires_at, t.revoked_at)
            for t in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                                     .order_by(ApiToken.created_at, ApiToken.id))]


def revoke_api_tokens(session: Session, email: str, *, label: str | None = None) -> int:
    """Revoke an account's unrevoked tokens labelled ``label`` (every one if None).

    Returns how many were revoked; raises NotFoundError when no unrevoked token has that label.
    """
    user = find_user(session, email)
    if label is None:
        return _revoke_tokens_of(session, user.id)
    count = rowcount(session.execute(
        update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.label == label,
                               ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())))
    if count == 0:
        raise NotFoundError(f"{user.email} has no unrevoked API token labelled {label!r}; "
                            f"`counterpart list-tokens {user.email}` lists them.")
    return count
