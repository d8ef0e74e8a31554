"""Execution in counterparts: sending, signing, paper uploads, voiding, assembly and proof.

An envelope sends one version of a letter to its signers. Each signer gets a counterpart: the
whole letter, to sign through a private link (electronically) or on paper (staff upload the
scan). When the last counterpart is signed, :func:`assemble_envelope` builds the executed PDF
(the letter once, every signed signature page, a certificate of completion), seals it, and
marks the letter fully executed, exactly once, whichever process gets there first.

Races are settled by the database: the envelope row is locked (``SELECT ... FOR UPDATE``;
SQLite's ``BEGIN IMMEDIATE`` serialises writers) and every status change is a conditional
update, so two signers finishing together or one link used twice cannot double anything.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from . import pdfs
from .audit import event_as_dict, events_of, record_event, verify_chain
from .db import Database, rowcount
from .errors import CounterpartError, DocumentError, LinkError, NotFoundError, StateError
from .letters import (
    PDF_TYPE,
    _slug,
    blob_bytes,
    document_bytes,
    get_letter,
    get_version,
    latest_document,
    store_blob,
)
from .models import Counterpart, Document, Envelope, Letter, LetterVersion, utcnow
from .seal import Sealer, check_seal, seal_pdf
from .states import (
    OPEN_COUNTERPART_STATUSES,
    CounterpartStatus,
    EnvelopeStatus,
    LetterStatus,
    transition,
)

__all__ = [
    "SignerSpec", "Actor", "IssuedLink", "SigningView", "send_envelope", "default_signers",
    "current_envelope", "envelope_for_token", "view_signing", "sign_counterpart",
    "decline_counterpart", "upload_paper_counterpart", "void_envelope", "assemble_envelope",
    "claim_assembly", "retry_assembly", "audit_record", "verify_document", "token_hash",
    "expire_links", "reissue_link", "counterpart_of", "ROLES", "DEFAULT_LINK_DAYS",
    "MAX_UPLOAD_BYTES",
]

ROLES = ("company", "executive", "witness", "other")
DEFAULT_LINK_DAYS = 30
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_SIGNERS = 10
STALE_ASSEMBLY = dt.timedelta(minutes=3)
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_OPEN = tuple(sorted(OPEN_COUNTERPART_STATUSES))


@dataclass(frozen=True)
class Actor:
    """Who did something, for the audit record: a staff email or a signer, with IP and browser."""

    name: str
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class SignerSpec:
    """A signer as staff name them when sending."""

    role: str
    name: str
    email: str | None = None


@dataclass(frozen=True)
class IssuedLink:
    """A counterpart and the one copy of its signing token (only its hash is stored)."""

    counterpart_id: int
    token: str


@dataclass
class SigningView:
    """What a signer's link shows."""

    counterpart: Counterpart
    envelope: Envelope
    letter: Letter
    version: LetterVersion
    waiting_for: list[str] = field(default_factory=list)

    @property
    def can_sign(self) -> bool:
        return not self.waiting_for and self.counterpart.status in _OPEN


def token_hash(token: str) -> str:
    """Return the SHA-256 under which a signing token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _clean_text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CounterpartError(f"{what} is required.")
    text = value.strip()
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text):
        raise CounterpartError(f"{what} contains a control character.")
    if len(text) > limit:
        raise CounterpartError(f"{what} is longer than {limit} characters.")
    return text


def default_signers(terms: Mapping[str, Any]) -> list[SignerSpec]:
    """Name the signers a separation letter has: the company's chair, then the executive."""
    return [SignerSpec("company", str(terms["chair_name"])),
            SignerSpec("executive", str(terms["executive_full_name"]))]


