"""A signer's identity beyond the link: a one-time code emailed to their address, entered
before the signing page opens.

The sender asks for it per signer (``verify_email``). The link's holder asks for a code
(:func:`issue_code`); it is 6 digits, works for 10 minutes and 5 tries, and only its HMAC
(keyed with the app's secret) is stored. A new code can be asked for once a minute and five
times an hour. The right code marks the browser that entered it: :func:`verify_code` returns
a random browser token, kept in that browser's signed cookie, whose SHA-256 is stored with the
code; for :data:`VERIFIED_LIFETIME` every request of the link from that browser opens
(:func:`require_identity`). Each step is in the letter's audit record: code sent (or not),
code failed, code verified. When the signer signs, how they were identified is kept with
their counterpart and stated in the certificate of completion.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .audit import record_event
from .errors import IdentityError, StateError
from .models import Counterpart, Envelope, SignerCode, utcnow

__all__ = ["CODE_DIGITS", "CODE_LIFETIME", "CODE_TRIES", "RESEND_AFTER", "CODES_PER_HOUR",
           "VERIFIED_LIFETIME", "IssuedCode", "CodeCheck", "issue_code", "record_code_mail",
           "verify_code", "require_identity", "waiting_code", "identity_record",
           "identity_words", "masked_email"]

CODE_DIGITS = 6
CODE_LIFETIME = dt.timedelta(minutes=10)
CODE_TRIES = 5
RESEND_AFTER = dt.timedelta(seconds=60)
CODES_PER_HOUR = 5
VERIFIED_LIFETIME = dt.timedelta(hours=12)
"""How long a browser that entered the right code may open the link without another."""


@dataclass(frozen=True)
class IssuedCode:
    """A code just made, to be emailed: the only copy of ``code`` (only its HMAC is kept)."""

    code_id: int
    counterpart_id: int
    name: str
    email: str
    code: str


@dataclass(frozen=True)
class CodeCheck:
    """What a code entered did: ``browser_token`` (for the cookie) when it was right, else
    ``message`` saying why not and ``tries_left`` for the code waiting."""

    browser_token: str | None
    message: str
    tries_left: int = 0

    @property
    def ok(self) -> bool:
        return self.browser_token is not None


def _code_hash(key: bytes, counterpart_id: int, code: str) -> str:
    return hmac.new(key, f"signer-code\x00{counterpart_id}\x00{code}".encode(),
                    hashlib.sha256).hexdigest()


def _browser_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def masked_email(email: str | None) -> str:
    """Show an address as its first letter and its domain: ``j•••@example.com``."""
    if not email or "@" not in email:
        return "your email address"
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}\u2022\u2022\u2022@{domain}"


def _needs_code(counterpart: Counterpart) -> None:
    if not counterpart.verify_email or not counterpart.email:
        raise StateError("This signing link needs no code: it opens the letter by itself.")


def waiting_code(session: Session, counterpart: Counterpart, *,
                 now: dt.datetime | None = None) -> SignerCode | None:
    """The newest code of a counterpart that may still be entered (unexpired, unused, tries
    left), or None."""
    now = now or utcnow()
    code = session.scalar(select(SignerCode).where(SignerCode.counterpart_id == counterpart.id)
                          .order_by(SignerCode.id.desc()).limit(1))
    if code is None or code.verified_at is not None or now >= code.expires_at or \
            code.attempts >= CODE_TRIES:
        return None
    return code


def issue_code(session: Session, counterpart: Counterpart, envelope: Envelope, *,
               key: bytes, now: dt.datetime | None = None) -> IssuedCode:
    """Make a new code for a signer whose link needs one (earlier codes stop working).

    Raises StateError when the link needs no code, and IdentityError (code ``too_soon``)
    within a minute of the last code or after five codes in an hour. Records nothing: the
    caller emails the code and then calls :func:`record_code_mail`.
    """
    now = now or utcnow()
    _needs_code(counterpart)
    last = session.scalar(select(func.max(SignerCode.sent_at)).where(
        SignerCode.counterpart_id == counterpart.id))
    if last is not None and now - last < RESEND_AFTER:
        wait = int((RESEND_AFTER - (now - last)).total_seconds()) + 1
        raise IdentityError(f"A code was sent less than a minute ago; check your email, or ask "
                            f"for a new one in {wait} seconds.", "too_soon")
    recent = session.scalar(select(func.count()).select_from(SignerCode).where(
        SignerCode.counterpart_id == counterpart.id,
        SignerCode.sent_at > now - dt.timedelta(hours=1))) or 0
    if recent >= CODES_PER_HOUR:
        raise IdentityError(f"{CODES_PER_HOUR} codes were sent in the last hour; wait a while "
                            "before asking for another, or ask the sender for help.", "too_soon")
    # A new code replaces the one waiting.
    for earlier in session.scalars(select(SignerCode).where(
            SignerCode.counterpart_id == counterpart.id, SignerCode.verified_at.is_(None),
            SignerCode.expires_at > now)):
        earlier.expires_at = now
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    assert counterpart.email is not None
    row = SignerCode(counterpart_id=counterpart.id, email=counterpart.email,
                     code_hash=_code_hash(key, counterpart.id, code), sent_at=now,
                     expires_at=now + CODE_LIFETIME, attempts=0)
    session.add(row)
    session.flush()
    return IssuedCode(row.id, counterpart.id, counterpart.name, counterpart.email, code)


def record_code_mail(session: Session, code_id: int, *, accepted: bool, answer: str,
                     ip: str | None, user_agent: str | None, at: dt.datetime) -> None:
    """Record what the mail server did with a code: ``code_sent``, or ``code_not_sent`` (the
    code is then void)."""
    row = session.get(SignerCode, code_id)
    assert row is not None
    counterpart = session.get(Counterpart, row.counterpart_id)
    assert counterpart is not None
    if not accepted:
        row.expires_at = min(row.expires_at, at)
    record_event(session, counterpart.envelope.letter_id,
                 "code_sent" if accepted else "code_not_sent", actor=counterpart.name,
                 ip=ip, user_agent=user_agent, envelope_id=counterpart.envelope_id,
                 counterpart_id=counterpart.id, at=at,
                 detail={"email": row.email, "expires_at": row.expires_at.isoformat(),
                         "answer": answer[:500]})


def verify_code(session: Session, counterpart: Counterpart, code: Any, *, key: bytes,
                ip: str | None, user_agent: str | None,
                now: dt.datetime | None = None) -> CodeCheck:
    """Check a code a signer typed; a wrong one uses up a try (recorded as ``code_failed``),
    the right one is recorded as ``code_verified`` and opens the link for this browser.

    Returns what happened rather than raising, so that the caller's transaction keeps the
    count of tries.
    """
    now = now or utcnow()
    _needs_code(counterpart)
    row = waiting_code(session, counterpart, now=now)
    common: dict[str, Any] = dict(actor=counterpart.name, ip=ip, user_agent=user_agent,
                                  envelope_id=counterpart.envelope_id,
                                  counterpart_id=counterpart.id, at=now)
    letter_id = counterpart.envelope.letter_id
    if row is None:
        return CodeCheck(None, "No code is waiting for this link: it expired, was used up or "
                               "was never sent. Ask for a new code.")
    typed = "".join(str(code or "").split())
    if len(typed) != CODE_DIGITS or not typed.isascii() or not typed.isdigit() or \
            not hmac.compare_digest(_code_hash(key, counterpart.id, typed), row.code_hash):
        row.attempts += 1
        left = CODE_TRIES - row.attempts
        record_event(session, letter_id, "code_failed", **common,
                     detail={"email": row.email, "tries_left": left})
        if left <= 0:
            return CodeCheck(None, "That code is not right, and it has had its 5 tries. Ask "
                                   "for a new code.")
        return CodeCheck(None, f"That code is not right; {left} "
                               f"{'try' if left == 1 else 'tries'} left.", left)
    token = secrets.token_urlsafe(32)
    row.verified_at = now
    row.browser_hash = _browser_hash(token)
    record_event(session, letter_id, "code_verified", **common,
                 detail={"email": row.email, "code_sent_at": row.sent_at.isoformat()})
    return CodeCheck(token, "Your email address is confirmed.")


def _verified(session: Session, counterpart: Counterpart, browser_tokens: Sequence[str],
              now: dt.datetime) -> SignerCode | None:
    hashes = [_browser_hash(t) for t in browser_tokens if isinstance(t, str) and t][:20]
    if not hashes:
        return None
    return session.scalar(select(SignerCode).where(
        SignerCode.counterpart_id == counterpart.id, SignerCode.browser_hash.in_(hashes),
        SignerCode.verified_at > now - VERIFIED_LIFETIME)
        .order_by(SignerCode.verified_at.desc()).limit(1))


def require_identity(session: Session, counterpart: Counterpart,
                     browser_tokens: Sequence[str] | None, *,
                     now: dt.datetime | None = None) -> SignerCode | None:
    """Let a request of a link through if its signer needs no code, or this browser entered
    the right one (returned); else raise IdentityError (code ``identity``)."""
    if not counterpart.verify_email:
        return None
    verified = _verified(session, counterpart, browser_tokens or (), now or utcnow())
    if verified is None:
        raise IdentityError(f"This letter opens once you confirm your email address: a "
                            f"one-time code will be sent to {masked_email(counterpart.email)}.",
                            "identity")
    return verified


def identity_record(verified: SignerCode | None) -> dict[str, Any]:
    """How a signer was identified, as kept with their counterpart when they sign."""
    if verified is None or verified.verified_at is None:
        return {"method": "link"}
    return {"method": "email_code", "email": verified.email,
            "verified_at": verified.verified_at.isoformat(), "code_id": verified.id}


def identity_words(identity: dict[str, Any] | None, format_time: Any) -> str:
    """Say how a signer was identified, as the certificate states it."""
    if identity and identity.get("method") == "email_code":
        at = identity.get("verified_at")
        moment = dt.datetime.fromisoformat(at) if isinstance(at, str) else None
        return (f"link and a one-time code emailed to {identity.get('email')}, entered at "
                f"{format_time(moment)}")
    return "link only"
