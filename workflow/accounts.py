"""Staff accounts and API tokens: creation, passwords, sign-in and token look-up."""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .errors import CounterpartError, NotFoundError
from .models import ApiToken, User, utcnow

__all__ = ["create_user", "authenticate", "set_password", "create_api_token",
           "user_for_token", "generate_password", "count_users", "normalise_email",
           "MIN_PASSWORD_LENGTH"]

MIN_PASSWORD_LENGTH = 10
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


def set_password(session: Session, email: str, password: str) -> User:
    """Replace an account's password."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFoundError(f"There is no account for {email}.")
    _check_password(password)
    user.password_hash = _HASHER.hash(password)
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """Return the account these credentials open, or None."""
    try:
        address = normalise_email(email)
    except CounterpartError:
        address = ""
    user = session.scalar(select(User).where(User.email == address)) if address else None
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.last_sign_in_at = utcnow()
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(session: Session, email: str, label: str = "") -> str:
    """Create an API token for an account and return it; only its SHA-256 is stored."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFoundError(f"There is no account for {email}; create it first with "
                            f"`counterpart create-user {email}`.")
    token = "cpt_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(token), label=label[:100]))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """Return the account an API token belongs to, or None if it is unknown or revoked."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = utcnow()
    return row.user