def parse_signers(raw: Any) -> list[SignerSpec]:
    """Check the signers staff typed; errors name the signer and the field."""
    if not isinstance(raw, list) or not raw:
        raise CounterpartError("signers: give at least one signer.")
    if len(raw) > MAX_SIGNERS:
        raise CounterpartError(f"signers: at most {MAX_SIGNERS} signers.")
    out = []
    for index, item in enumerate(raw):
        where = f"signers[{index}]"
        if not isinstance(item, Mapping):
            raise CounterpartError(f"{where}: must be an object with role, name and email.")
        role = item.get("role")
        if role not in ROLES:
            raise CounterpartError(f"{where}.role: must be one of {', '.join(ROLES)}.")
        name = _clean_text(item.get("name"), f"{where}.name", 200)
        email = item.get("email") or None
        if email is not None:
            if not isinstance(email, str) or not _EMAIL_RE.match(email.strip()):
                raise CounterpartError(f"{where}.email: {email!r} is not an email address.")
            email = email.strip().lower()
        out.append(SignerSpec(role, name, email))
    return out


def current_envelope(session: Session, letter_id: int) -> Envelope | None:
    """Return the newest envelope of a letter, if it was ever sent."""
    return session.scalar(select(Envelope).where(Envelope.letter_id == letter_id)
                          .order_by(Envelope.created_at.desc()).limit(1))


def counterpart_of(session: Session, letter_id: int, counterpart_id: int) -> Counterpart:
    """Return a counterpart of a letter's envelopes, or raise NotFoundError."""
    counterpart = session.get(Counterpart, counterpart_id)
    if counterpart is None or counterpart.envelope.letter_id != letter_id:
        raise NotFoundError(f"Letter {letter_id} has no counterpart {counterpart_id}.")
    return counterpart


def send_envelope(session: Session, letter_id: int, signers: Sequence[SignerSpec] | None,
                  actor: Actor, *, signing_order: bool = False,
                  link_days: int = DEFAULT_LINK_DAYS, now: dt.datetime | None = None,
                  ) -> tuple[Envelope, list[IssuedLink]]:
    """Send the newest version of a generated letter for execution in counterparts.

    Returns the envelope and each signer's link token; only the tokens' hashes are stored.
    """
    now = now or utcnow()
    letter = get_letter(session, letter_id, for_update=True)
    if letter.status not in (LetterStatus.GENERATED.value, LetterStatus.VOIDED.value):
        if letter.status == LetterStatus.DRAFT.value:
            raise StateError("The letter's PDF is still being generated; send it once it is "
                             "ready.")
        raise StateError(f"This letter is {LetterStatus(letter.status).label.lower()}; it "
                         "cannot be sent again.")
    if not 1 <= int(link_days) <= 365:
        raise CounterpartError("link_days: links last between 1 and 365 days.")
    version = get_version(session, letter)
    pdf_doc = latest_document(session, version, "letter_pdf")
    if pdf_doc.status != "ready":
        raise StateError("The letter's PDF is not ready; generate it before sending.")
    from .letters import version_terms

    chosen = list(signers) if signers else default_signers(version_terms(version))
    letter_pdf = document_bytes(session, pdf_doc)
    for index, signer in enumerate(chosen):
        try:
            pdfs.find_signature_spot(letter_pdf, signer.name)
        except DocumentError:
            raise CounterpartError(
                f"signers[{index}].name: {signer.name!r} does not appear under a signature "
                "line of the letter; use the name printed in its signature block.") from None
    letter.status = transition(letter.status, LetterStatus.OUT_FOR_SIGNATURE).value
    letter.updated_at = now
    envelope = Envelope(
        id=str(uuid.uuid4()), letter_id=letter.id, version_id=version.id,
        letter_pdf_id=pdf_doc.id, status=EnvelopeStatus.OUT.value,
        signing_order=bool(signing_order), expires_at=now + dt.timedelta(days=int(link_days)),
        created_at=now,
    )
    session.add(envelope)
    session.flush()
    links = []
    for position, signer in enumerate(chosen, start=1):
        token = secrets.token_urlsafe(32)
        waiting = signing_order and position > 1
        counterpart = Counterpart(
            envelope_id=envelope.id, position=position, role=signer.role, name=signer.name,
            email=signer.email, token_hash=token_hash(token),
            status=(CounterpartStatus.CREATED if waiting else CounterpartStatus.SENT).value)
        session.add(counterpart)
        session.flush()
        links.append(IssuedLink(counterpart.id, token))
        record_event(session, letter.id, "sent", actor=actor.name, ip=actor.ip,
                     user_agent=actor.user_agent, envelope_id=envelope.id,
                     counterpart_id=counterpart.id, at=now,
                     detail={"signer": signer.name, "role": signer.role,
                             "email": signer.email, "position": position,
                             "waiting_for_earlier_signers": waiting,
                             "expires_at": envelope.expires_at.isoformat()})
    return envelope, links


