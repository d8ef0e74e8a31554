"""Two-factor sign-in for staff: a time-based one-time password (TOTP, RFC 6238, as
authenticator apps make them) after the password, or one of ten recovery codes.

The TOTP secret is stored encrypted with a key derived from the app's secret key (``key``
below), so a copy of the database alone does not give it away. A code is accepted for its own
30-second step and the ones either side (clocks drift), and never twice: the last step used is
kept. Recovery codes are shown once when made, stored as SHA-256 (they are random, 50 bits
each), and each works once. The setting that makes two-factor sign-in required for everyone
lives in :mod:`workflow.settings`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .db import rowcount
from .errors import CounterpartError, NotFoundError, StateError
from .models import RecoveryCode, User, utcnow

__all__ = ["new_secret", "provisioning_uri", "enable_two_factor", "disable_two_factor",
           "check_second_factor", "new_recovery_codes", "recovery_codes_left",
           "RECOVERY_CODE_COUNT", "ISSUER", "TOTP_DIGITS", "code_matches"]

ISSUER = "Counterpart"
RECOVERY_CODE_COUNT = 10
TOTP_DIGITS = 6
TOTP_STEP = 30
# Codes of the step before and after the current one are accepted too.
TOTP_WINDOW = 1
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def _fernet(key: bytes) -> Fernet:
    derived = hmac.new(key, b"two-factor-secret", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _seal(secret: str, key: bytes) -> str:
    return _fernet(key).encrypt(secret.encode("ascii")).decode("ascii")


def _unseal(sealed: str, key: bytes) -> str:
    try:
        return _fernet(key).decrypt(sealed.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise StateError("The two-factor secret of this account cannot be read with this "
                         "server's secret key (was COUNTERPART_SECRET_KEY changed?); an "
                         "administrator can reset the account with two-factor turned off.") \
            from None


def new_secret() -> str:
    """Make a random TOTP secret (base32, 160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str) -> str:
    """The ``otpauth://`` address an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP).provisioning_uri(
        name=email, issuer_name=ISSUER)


def _clean_code(code: str) -> str:
    return "".join(c for c in (code or "") if not c.isspace() and c != "-").lower()


def _matching_step(secret: str, code: str, now: float) -> int | None:
    """The 30-second step whose code ``code`` is, within the window, or None."""
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP)
    step = int(now // TOTP_STEP)
    for candidate in range(step - TOTP_WINDOW, step + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def code_matches(secret: str, code: str, *, now: float | None = None) -> bool:
    """Say whether ``code`` is a current TOTP code of ``secret`` (the set-up check)."""
    return _matching_step(secret, _clean_code(code), time.time() if now is None else now) \
        is not None


def _hash_code(code: str) -> str:
    return hashlib.sha256(_clean_code(code).encode("ascii", "replace")).hexdigest()


def _recovery_code() -> str:
    chars = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{chars[:5]}-{chars[5:]}"


def new_recovery_codes(session: Session, user_id: int) -> list[str]:
    """Replace an account's recovery codes with :data:`RECOVERY_CODE_COUNT` new ones and
    return them (shown once: only their SHA-256 is stored)."""
    now = utcnow()
    session.execute(update(RecoveryCode).where(RecoveryCode.user_id == user_id,
                                               RecoveryCode.used_at.is_(None))
                    .values(used_at=now))
    codes = [_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(RecoveryCode(user_id=user_id, code_hash=_hash_code(code), created_at=now)
                    for code in codes)
    session.flush()
    return codes


def recovery_codes_left(session: Session, user_id: int) -> int:
    """Count an account's unused recovery codes."""
    return session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, with_for_update=True)
    if user is None or user.disabled_at is not None:
        raise NotFoundError("This account no longer exists or is disabled.")
    return user


def enable_two_factor(session: Session, user_id: int, secret: str, code: str, *, key: bytes,
                      now: float | None = None) -> list[str]:
    """Turn on two-factor sign-in with ``secret`` once ``code`` shows the app has it; return
    the account's new recovery codes. Raises CounterpartError naming ``code`` if it is not
    the app's current code."""
    user = _user(session, user_id)
    moment = time.time() if now is None else now
    step = _matching_step(secret, _clean_code(code), moment)
    if step is None:
        raise CounterpartError("code: that is not the code your app shows now; check that "
                               "the phone's clock is right and type the 6 digits again.")
    user.totp_secret = _seal(secret, key)
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    return new_recovery_codes(session, user.id)


def disable_two_factor(session: Session, user_id: int) -> User:
    """Turn off an account's two-factor sign-in and void its recovery codes."""
    user = _user(session, user_id)
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    session.execute(update(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                               RecoveryCode.used_at.is_(None))
                    .values(used_at=utcnow()))
    return user


def check_second_factor(session: Session, user_id: int, code: str, *, key: bytes,
                        now: float | None = None) -> str | None:
    """Check a sign-in's second factor: a TOTP code or an unused recovery code.

    Returns ``"totp"`` or ``"recovery"`` (the recovery code is then used up), or None when
    the code is wrong, was already used, or the account has no two-factor sign-in.
    """
    user = _user(session, user_id)
    if user.totp_enabled_at is None or user.totp_secret is None:
        return None
    cleaned = _clean_code(code)
    moment = time.time() if now is None else now
    step = _matching_step(_unseal(user.totp_secret, key), cleaned, moment)
    if step is not None:
        if user.totp_last_step is not None and step <= user.totp_last_step:
            return None  # a code seen before (replayed, or typed twice)
        user.totp_last_step = step
        return "totp"
    if len(cleaned) != 10:
        return None
    used = rowcount(session.execute(
        update(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                   RecoveryCode.code_hash == _hash_code(cleaned),
                                   RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())))
    return "recovery" if used else None
