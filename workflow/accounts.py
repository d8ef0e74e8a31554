"""Staff accounts and API tokens: creation, roles, passwords, sign-in, disabling, one-time
set-password links (invitations and resets), and tokens with a lifetime that can be listed and
revoked.

Every account has a role: ``admin`` (templates, users, webhooks and settings, besides what
staff do), ``staff`` (letters: create, edit, send, upload, void) or ``read_only`` (sees letters
and downloads them, changes nothing). The older ``is_admin`` flag follows the role.

A new password, a reset and a disabled account end the account's sessions and revoke its API
tokens at once; a disabled account cannot sign in until it is enabled again. An invited or
reset account has no usable password until its owner chooses one through the one-time link
(valid 72 hours; only its SHA-256 is stored).
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

from .activity import ActivityRecorder
from .db import rowcount
from .errors import CounterpartError, NotFoundError, StateError
from .models import AccountLink, ApiToken, RecoveryCode, User, utcnow
from .sessions import end_sessions_of

__all__ = ["create_user", "authenticate", "set_password", "change_own_password",
           "create_api_token", "user_for_token", "list_api_tokens", "revoke_api_tokens",
           "disable_user", "enable_user", "find_user", "TokenInfo", "generate_password",
           "count_users", "normalise_email", "MIN_PASSWORD_LENGTH", "DEFAULT_TOKEN_DAYS",
           "MAX_TOKEN_DAYS", "ROLES", "ROLE_LABELS", "check_role", "set_role", "AccountInfo",
           "list_accounts", "invite_user", "reset_account", "account_link_user",
           "set_password_with_link", "LINK_HOURS", "role_at_least", "check_password"]

ROLES = ("admin", "staff", "read_only")
"""The roles, most powerful first: each may do all that the ones after it may."""
ROLE_LABELS = {"admin": "Administrator", "staff": "Staff", "read_only": "Read-only"}
LINK_HOURS = 72
"""How long an invitation's or a reset's set-password link works."""
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


def check_role(role: str) -> str:
    """Return ``role`` if it is one of :data:`ROLES`, else raise naming the field."""
    if role not in ROLES:
        raise CounterpartError(f"role: {role!r} is not a role; choose one of "
                               f"{', '.join(ROLES)}.")
    return role


def role_at_least(role: str, needed: str) -> bool:
    """Say whether an account of ``role`` may do what ``needed`` may (admin > staff >
    read_only)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) <= ROLES.index(needed)


def count_users(session: Session) -> int:
    """Count the staff accounts."""
    return session.scalar(select(func.count()).select_from(User)) or 0


def create_user(session: Session, email: str, password: str, *, is_admin: bool = False,
                role: str | None = None) -> User:
    """Create an account with a hashed password; ``role`` (or, older, ``is_admin``) says what
    it may do: staff unless told otherwise."""
    address = normalise_email(email)
    _check_password(password)
    chosen = check_role(role) if role is not None else ("admin" if is_admin else "staff")
    if session.scalar(select(User).where(User.email == address)):
        raise CounterpartError(f"There is already an account for {address}.")
    user = User(email=address, password_hash=_HASHER.hash(password), role=chosen,
                is_admin=chosen == "admin", password_set_at=utcnow())
    session.add(user)
    session.flush()
    return user


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.disabled_at.is_(None))) or 0


def _keep_an_admin(session: Session, user: User, what: str) -> None:
    """Refuse to take away the last enabled administrator: nobody could manage accounts."""
    if user.role == "admin" and user.disabled_at is None and _active_admins(session) <= 1:
        raise StateError(f"{user.email} is the only administrator; make another account an "
                         f"administrator before you {what}.")


def set_role(session: Session, user_id: int, role: str) -> User:
    """Give an account another role; its sessions see the change at their next request.

    Raises NotFoundError for an unknown account, StateError for the last administrator.
    """
    check_role(role)
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFoundError(f"There is no account {user_id}.")
    if user.role != role and role != "admin":
        _keep_an_admin(session, user, "change its role")
    user.role = role
    user.is_admin = role == "admin"
    return user


@dataclass(frozen=True)
class AccountInfo:
    """An account as the admin pages list it."""

    id: int
    email: str
    role: str
    state: str
    """``active``, ``invited`` (never chose a password), ``reset`` (waiting for a new
    password) or ``disabled``."""
    two_factor: bool
    created_at: dt.datetime
    last_sign_in_at: dt.datetime | None
    link_expires_at: dt.datetime | None
    """When the newest unused set-password link stops working, if there is one."""

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


def list_accounts(session: Session) -> list[AccountInfo]:
    """Describe every account, by email."""
    now = utcnow()
    links = {row.user_id: row.expires_at for row in session.scalars(
        select(AccountLink).where(AccountLink.used_at.is_(None), AccountLink.expires_at > now)
        .order_by(AccountLink.created_at))}
    out = []
    for user in session.scalars(select(User).order_by(User.email)):
        if user.disabled_at is not None:
            state = "disabled"
        elif user.password_set_at is None:
            state = "invited" if user.last_sign_in_at is None else "reset"
        else:
            state = "active"
        out.append(AccountInfo(user.id, user.email, user.role, state,
                               user.totp_enabled_at is not None, user.created_at,
                               user.last_sign_in_at, links.get(user.id)))
    return out


def _unusable_password() -> str:
    """A hash of a password nobody knows: the account cannot sign in until one is chosen."""
    return _HASHER.hash(secrets.token_urlsafe(32))