def _lock_envelope(session: Session, envelope_id: str) -> Envelope:
    envelope = session.scalar(select(Envelope).where(Envelope.id == envelope_id)
                              .with_for_update())
    assert envelope is not None
    return envelope


def envelope_for_token(session: Session, token: str, *, lock: bool = False
                       ) -> tuple[Counterpart, Envelope]:
    """Find the counterpart a signing token opens, or raise NotFoundError."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise NotFoundError("This signing link is not valid.")
    counterpart = session.scalar(select(Counterpart).where(
        Counterpart.token_hash == token_hash(token)))
    if counterpart is None:
        raise NotFoundError("This signing link is not valid.")
    envelope = (_lock_envelope(session, counterpart.envelope_id) if lock
                else counterpart.envelope)
    if lock:
        session.refresh(counterpart)
    return counterpart, envelope


def _check_link(session: Session, counterpart: Counterpart, envelope: Envelope,
                now: dt.datetime) -> list[str]:
    """Raise LinkError if the link is no longer usable; return who must sign first."""
    status = counterpart.status
    if status == CounterpartStatus.SIGNED.value:
        raise LinkError("This counterpart has already been signed; the link has been used.",
                        "signed")
    if status == CounterpartStatus.DECLINED.value:
        raise LinkError("You declined to sign this letter; the link no longer works.",
                        "declined")
    if status == CounterpartStatus.VOIDED.value or envelope.status == EnvelopeStatus.VOIDED:
        raise LinkError("This letter was withdrawn by its sender; the link no longer works.",
                        "voided")
    if envelope.status == EnvelopeStatus.DECLINED.value:
        raise LinkError("Another signer declined this letter; it can no longer be signed.",
                        "declined")
    if status == CounterpartStatus.EXPIRED.value or now >= envelope.expires_at:
        raise LinkError("This signing link has expired; ask the sender for a new one.",
                        "expired")
    if not envelope.signing_order:
        return []
    return [c.name for c in envelope.counterparts
            if c.position < counterpart.position and c.status != CounterpartStatus.SIGNED.value]


def view_signing(session: Session, token: str, actor: Actor, *, now: dt.datetime | None = None
                 ) -> SigningView:
    """Open a signing link: check it, record the first view, and describe the counterpart."""
    now = now or utcnow()
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    waiting = _check_link(session, counterpart, envelope, now)
    if not waiting and counterpart.status == CounterpartStatus.SENT.value:
        counterpart.status = transition(counterpart.status, CounterpartStatus.VIEWED).value
        counterpart.first_viewed_at = now
        record_event(session, envelope.letter_id, "viewed", actor=counterpart.name,
                     ip=actor.ip, user_agent=actor.user_agent, envelope_id=envelope.id,
                     counterpart_id=counterpart.id, at=now)
    letter = session.get(Letter, envelope.letter_id)
    version = session.get(LetterVersion, envelope.version_id)
    assert letter is not None and version is not None
    return SigningView(counterpart, envelope, letter, version, waiting)


def letter_pdf_for(session: Session, envelope: Envelope) -> bytes:
    """Return the generated letter PDF an envelope was sent with."""
    document = session.get(Document, envelope.letter_pdf_id)
    assert document is not None
    return document_bytes(session, document)


def _signature_image(signature: Any, signer_name: str) -> tuple[str, bytes]:
    if not isinstance(signature, Mapping):
        raise CounterpartError("signature: adopt a typed or drawn signature.")
    kind = signature.get("type")
    if kind == "typed":
        text = _clean_text(signature.get("text"), "signature.text", 100)
        return "typed", pdfs.typed_signature_png(text)
    if kind == "drawn":
        raw = signature.get("png")
        if not isinstance(raw, str) or not raw:
            raise CounterpartError("signature.png: draw your signature first.")
        if raw.startswith("data:"):
            raw = raw.partition(",")[2]
        if len(raw) > 4 * 1024 * 1024:
            raise CounterpartError("signature.png: the drawing is too large.")
        try:
            png = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise CounterpartError("signature.png: not a base64-encoded PNG image.") from None
        return "drawn", pdfs.drawn_signature_png(png)
    raise CounterpartError("signature.type: must be \"typed\" or \"drawn\".")


def _store_document(session: Session, envelope: Envelope, kind: str, data: bytes,
                    filename: str) -> Document:
    document = Document(letter_id=envelope.letter_id, version_id=envelope.version_id,
                        kind=kind, status="ready", blob_sha256=store_blob(session, data),
                        size=len(data), media_type=PDF_TYPE, filename=filename)
    session.add(document)
    session.flush()
    return document


def _counterpart_filename(envelope: Envelope, counterpart: Counterpart, suffix: str) -> str:
    return f"counterpart-{counterpart.position}-{_slug(counterpart.name)}-{suffix}.pdf"


def _after_signature(session: Session, envelope: Envelope, now: dt.datetime) -> bool:
    """Move the letter on after a counterpart is signed; return whether all are signed."""
    letter = get_letter(session, envelope.letter_id, for_update=True)
    counterparts = list(session.scalars(select(Counterpart).where(
        Counterpart.envelope_id == envelope.id).order_by(Counterpart.position)))
    all_signed = all(c.status == CounterpartStatus.SIGNED.value for c in counterparts)
    letter.status = transition(letter.status, LetterStatus.PARTIALLY_EXECUTED).value
    letter.updated_at = now
    if envelope.signing_order and not all_signed:
        nxt = next(c for c in counterparts if c.status != CounterpartStatus.SIGNED.value)
        if nxt.status == CounterpartStatus.CREATED.value:
            nxt.status = transition(nxt.status, CounterpartStatus.SENT).value
            record_event(session, letter.id, "sent", actor="system", envelope_id=envelope.id,
                         counterpart_id=nxt.id, at=now,
                         detail={"signer": nxt.name, "role": nxt.role,
                                 "reason": "earlier signers have signed"})
    return all_signed


def _mark_signed(session: Session, counterpart: Counterpart, now: dt.datetime) -> None:
    # A conditional update: of two requests racing with the same link, one changes the row.
    changed = rowcount(session.execute(
        update(Counterpart).where(Counterpart.id == counterpart.id,
                                  Counterpart.status.in_(_OPEN))
        .values(status=CounterpartStatus.SIGNED.value, signed_at=now)))
    if changed != 1:
        raise LinkError("This counterpart has already been signed; the link has been used.",
                        "signed")
    session.refresh(counterpart)


def sign_counterpart(session: Session, token: str, *, consent: Any, signature: Any,
                     actor: Actor, now: dt.datetime | None = None) -> tuple[Counterpart, bool]:
    """Sign a counterpart through its link: consent, adopt a signature, stamp and store it.

    Returns the counterpart and whether every counterpart of the envelope is now signed (the
    caller then runs :func:`assemble_envelope` after committing).
    """
    now = now or utcnow()
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    waiting = _check_link(session, counterpart, envelope, now)
    if waiting:
        raise LinkError(f"Please wait: {', '.join(waiting)} must sign first.", "waiting")
    if consent is not True:
        raise CounterpartError("consent: agree to sign electronically, or decline instead.")
    method, png = _signature_image(signature, counterpart.name)
    letter_pdf = letter_pdf_for(session, envelope)
    stamped = pdfs.stamp_signature(letter_pdf, signer_name=counterpart.name,
                                   signature_png=png, signed_at=now,
                                   fill_day_blank=counterpart.role == "executive")
    if counterpart.first_viewed_at is None:
        counterpart.first_viewed_at = now
    _mark_signed(session, counterpart, now)
    document = _store_document(session, envelope, "signed_counterpart", stamped,
                               _counterpart_filename(envelope, counterpart, "signed"))
    counterpart.method = method
    counterpart.consent_at = now
    counterpart.ip = actor.ip
    counterpart.user_agent = (actor.user_agent or "")[:512] or None
    counterpart.signature_sha256 = store_blob(session, png)
    counterpart.signed_document_id = document.id
    common: dict[str, Any] = dict(actor=counterpart.name, ip=actor.ip, user_agent=actor.user_agent,
                  envelope_id=envelope.id, counterpart_id=counterpart.id, at=now)
    record_event(session, envelope.letter_id, "consented", **common,
                 detail={"disclosure": "electronic signature consent"})
    record_event(session, envelope.letter_id, "signed", **common,
                 detail={"method": method, "document_sha256": document.blob_sha256,
                         "signature_sha256": counterpart.signature_sha256})
    return counterpart, _after_signature(session, envelope, now)


def decline_counterpart(session: Session, token: str, *, reason: Any, actor: Actor,
                        now: dt.datetime | None = None) -> Counterpart:
    """Decline to sign, with a reason; the letter is then declined."""
    now = now or utcnow()
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    _check_link(session, counterpart, envelope, now)
    text = _clean_text(reason, "reason", 1000)
    counterpart.status = transition(counterpart.status, CounterpartStatus.DECLINED).value
    counterpart.declined_at = now
    counterpart.decline_reason = text
    counterpart.ip, counterpart.user_agent = actor.ip, (actor.user_agent or "")[:512] or None
    envelope.status = transition(envelope.status, EnvelopeStatus.DECLINED).value
    letter = get_letter(session, envelope.letter_id, for_update=True)
    letter.status = transition(letter.status, LetterStatus.DECLINED).value
    letter.updated_at = now
    record_event(session, letter.id, "declined", actor=counterpart.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now, detail={"reason": text})
    return counterpart


def upload_paper_counterpart(session: Session, letter_id: int, counterpart_id: int,
                             data: bytes, filename: str, actor: Actor, *,
                             max_bytes: int = MAX_UPLOAD_BYTES, now: dt.datetime | None = None
                             ) -> tuple[Counterpart, bool, bool]:
    """Record a counterpart signed on paper from its scanned PDF.

    Returns the counterpart, whether this upload was new (the same file again is one upload),
    and whether every counterpart is now signed.
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    digest = hashlib.sha256(data).hexdigest()
    if counterpart.status == CounterpartStatus.SIGNED.value:
        signed = session.get(Document, counterpart.signed_document_id)
        if counterpart.method == "paper" and signed and signed.blob_sha256 == digest:
            return counterpart, False, False
        raise StateError(f"Counterpart {counterpart.id} ({counterpart.name}) is already "
                         "signed.")
    _check_link(session, counterpart, envelope, now)
    letter_pdf = letter_pdf_for(session, envelope)
    letter_pages = pdfs.page_count(letter_pdf)
    pdfs.inspect_upload(data, filename=filename, allowed_page_counts={letter_pages, 1},
                        max_bytes=max_bytes)
    _mark_signed(session, counterpart, now)
    document = _store_document(session, envelope, "scanned_counterpart", data,
                               _counterpart_filename(envelope, counterpart, "scan"))
    counterpart.method = "paper"
    counterpart.signed_document_id = document.id
    record_event(session, letter_id, "uploaded", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"file": filename[:200], "sha256": digest, "size": len(data)})
    record_event(session, letter_id, "signed", actor=counterpart.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"method": "paper", "document_sha256": digest,
                         "recorded_by": actor.name})
    return counterpart, True, _after_signature(session, envelope, now)


def void_envelope(session: Session, letter_id: int, reason: Any, actor: Actor, *,
                  now: dt.datetime | None = None) -> Envelope:
    """Withdraw a letter from signature; its links stop working at once."""
    now = now or utcnow()
    text = _clean_text(reason, "reason", 1000)
    envelope = current_envelope(session, letter_id)
    if envelope is None:
        raise StateError("This letter has not been sent for signature.")
    envelope = _lock_envelope(session, envelope.id)
    letter = get_letter(session, letter_id, for_update=True)
    if envelope.status == EnvelopeStatus.COMPLETED.value or envelope.assembly_state == "done":
        raise StateError("This letter is fully executed; it cannot be voided.")
    if all(c.status == CounterpartStatus.SIGNED.value for c in envelope.counterparts):
        raise StateError("Every counterpart is signed, so the letter is executed; it cannot be "
                         "voided.")
    envelope.status = transition(envelope.status, EnvelopeStatus.VOIDED).value
    envelope.voided_at, envelope.void_reason = now, text
    for counterpart in envelope.counterparts:
        if counterpart.status != CounterpartStatus.SIGNED.value and counterpart.status != \
                CounterpartStatus.VOIDED.value:
            counterpart.status = transition(counterpart.status, CounterpartStatus.VOIDED).value
    letter.status = transition(letter.status, LetterStatus.VOIDED).value
    letter.updated_at = now
    record_event(session, letter_id, "voided", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id, at=now,
                 detail={"reason": text})
    return envelope