def _issue_link(session: Session, user: User, purpose: str, by: str,
                now: dt.datetime) -> str:
    """Make a set-password link for an account (ending its earlier unused ones); return its
    token, of which only the SHA-256 is stored."""
    session.execute(update(AccountLink).where(AccountLink.user_id == user.id,
                                              AccountLink.used_at.is_(None))
                    .values(used_at=now))
    token = secrets.token_urlsafe(32)
    session.add(AccountLink(user_id=user.id, token_hash=_token_hash(token), purpose=purpose,
                            created_at=now, expires_at=now + dt.timedelta(hours=LINK_HOURS),
                            created_by=by[:254]))
    session.flush()
    return token


def invite_user(session: Session, email: str, role: str, *, by: str,
                now: dt.datetime | None = None) -> tuple[User, str]:
    """Create an account without a password and return it with its one-time set-password
    token (valid :data:`LINK_HOURS` hours). Raises CounterpartError naming the field."""
    now = now or utcnow()
    address = normalise_email(email)
    check_role(role)
    if session.scalar(select(User).where(User.email == address)):
        raise CounterpartError(f"email: there is already an account for {address}.")
    user = User(email=address, password_hash=_unusable_password(), role=role,
                is_admin=role == "admin", password_set_at=None, created_at=now)
    session.add(user)
    session.flush()
    return user, _issue_link(session, user, "invite", by, now)


def reset_account(session: Session, user_id: int, *, by: str, two_factor_off: bool = False,
                  now: dt.datetime | None = None) -> tuple[User, str]:
    """Reset an account's password: it no longer works, the account's sessions end and its
    API tokens are revoked; return the account and a new one-time set-password token.

    ``two_factor_off`` also turns off its two-factor sign-in (a lost phone). A disabled
    account is refused (enable it first).
    """
    now = now or utcnow()
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFoundError(f"There is no account {user_id}.")
    if user.disabled_at is not None:
        raise StateError(f"The account {user.email} is disabled; enable it before you reset "
                         "its password.")
    user.password_hash = _unusable_password()
    user.password_set_at = None
    if two_factor_off:
        user.totp_secret = None
        user.totp_enabled_at = None
        user.totp_last_step = None
        session.execute(update(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                                   RecoveryCode.used_at.is_(None))
                        .values(used_at=now))
    end_sessions_of(session, user.id, "password reset")
    _revoke_tokens_of(session, user.id)
    return user, _issue_link(session, user, "reset", by, now)


def account_link_user(session: Session, token: str, *, now: dt.datetime | None = None
                      ) -> AccountLink:
    """Return the unused, unexpired set-password link of ``token``, or raise NotFoundError
    (unknown or used) or StateError (expired)."""
    now = now or utcnow()
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise NotFoundError("This set-password link is not valid.")
    link = session.scalar(select(AccountLink).where(
        AccountLink.token_hash == _token_hash(token)))
    if link is None or link.used_at is not None:
        raise NotFoundError("This set-password link is not valid or was already used; ask an "
                            "administrator for a new one.")
    if now >= link.expires_at or link.user.disabled_at is not None:
        raise StateError(f"This set-password link has expired (links work for {LINK_HOURS} "
                         "hours); ask an administrator for a new one.")
    return link


def set_password_with_link(session: Session, token: str, password: str, *,
                           now: dt.datetime | None = None) -> User:
    """Choose an account's password through its one-time link; the link is then used up and
    the account's sessions end. Raises as :func:`account_link_user`, or for a short
    password."""
    now = now or utcnow()
    link = account_link_user(session, token, now=now)
    _check_password(password)
    changed = rowcount(session.execute(
        update(AccountLink).where(AccountLink.id == link.id, AccountLink.used_at.is_(None))
        .values(used_at=now)))
    if changed != 1:
        raise NotFoundError("This set-password link was already used; ask an administrator "
                            "for a new one.")
    user = link.user
    user.password_hash = _HASHER.hash(password)
    user.password_set_at = now
    end_sessions_of(session, user.id, "password changed")
    _revoke_tokens_of(session, user.id)
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
    user.password_set_at = utcnow()
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
    _keep_an_admin(session, user, "disable it")
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


def check_password(session: Session, user_id: int, password: str) -> bool:
    """Say whether ``password`` is the current password of an enabled account."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        return False
    try:
        return bool(_HASHER.verify(user.password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


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


TOKEN_USE_RECORDED_EVERY = dt.timedelta(minutes=5)
"""A token's ``last_used_at`` is written when it is older than this, not on every request."""


def _aware(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def user_for_token(session: Session, token: str, *,
                   activity: ActivityRecorder | None = None) -> User | None:
    """Return the account an API token belongs to, or None if it is unknown, revoked,
    expired or its account disabled. Its ``last_used_at`` is brought up to date only when
    it is :data:`TOKEN_USE_RECORDED_EVERY` old: noted in ``activity`` when given (written
    later in a batch, so a read-only transaction will do), else in the caller's transaction."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None or now >= row.expires_at or \
            row.user.disabled_at is not None:
        return None
    # Recorded at most every TOKEN_USE_RECORDED_EVERY, so that reads do not write each time.
    if row.last_used_at is None or now - _aware(row.last_used_at) >= TOKEN_USE_RECORDED_EVERY:
        if activity is not None:
            activity.token_used(row.id, now)
        else:
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