def reissue_link(session: Session, letter_id: int, counterpart_id: int, actor: Actor, *,
                 now: dt.datetime | None = None) -> IssuedLink:
    """Give an open counterpart a new signing link; the old one stops working at once.

    Links are stored only as hashes, so a lost link cannot be shown again: this replaces it.
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    if envelope.status != EnvelopeStatus.OUT.value:
        raise StateError(f"This envelope is {envelope.status}; its links cannot be renewed.")
    if counterpart.status not in _OPEN:
        raise StateError(f"{counterpart.name}'s counterpart is {counterpart.status}; only a "
                         "counterpart still to be signed gets a new link.")
    if now >= envelope.expires_at:
        raise StateError("The envelope's links have expired; void it and send the letter "
                         "again.")
    token = secrets.token_urlsafe(32)
    counterpart.token_hash = token_hash(token)
    record_event(session, letter_id, "sent", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"signer": counterpart.name, "role": counterpart.role,
                         "reason": "new link; the earlier link no longer works"})
    return IssuedLink(counterpart.id, token)


def expire_links(session: Session, *, now: dt.datetime | None = None) -> int:
    """Mark the open counterparts of envelopes past their expiry as expired."""
    now = now or utcnow()
    envelopes = session.scalars(select(Envelope).where(
        Envelope.status == EnvelopeStatus.OUT.value, Envelope.expires_at <= now))
    count = 0
    for envelope in envelopes:
        for counterpart in envelope.counterparts:
            if counterpart.status in _OPEN:
                counterpart.status = CounterpartStatus.EXPIRED.value
                record_event(session, envelope.letter_id, "expired", actor="system",
                             envelope_id=envelope.id, counterpart_id=counterpart.id, at=now)
                count += 1
    return count


# --- assembly ---------------------------------------------------------------------------------

def claim_assembly(db: Database, envelope_id: str) -> bool:
    """Claim an envelope's assembly for this caller; False if done or under way elsewhere."""
    stale = utcnow() - STALE_ASSEMBLY
    with db.transaction() as session:
        envelope = _lock_envelope(session, envelope_id)
        if envelope.status != EnvelopeStatus.OUT.value:
            return False
        if not all(c.status == CounterpartStatus.SIGNED.value for c in envelope.counterparts):
            return False
        return rowcount(session.execute(
            update(Envelope).where(Envelope.id == envelope_id, or_(
                Envelope.assembly_state.is_(None), Envelope.assembly_state == "failed",
                (Envelope.assembly_state == "running")
                & (Envelope.assembly_claimed_at < stale)))
            .values(assembly_state="running", assembly_claimed_at=utcnow(),
                    assembly_error=None))) == 1


def _certificate_info(session: Session, envelope: Envelope, letter: Letter,
                      letter_pdf: bytes, completed_at: dt.datetime) -> pdfs.CertificateInfo:
    signers = []
    for c in envelope.counterparts:
        signers.append(pdfs.CertificateSigner(
            name=c.name, email=c.email or "", role=c.role,
            method=cast(Literal["typed", "drawn", "paper"], c.method),
            consent_at=c.consent_at, first_viewed_at=c.first_viewed_at, signed_at=c.signed_at,
            ip=c.ip, user_agent=c.user_agent,
            signature_png=blob_bytes(session, c.signature_sha256) if c.signature_sha256
            else None))
    events = [pdfs.CertificateEvent(at=e.at, type=e.type, actor=e.actor,
                                    detail=_event_detail(e.detail))
              for e in events_of(session, letter.id) if e.envelope_id in (None, envelope.id)]
    title = f"Separation letter of {letter.executive_name}, {letter.company_name}"
    return pdfs.CertificateInfo(
        envelope_id=envelope.id, title=title,
        letter_sha256=hashlib.sha256(letter_pdf).hexdigest(), completed_at=completed_at,
        signers=signers, events=events)


def _event_detail(detail: Mapping[str, Any] | None) -> str:
    if not detail:
        return ""
    keep = {k: v for k, v in detail.items() if k in ("method", "reason", "file", "version",
                                                      "signer", "role", "document")}
    return ", ".join(f"{k}: {v}" for k, v in keep.items())


def assemble_envelope(db: Database, envelope_id: str, sealer: Sealer) -> Document | None:
    """Build, seal and store the executed PDF once every counterpart is signed.

    Returns the executed document, or None if another caller holds the assembly or it is
    already done. A failure leaves the letter partially executed with nothing half-written,
    and the assembly can be claimed again.
    """
    if not claim_assembly(db, envelope_id):
        return None
    try:
        with db.transaction() as session:
            envelope = session.get(Envelope, envelope_id)
            assert envelope is not None
            letter = get_letter(session, envelope.letter_id)
            letter_pdf = letter_pdf_for(session, envelope)
            page_index = pdfs.signature_page_index(letter_pdf,
                                                   [c.name for c in envelope.counterparts])
            signed_pages = []
            for c in envelope.counterparts:
                signed = session.get(Document, c.signed_document_id)
                assert signed is not None
                data = document_bytes(session, signed)
                pages = pdfs.page_count(data)
                signed_pages.append(pdfs.extract_pages(data, [page_index if pages > 1 else 0]))
            completed_at = utcnow()
            info = _certificate_info(session, envelope, letter, letter_pdf, completed_at)
        executed = pdfs.assemble_executed_pdf(
            letter_pdf, signed_pages, pdfs.certificate_pdf(info),
            metadata={"/Title": info.title, "/CounterpartEnvelope": envelope_id,
                      "/CounterpartLetterSHA256": info.letter_sha256})
        sealed = seal_pdf(executed, sealer)
    except Exception as exc:
        with db.transaction() as session:
            session.execute(update(Envelope).where(Envelope.id == envelope_id)
                            .values(assembly_state="failed", assembly_error=str(exc)[:2000]))
        if isinstance(exc, CounterpartError):
            raise
        raise CounterpartError(f"Assembling the executed PDF failed: {exc}") from exc
    with db.transaction() as session:
        envelope = _lock_envelope(session, envelope_id)
        if envelope.assembly_state != "running" or envelope.status != EnvelopeStatus.OUT.value:
            return None
        document = _store_document(session, envelope, "executed_pdf", sealed,
                                   f"{_slug(letter.executive_name)}-executed.pdf")
        envelope.executed_document_id = document.id
        envelope.assembly_state = "done"
        envelope.status = transition(envelope.status, EnvelopeStatus.COMPLETED).value
        envelope.completed_at = completed_at
        letter = get_letter(session, envelope.letter_id, for_update=True)
        letter.status = transition(letter.status, LetterStatus.FULLY_EXECUTED).value
        letter.updated_at = completed_at
        record_event(session, letter.id, "executed", actor="system", envelope_id=envelope_id,
                     at=completed_at, detail={"sha256": document.blob_sha256,
                                              "document": document.filename})
        return document


def retry_assembly(db: Database, envelope_id: str, sealer: Sealer) -> Document | None:
    """Try a failed or abandoned assembly again."""
    return assemble_envelope(db, envelope_id, sealer)


# --- proof ------------------------------------------------------------------------------------

def audit_record(session: Session, letter_id: int) -> dict[str, Any]:
    """Describe a letter's execution and audit chain as JSON values."""
    letter = get_letter(session, letter_id)
    envelope = current_envelope(session, letter_id)
    chain = verify_chain(session, letter_id)
    record: dict[str, Any] = {
        "letter": {"id": letter.id, "template": letter.template, "status": letter.status,
                   "executive": letter.executive_name, "company": letter.company_name,
                   "version": letter.current_version},
        "envelope": None,
        "chain": {"ok": chain.ok, "events": chain.events, "message": chain.message,
                  "first_broken_sequence": chain.first_broken_sequence},
        "events": [event_as_dict(e) for e in events_of(session, letter_id)],
    }
    if envelope is not None:
        letter_pdf_doc = session.get(Document, envelope.letter_pdf_id)
        executed = (session.get(Document, envelope.executed_document_id)
                    if envelope.executed_document_id else None)
        record["envelope"] = {
            "id": envelope.id, "status": envelope.status,
            "created_at": envelope.created_at.isoformat(),
            "expires_at": envelope.expires_at.isoformat(),
            "completed_at": envelope.completed_at.isoformat() if envelope.completed_at
            else None,
            "letter_pdf_sha256": letter_pdf_doc.blob_sha256 if letter_pdf_doc else None,
            "executed_pdf_sha256": executed.blob_sha256 if executed else None,
            "signers": [counterpart_as_dict(session, c) for c in envelope.counterparts],
        }
    return record


def counterpart_as_dict(session: Session, c: Counterpart) -> dict[str, Any]:
    """Describe a counterpart as JSON values (without its link)."""
    signed = session.get(Document, c.signed_document_id) if c.signed_document_id else None

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"counterpart_id": c.id, "position": c.position, "role": c.role, "name": c.name,
            "email": c.email, "status": c.status, "method": c.method,
            "consent_at": iso(c.consent_at), "first_viewed_at": iso(c.first_viewed_at),
            "signed_at": iso(c.signed_at), "declined_at": iso(c.declined_at),
            "decline_reason": c.decline_reason, "ip": c.ip, "user_agent": c.user_agent,
            "signed_document_sha256": signed.blob_sha256 if signed else None}


def verify_document(session: Session, data: bytes, sealer: Sealer) -> dict[str, Any]:
    """Say whether a PDF is an executed document of this system, intact, and who signed it."""
    digest = hashlib.sha256(data).hexdigest()
    check = check_seal(data, sealer.certificate)
    executed = session.scalar(select(Document).where(Document.kind == "executed_pdf",
                                                     Document.blob_sha256 == digest))
    envelope = None
    if executed is not None:
        envelope = session.scalar(select(Envelope).where(
            Envelope.executed_document_id == executed.id))
    if envelope is None:
        envelope_id = pdfs.envelope_id_of(data)
        if envelope_id:
            envelope = session.get(Envelope, envelope_id)
    known = envelope is not None and envelope.executed_document_id is not None
    intact = bool(known and executed is not None and check.sealed and check.intact
                  and check.signed_by_us)
    result: dict[str, Any] = {
        "known": known, "intact": intact, "sealed": check.sealed,
        "seal_valid": check.intact, "signed_by_this_system": check.signed_by_us,
        "modified": bool(known and not intact),
        "sha256": digest, "message": _verify_message(known, intact, check),
        "signers": [], "envelope_id": envelope.id if known and envelope else None,
    }
    if known and envelope is not None:
        letter = session.get(Letter, envelope.letter_id)
        result["title"] = (f"Separation letter of {letter.executive_name}, "
                           f"{letter.company_name}") if letter else None
        result["completed_at"] = envelope.completed_at.isoformat() if envelope.completed_at \
            else None
        result["sealed_at"] = check.signed_at.isoformat() if check.signed_at else None
        result["signers"] = [{"name": c.name, "role": c.role, "method": c.method,
                              "signed_at": c.signed_at.isoformat() if c.signed_at else None}
                             for c in envelope.counterparts]
    return result


def _verify_message(known: bool, intact: bool, check: Any) -> str:
    if known and intact:
        return "This is an executed document of this system, exactly as it was sealed."
    if known:
        return ("This document comes from this system but was modified after it was sealed; "
                "do not rely on this copy.")
    if check.sealed and check.signed_by_us:
        return "The seal is this system's, but no executed letter with this content is known."
    return "This PDF is not an executed document of this system."


def audit_json(session: Session, letter_id: int) -> str:
    """Return a letter's audit record as pretty JSON."""
    return json.dumps(audit_record(session, letter_id), indent=2, ensure_ascii=False)
