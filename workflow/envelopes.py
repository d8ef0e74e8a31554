"""Execution in counterparts: sending, signing, paper uploads, voiding and assembly.

An envelope sends one version of a letter to its signers. Each signer gets a counterpart: the
whole letter, to sign through a private link (electronically) or on paper (staff upload the
scan). The transaction that records the last signature (online or a counted paper upload)
enqueues :func:`assemble_envelope_job`, a background job run once it commits: it builds the
executed PDF (the letter once, every signed signature page, a certificate of completion), seals
it, and marks the letter fully executed. The job may run twice (a retry, a worker's job taken
over): the executed PDF is attached only to an envelope that has none, by a conditional update
in the transaction that stores it, so a second run adds nothing.

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
import logging
import math
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from . import jobs, paper, pdfs, signer_identity
from .audit import event_as_dict, events_of, record_event, verify_chain
from .convert import PdfConverter
from .db import Database, rowcount
from .errors import (
    CounterpartError,
    DocumentError,
    LinkError,
    NotFoundError,
    ScanCheckError,
    SigningOrderError,
    StateError,
)
from .letters import (
    PDF_TYPE,
    _slug,
    blob_bytes,
    document_bytes,
    get_letter,
    get_version,
    latest_document,
    refresh_search_text,
    render_version,
    store_blob,
)
from .models import Counterpart, Document, Envelope, Letter, LetterVersion, utcnow
from .render import render_pdf
from .schema import TemplateSpec, load_template
from .seal import Sealer, seal_pdf
from .states import (
    OPEN_COUNTERPART_STATUSES,
    CounterpartStatus,
    EnvelopeStatus,
    LetterStatus,
    transition,
)

if TYPE_CHECKING:
    from huey.api import Task

    from .activity import ActivityRecorder

__all__ = [
    "SignerSpec", "Actor", "IssuedLink", "SigningView", "send_envelope", "default_signers",
    "check_signer_roles", "party_label",
    "current_envelope", "envelope_for_token", "view_signing", "record_view", "sign_counterpart",
    "decline_counterpart", "upload_paper_counterpart", "void_envelope", "assemble_envelope",
    "assemble_envelope_job", "retry_assembly", "resume_assemblies", "record_assembly_failure",
    "assembly_state", "ASSEMBLY_RETRIES", "audit_record", "token_hash",
    "expire_links", "reissue_link", "counterpart_of", "DEFAULT_LINK_DAYS",
    "MAX_UPLOAD_BYTES", "record_delivery", "signer_document", "link_shows_letter",
    "signer_time_zone", "SignedCopy", "prepare_signature", "record_signature",
    "PaperChoices", "PendingScan", "stage_paper_counterpart",
    "pending_paper_upload", "confirm_paper_counterpart", "discard_paper_upload",
    "undo_paper_counterpart", "CheckedScan", "check_paper_scan", "paper_scan_target",
    "pending_scan_bytes", "readable_link",
]

DEFAULT_LINK_DAYS = 30
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_SIGNERS = 10
# A failed assembly (LibreOffice, the seal, a time-stamp server) is retried this many times,
# after 30 s, 1, 2 and 4 minutes; then the letter page shows it failed, with "Retry".
ASSEMBLY_RETRIES = 4
ASSEMBLY_RETRY_DELAY_SECONDS = 30.0
ASSEMBLY_RETRY_BACKOFF = 2.0
# An envelope still being assembled this long after its job was last enqueued or started is
# enqueued again by :func:`resume_assemblies` (longer than all the retries together).
RESUME_ASSEMBLY_AFTER = dt.timedelta(minutes=10)
log = logging.getLogger(__name__)
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_OPEN = tuple(sorted(OPEN_COUNTERPART_STATUSES))


@dataclass(frozen=True)
class Actor:
    """Who did something, for the audit record: a staff email or a signer, with IP and browser."""

    name: str
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class SignerSpec:
    """A signer as staff name them when sending: the party's role in the template (one of
    its schema's ``[[parties]]``), the signer's name and an optional email."""

    role: str
    name: str
    email: str | None = None
    verify_email: bool = False
    """Open the signing page only after a one-time code emailed to ``email`` is entered."""


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
    # The first view was noted to be written right after (see view_signing's ``views``).
    view_noted: bool = False

    @property
    def status(self) -> str:
        """The counterpart's status, counting a first view noted but not yet written."""
        return CounterpartStatus.VIEWED.value if self.view_noted else self.counterpart.status

    @property
    def can_sign(self) -> bool:
        return not self.waiting_for and self.counterpart.status in _OPEN

    @property
    def signed(self) -> bool:
        """The signer has signed: the link now shows what they signed, to read and keep."""
        return self.counterpart.status == CounterpartStatus.SIGNED.value


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


def _spec_of(version: LetterVersion) -> TemplateSpec:
    """The schema of the template version a letter version was made from (its parties)."""
    from .letters import version_spec

    session = object_session(version)
    if session is None:
        return load_template(version.template_name)
    return version_spec(session, version)


def party_label(session: Session, counterpart: Counterpart) -> str:
    """Name a counterpart's party as its template's schema does ("The executive"); the role
    itself when the schema no longer declares it."""
    version = session.get(LetterVersion, counterpart.envelope.version_id)
    try:
        return _spec_of(version).party(counterpart.role).label if version else counterpart.role
    except (KeyError, CounterpartError):
        return counterpart.role


def default_signers(spec: TemplateSpec, terms: Mapping[str, Any]) -> list[SignerSpec]:
    """Name the signers of a document from its template's parties, in signing order.

    Each party's name is the term its schema names (``name``), its email the term of
    ``email`` when there is one and it holds an address. A term missing from ``terms`` leaves
    the name (or email) empty, for staff to type.
    """
    signers = []
    for party in spec.parties:
        name = terms.get(party.name_term)
        email = terms.get(party.email_term) if party.email_term else None
        email = email.strip().lower() if isinstance(email, str) and \
            _EMAIL_RE.match(email.strip()) else None
        signers.append(SignerSpec(party.role, str(name).strip() if name else "", email))
    return signers


def check_signer_roles(spec: TemplateSpec, signers: Sequence[SignerSpec]) -> None:
    """Refuse signers that are not the template's parties, each exactly once.

    Raises CounterpartError naming ``signers[i].role`` (a role the template does not have, or
    one given twice) or ``signers`` (a party without a signer).
    """
    roles = ", ".join(f"{p.role} ({p.label})" for p in spec.parties) or "none"
    seen: dict[str, int] = {}
    for index, signer in enumerate(signers):
        if signer.role not in spec.signers:
            raise CounterpartError(f"signers[{index}].role: {signer.role!r} is not a party of "
                                   f"this template; its parties are {roles}.")
        if signer.role in seen:
            raise CounterpartError(f"signers[{index}].role: {signer.role!r} is already signer "
                                   f"{seen[signer.role] + 1}; each party signs once.")
        seen[signer.role] = index
    missing = [p for p in spec.parties if p.role not in seen]
    if missing:
        names = ", ".join(f"{p.role} ({p.label})" for p in missing)
        raise CounterpartError(f"signers: every party signs; give a signer for {names}.")


def parse_signers(raw: Any) -> list[SignerSpec]:
    """Check the signers staff typed; errors name the signer and the field.

    Roles are checked against the template's parties when the letter is sent
    (:func:`check_signer_roles`).
    """
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
        if not isinstance(role, str) or not _ROLE_RE.match(role):
            raise CounterpartError(f"{where}.role: give the role of one of the template's "
                                   "parties, such as \"company\".")
        name = _clean_text(item.get("name"), f"{where}.name", 200)
        email = item.get("email") or None
        if email is not None:
            if not isinstance(email, str) or not _EMAIL_RE.match(email.strip()):
                raise CounterpartError(f"{where}.email: {email!r} is not an email address.")
            email = email.strip().lower()
        verify = item.get("verify_email", False)
        if verify is None:
            verify = False
        if not isinstance(verify, bool):
            raise CounterpartError(f"{where}.verify_email: must be true or false.")
        if verify and email is None:
            raise CounterpartError(f"{where}.verify_email: a one-time code is emailed, so "
                                   f"{name} needs an email address; give one or do not ask "
                                   "for the code.")
        out.append(SignerSpec(role, name, email, verify))
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
                  link_days: int = DEFAULT_LINK_DAYS, email_invitations: bool = False,
                  now: dt.datetime | None = None) -> tuple[Envelope, list[IssuedLink]]:
    """Send the newest version of a generated letter for execution in counterparts.

    Returns the envelope and each signer's link token; only the tokens' hashes are stored.
    Counterparts start "ready" (link issued, not yet handed to a mail server), or "created"
    while they wait for earlier signers; :func:`record_delivery` marks them "sent" once the
    mail server accepts their invitation. ``email_invitations`` says whether the caller will
    try to email the signers who have an address (it is recorded, not acted on, here).
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

    spec = _spec_of(version)
    chosen = list(signers) if signers else default_signers(spec, version_terms(version))
    for index, signer in enumerate(chosen):
        if not signer.name:
            raise CounterpartError(f"signers[{index}].name is required.")
    check_signer_roles(spec, chosen)
    for index, signer in enumerate(chosen):
        if signer.verify_email and not signer.email:
            raise CounterpartError(f"signers[{index}].verify_email: a one-time code is "
                                   f"emailed, so {signer.name} needs an email address.")
        if signer.verify_email and not email_invitations:
            raise CounterpartError(
                f"signers[{index}].verify_email: outgoing mail is not set up "
                f"(COUNTERPART_SMTP_HOST), so no one-time code can be emailed to "
                f"{signer.name}; set up mail, or send without asking for the code.")
    fields = pdfs.signing_fields(document_bytes(session, pdf_doc))
    for index, signer in enumerate(chosen):
        if signer.role not in fields.signatures:
            raise CounterpartError(
                f"signers[{index}].role: the letter's PDF has no signature field for "
                f"{signer.role!r}, so it cannot be signed; its template needs "
                f"{{{{ sign_here('{signer.role}') }}}} (make a new version from a template "
                f"that has it).")
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
            verify_email=bool(signer.verify_email),
            status=(CounterpartStatus.CREATED if waiting else CounterpartStatus.READY).value)
        session.add(counterpart)
        session.flush()
        links.append(IssuedLink(counterpart.id, token))
        record_event(session, letter.id, "sent", actor=actor.name, ip=actor.ip,
                     user_agent=actor.user_agent, envelope_id=envelope.id,
                     counterpart_id=counterpart.id, at=now,
                     detail={"signer": signer.name, "role": signer.role,
                             "email": signer.email, "position": position,
                             "waiting_for_earlier_signers": waiting,
                             "delivery": _delivery(signer.email, email_invitations),
                             "verify_email": bool(signer.verify_email),
                             "expires_at": envelope.expires_at.isoformat()})
    refresh_search_text(session, letter)
    return envelope, links


def _delivery(email: str | None, email_invitations: bool) -> str:
    """How a new link reaches its signer: ``email`` (to be emailed) or ``by_hand``."""
    return "email" if email and email_invitations else "by_hand"


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


def _check_readable(counterpart: Counterpart, envelope: Envelope, now: dt.datetime) -> None:
    """Raise LinkError if the link may no longer even be read: withdrawn, declined, expired.

    A link that was used to sign stays readable for its lifetime: it shows what was signed
    and gives the signer their copies.
    """
    status = counterpart.status
    signed = status == CounterpartStatus.SIGNED.value
    if status == CounterpartStatus.DECLINED.value:
        raise LinkError("You declined to sign this letter; the link no longer works.",
                        "declined")
    if status == CounterpartStatus.VOIDED.value or envelope.status == EnvelopeStatus.VOIDED:
        raise LinkError("This letter was withdrawn by its sender; the link no longer works.",
                        "voided")
    if envelope.status == EnvelopeStatus.DECLINED.value:
        raise LinkError("Another signer declined this letter, so it will not be executed; the "
                        "link no longer works." if signed else
                        "Another signer declined this letter; it can no longer be signed.",
                        "declined")
    if status == CounterpartStatus.EXPIRED.value or now >= envelope.expires_at:
        if signed:
            raise LinkError("You signed this letter, and this link's lifetime has ended, so it "
                            "no longer gives your copy; ask the sender for a copy of what you "
                            "signed.", "expired")
        raise LinkError("This signing link has expired; ask the sender for a new one.",
                        "expired")


def _check_link(session: Session, counterpart: Counterpart, envelope: Envelope,
                now: dt.datetime) -> list[str]:
    """Raise LinkError if the link can no longer sign; return who must sign first."""
    if counterpart.status == CounterpartStatus.SIGNED.value:
        raise LinkError("This counterpart has already been signed; the link has been used.",
                        "signed")
    _check_readable(counterpart, envelope, now)
    return _waiting_for(counterpart, envelope)


def _waiting_for(counterpart: Counterpart, envelope: Envelope) -> list[str]:
    if not envelope.signing_order or counterpart.status == CounterpartStatus.SIGNED.value:
        return []
    return [c.name for c in envelope.counterparts
            if c.position < counterpart.position and c.status != CounterpartStatus.SIGNED.value]


def view_signing(session: Session, token: str, actor: Actor, *, now: dt.datetime | None = None,
                 identity: Sequence[str] | None = None,
                 views: ActivityRecorder | None = None) -> SigningView:
    """Open a signing link: check it, record the first view, and describe the counterpart.

    A signed counterpart's link reads (it shows what was signed) until the envelope's links
    expire; it never signs again. Raises LinkError when the link may not even be read, and
    IdentityError when its signer must first enter an emailed code and ``identity`` (the
    browser tokens of :mod:`workflow.signer_identity`) holds none for it.

    With ``views`` (a read-only request), the first view is noted there, with its time, IP and
    browser, and written by :func:`record_view` right after, in its own transaction; without,
    it is recorded in the caller's transaction.
    """
    now = now or utcnow()
    counterpart, envelope = envelope_for_token(session, token, lock=views is None)
    _check_readable(counterpart, envelope, now)
    signer_identity.require_identity(session, counterpart, identity, now=now)
    waiting = _waiting_for(counterpart, envelope)
    noted = False
    if not waiting and counterpart.status in (CounterpartStatus.READY.value,
                                              CounterpartStatus.SENT.value):
        if views is not None:
            views.signer_viewed(counterpart.id, now, ip=actor.ip, user_agent=actor.user_agent)
            noted = True
        else:
            _mark_viewed(session, counterpart, envelope, actor, now)
    letter = session.get(Letter, envelope.letter_id)
    version = session.get(LetterVersion, envelope.version_id)
    assert letter is not None and version is not None
    return SigningView(counterpart, envelope, letter, version, waiting, noted)


def _mark_viewed(session: Session, counterpart: Counterpart, envelope: Envelope, actor: Actor,
                 now: dt.datetime) -> None:
    counterpart.status = transition(counterpart.status, CounterpartStatus.VIEWED).value
    counterpart.first_viewed_at = now
    record_event(session, envelope.letter_id, "viewed", actor=counterpart.name,
                 ip=actor.ip, user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now)


def record_view(session: Session, counterpart_id: int, actor: Actor, at: dt.datetime) -> bool:
    """Record a signer's first view noted by :func:`view_signing` at ``at`` (with the IP and
    browser of ``actor``), unless the counterpart moved on meanwhile (signed, declined,
    withdrawn) or a view was recorded already; say whether it was recorded."""
    counterpart = session.get(Counterpart, counterpart_id)
    if counterpart is None:
        return False
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    if counterpart.status not in (CounterpartStatus.READY.value, CounterpartStatus.SENT.value):
        return False
    _mark_viewed(session, counterpart, envelope, Actor(counterpart.name, actor.ip,
                                                        actor.user_agent), at)
    return True


def link_shows_letter(counterpart: Counterpart, envelope: Envelope,
                      now: dt.datetime | None = None) -> bool:
    """Say whether a link may show the letter to sign now: open, readable, its turn come.

    A waiting signer's view is recorded when their turn comes; a signed one gets their
    signed copy instead, and a withdrawn, declined or expired link shows nothing.
    """
    try:
        _check_readable(counterpart, envelope, now or utcnow())
    except LinkError:
        return False
    return counterpart.status in _OPEN and not _waiting_for(counterpart, envelope)


def readable_link(session: Session, token: str, *, now: dt.datetime | None = None
                  ) -> tuple[Counterpart, Envelope]:
    """Return the counterpart and envelope of a link that may still be read, locked (for the
    one-time code steps); raises LinkError or NotFoundError as :func:`view_signing` does."""
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    _check_readable(counterpart, envelope, now or utcnow())
    return counterpart, envelope


SignerCopy = Literal["signed", "executed"]


def signer_document(session: Session, token: str, which: SignerCopy, actor: Actor, *,
                    now: dt.datetime | None = None,
                    identity: Sequence[str] | None = None) -> Document:
    """Give the holder of a signing link their signed counterpart or the executed letter.

    Only the link's own counterpart, once signed, while the link may be read (not withdrawn,
    declined or past its lifetime); the download is recorded with the signer as its actor.
    Raises LinkError (410) for a link that may not be read, StateError (409) before the copy
    exists, NotFoundError for an unknown link.
    """
    now = now or utcnow()
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    _check_readable(counterpart, envelope, now)
    signer_identity.require_identity(session, counterpart, identity, now=now)
    if counterpart.status != CounterpartStatus.SIGNED.value or \
            counterpart.signed_document_id is None:
        raise StateError("You have not signed this letter yet; your signed copy is here once "
                         "you sign.")
    if which == "signed":
        document_id: int | None = counterpart.signed_document_id
    elif envelope.executed_document_id is not None:
        document_id = envelope.executed_document_id
    else:
        left = [c.name for c in envelope.counterparts
                if c.status != CounterpartStatus.SIGNED.value]
        raise StateError(f"The letter is not fully executed yet: still to sign: "
                         f"{', '.join(left)}." if left else
                         "Every counterpart is signed; the executed letter is being put "
                         "together. Try again in a minute.")
    document = session.get(Document, document_id)
    assert document is not None and document.blob_sha256 is not None
    record_event(session, envelope.letter_id, "downloaded", actor=counterpart.name,
                 ip=actor.ip, user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"document": document.filename, "by": "signer"})
    return document


def letter_pdf_for(session: Session, envelope: Envelope) -> bytes:
    """Return the generated letter PDF an envelope was sent with."""
    document = session.get(Document, envelope.letter_pdf_id)
    assert document is not None
    return document_bytes(session, document)


def _signature_image(signature: Any) -> tuple[str, bytes]:
    """Read the signature a signer adopts: ``{"type": "typed", "text"}`` or
    ``{"type": "drawn", "png": base64, "pixel_ratio"?: device pixels per CSS pixel}``."""
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
        ratio = _pixel_ratio(signature.get("pixel_ratio"))
        try:
            return "drawn", pdfs.drawn_signature_png(png, pixel_ratio=ratio)
        except DocumentError as exc:
            raise DocumentError(f"signature.png: {exc}") from None
    raise CounterpartError("signature.type: must be \"typed\" or \"drawn\".")


def _pixel_ratio(value: Any) -> float:
    """Read a drawing's device pixels per CSS pixel (absent: 1, a plain image)."""
    if value is None or value == "":
        return 1.0
    low, high = pdfs.DRAWN_PIXEL_RATIOS
    try:
        ratio = float(value) if isinstance(value, int | float | str) and \
            not isinstance(value, bool) else math.nan
    except ValueError:
        ratio = math.nan
    if not low <= ratio <= high:
        raise CounterpartError(f"signature.pixel_ratio: must be a number from {low:g} to "
                               f"{high:g} (the screen's device pixels per CSS pixel).")
    return ratio


_NOT_SIGNERS_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def signer_time_zone(value: Any) -> tuple[str, ZoneInfo]:
    """Read a signer's IANA time zone, as a browser names it ("America/New_York").

    Absent or empty, it is UTC. Raises CounterpartError naming ``time_zone`` for a zone the
    time zone database does not know.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return "UTC", ZoneInfo("UTC")
    if not isinstance(value, str) or len(value) > 64:
        raise CounterpartError("time_zone: give the name of an IANA time zone, such as "
                               "America/New_York.")
    name = value.strip()
    try:
        if name in _NOT_SIGNERS_ZONES:
            raise ValueError(name)
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        shown = name if name.isprintable() else repr(name)
        raise CounterpartError(f"time_zone: {shown} is not a time zone of the IANA time zone "
                               "database; give one such as America/New_York or UTC.") from None


def _date_of_signing(counterpart: Counterpart) -> dt.date | None:
    """A counterpart's calendar date of signing (online, in the signer's zone if not stored)."""
    if counterpart.signed_on is not None or counterpart.method == "paper":
        return counterpart.signed_on
    if counterpart.signed_at is None:
        return None
    return counterpart.signed_at.astimezone(signer_time_zone(counterpart.time_zone)[1]).date()


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
    """Move the letter on after a counterpart is signed; return whether all are signed.

    The last signature queues the assembly of the executed PDF (see :func:`_queue_assembly`).
    """
    letter = get_letter(session, envelope.letter_id, for_update=True)
    counterparts = list(session.scalars(select(Counterpart).where(
        Counterpart.envelope_id == envelope.id).order_by(Counterpart.position)))
    all_signed = all(c.status == CounterpartStatus.SIGNED.value for c in counterparts)
    letter.status = transition(letter.status, LetterStatus.PARTIALLY_EXECUTED).value
    letter.updated_at = now
    if all_signed:
        _queue_assembly(session, envelope, now)
    if envelope.signing_order and not all_signed:
        nxt = next(c for c in counterparts if c.status != CounterpartStatus.SIGNED.value)
        if nxt.status == CounterpartStatus.CREATED.value:
            # Their turn has come, but nobody has told them: the link is ready to hand over.
            nxt.status = transition(nxt.status, CounterpartStatus.READY).value
            record_event(session, letter.id, "link_ready", actor="system",
                         envelope_id=envelope.id, counterpart_id=nxt.id, at=now,
                         detail={"signer": nxt.name, "role": nxt.role, "email": nxt.email,
                                 "reason": "earlier signers have signed",
                                 "emailed_before_their_turn": nxt.emailed_at is not None})
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


def _ready_to_sign(session: Session, counterpart: Counterpart, envelope: Envelope,
                   now: dt.datetime) -> None:
    waiting = _check_link(session, counterpart, envelope, now)
    if waiting:
        raise LinkError(f"Please wait: {', '.join(waiting)} must sign first.", "waiting")


@dataclass(frozen=True)
class SignedCopy:
    """A signer's counterpart, made and not yet recorded: what they adopted, and the PDF.

    ``signed_on`` is the calendar date of ``at`` (the moment of signing) in ``time_zone``.
    """

    counterpart_id: int
    method: str
    signature_png: bytes
    time_zone: str
    signed_on: dt.date
    at: dt.datetime
    pdf: bytes


@dataclass(frozen=True)
class _CopyToMake:
    counterpart_id: int
    role: str
    method: str
    signature_png: bytes
    time_zone: str
    signed_on: dt.date
    at: dt.datetime
    docx: bytes


def _copy_to_make(session: Session, token: str, consent: Any, signature: Any, time_zone: Any,
                  now: dt.datetime, identity: Sequence[str] | None = None) -> _CopyToMake:
    """Check the link and what the signer sent; render their counterpart's .docx."""
    counterpart, envelope = envelope_for_token(session, token)
    _ready_to_sign(session, counterpart, envelope, now)
    signer_identity.require_identity(session, counterpart, identity, now=now)
    if consent is not True:
        raise CounterpartError("consent: agree to sign electronically, or decline instead.")
    method, png = _signature_image(signature)
    zone_name, zone = signer_time_zone(time_zone)
    signed_on = now.astimezone(zone).date()
    version = session.get(LetterVersion, envelope.version_id)
    assert version is not None
    docx = render_version(session, version, {counterpart.role: signed_on})
    return _CopyToMake(counterpart.id, counterpart.role, method, png, zone_name, signed_on, now,
                       docx)


def _made(copy: _CopyToMake, converter: PdfConverter | None) -> SignedCopy:
    letter_pdf = render_pdf(copy.docx, converter)
    stamped = pdfs.stamp_signature(letter_pdf, role=copy.role,
                                   signature_png=copy.signature_png, signed_on=copy.signed_on)
    return SignedCopy(copy.counterpart_id, copy.method, copy.signature_png, copy.time_zone,
                      copy.signed_on, copy.at, stamped)


def prepare_signature(db: Database, token: str, *, consent: Any, signature: Any,
                      time_zone: Any = None, converter: PdfConverter | None = None,
                      now: dt.datetime | None = None,
                      identity: Sequence[str] | None = None) -> SignedCopy:
    """Make a signer's counterpart before recording it with :func:`record_signature`.

    The date of signing is the calendar date of ``now`` in the signer's ``time_zone`` (an IANA
    name from their browser; UTC when absent). The counterpart is the letter rendered again
    from its version's own template with that date in it (the executive's acknowledgement
    reads "this 3rd day of March, 2027"), converted to PDF by ``converter`` (the process-wide
    LibreOffice when None), with the signature stamped on the signer's line. The link and
    what the signer sent are checked in a short transaction; the conversion runs outside any,
    so that it holds up no one. Raises what :func:`sign_counterpart` raises; records nothing.
    ``identity`` is as for :func:`view_signing`.
    """
    now = now or utcnow()
    with db.transaction() as session:
        copy = _copy_to_make(session, token, consent, signature, time_zone, now, identity)
    return _made(copy, converter)


def record_signature(session: Session, token: str, copy: SignedCopy, actor: Actor, *,
                     identity: Sequence[str] | None = None) -> tuple[Counterpart, bool]:
    """Record a counterpart made by :func:`prepare_signature` as signed, at ``copy.at``.

    The link is checked again under the envelope's lock: of two requests with one link, one
    signs, the other gets LinkError. Returns the counterpart and whether every counterpart of
    the envelope is now signed (the assembly of the executed PDF is then enqueued, to run once
    this transaction commits).
    """
    now = copy.at
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    if counterpart.id != copy.counterpart_id:
        raise ValueError("the signed copy was made for another counterpart")
    _ready_to_sign(session, counterpart, envelope, now)
    verified = signer_identity.require_identity(session, counterpart, identity, now=now)
    if counterpart.first_viewed_at is None:
        counterpart.first_viewed_at = now
    _mark_signed(session, counterpart, now)
    counterpart.identity = signer_identity.identity_record(verified)
    document = _store_document(session, envelope, "signed_counterpart", copy.pdf,
                               _counterpart_filename(envelope, counterpart, "signed"))
    counterpart.method = copy.method
    counterpart.consent_at = now
    counterpart.time_zone = copy.time_zone
    counterpart.signed_on = copy.signed_on
    counterpart.ip = actor.ip
    counterpart.user_agent = (actor.user_agent or "")[:512] or None
    counterpart.signature_sha256 = store_blob(session, copy.signature_png)
    counterpart.signed_document_id = document.id
    common: dict[str, Any] = dict(actor=counterpart.name, ip=actor.ip, user_agent=actor.user_agent,
                  envelope_id=envelope.id, counterpart_id=counterpart.id, at=now)
    record_event(session, envelope.letter_id, "consented", **common,
                 detail={"disclosure": "electronic signature consent"})
    record_event(session, envelope.letter_id, "signed", **common,
                 detail={"method": copy.method, "document_sha256": document.blob_sha256,
                         "signature_sha256": counterpart.signature_sha256,
                         "time_zone": copy.time_zone, "signed_on": copy.signed_on.isoformat(),
                         "identity": counterpart.identity})
    return counterpart, _after_signature(session, envelope, now)


def sign_counterpart(session: Session, token: str, *, consent: Any, signature: Any,
                     actor: Actor, time_zone: Any = None,
                     converter: PdfConverter | None = None,
                     now: dt.datetime | None = None,
                     identity: Sequence[str] | None = None) -> tuple[Counterpart, bool]:
    """Sign a counterpart through its link: consent, adopt a signature, make and record it.

    :func:`prepare_signature` then :func:`record_signature`, in the caller's transaction: the
    conversion then runs inside it (on SQLite, holding the database's write lock), so a web
    request prepares first instead. Returns the counterpart and whether every counterpart of
    the envelope is now signed.
    """
    now = now or utcnow()
    copy = _made(_copy_to_make(session, token, consent, signature, time_zone, now, identity),
                 converter)
    session.expire_all()  # read again under the lock what another signer may have changed
    return record_signature(session, token, copy, actor, identity=identity)


def decline_counterpart(session: Session, token: str, *, reason: Any, actor: Actor,
                        now: dt.datetime | None = None,
                        identity: Sequence[str] | None = None) -> Counterpart:
    """Decline to sign, with a reason; the letter is then declined. ``identity`` is as for
    :func:`view_signing`."""
    now = now or utcnow()
    counterpart, envelope = envelope_for_token(session, token, lock=True)
    _check_link(session, counterpart, envelope, now)
    signer_identity.require_identity(session, counterpart, identity, now=now)
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


# --- paper ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperChoices:
    """What staff state when a counterpart signed on paper is counted.

    ``signed_on`` is the date the signer wrote (YYYY-MM-DD); ``accept_without_ink`` accepts a
    scan on whose signature line no signature was found; ``override_order`` with a ``reason``
    records a counterpart before the signers who come first in the signing order.
    """

    signed_on: Any
    accept_without_ink: bool = False
    override_order: bool = False
    reason: Any = None


@dataclass(frozen=True)
class PendingScan:
    """A scan uploaded on the letter page and awaiting staff confirmation; it does not count."""

    counterpart_id: int
    signer: str
    document_id: int
    filename: str
    sha256: str
    uploaded_at: dt.datetime
    uploaded_by: str
    signature_page: int
    """The 0-based page of the scan that matches the blank's signature page."""
    blank_page: int
    """The 0-based page of the letter that holds the signer's signature field."""
    ink_found: bool
    matched: bool
    signed_on: dt.date | None
    waiting_for: list[str]


@dataclass(frozen=True)
class CheckedScan:
    """A scan that passed the file checks, and what comparing it with the blank found.

    Made by :func:`check_paper_scan` outside any transaction (it takes a second or two), then
    handed to the function that records the upload.
    """

    role: str
    """The party whose signature field the scan was checked at."""
    sha256: str
    processing_pdf: bytes
    """The upload itself, or its readable copy (header first, decrypted)."""
    check: paper.ScanCheck
    inert_pdf: bytes | None = None
    """The scan's pages redrawn as pictures (:func:`workflow.paper.inert_copy`): what the
    executed letter is assembled from."""


def paper_scan_target(session: Session, letter_id: int, counterpart_id: int
                      ) -> tuple[bytes, str]:
    """Return the letter PDF a counterpart was sent with and its party's role: what a scan
    for it is checked against."""
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    return letter_pdf_for(session, counterpart.envelope), counterpart.role


def check_paper_scan(letter_pdf: bytes, role: str, data: bytes, filename: str, *,
                     max_bytes: int = MAX_UPLOAD_BYTES) -> CheckedScan:
    """Check a scan of a counterpart: a readable PDF with the page count of the letter or one
    page, then its signature page against the blank's for the ink of the party ``role`` at
    their signature field.

    Untrusted bytes are read and drawn in limited child processes. Raises DocumentError naming
    the file; what the ink check found is in the answer, for the caller to act on.
    """
    name = pdfs.display_name(filename)
    letter_pages = pdfs.page_count(letter_pdf)
    upload = pdfs.read_upload(data, filename=filename, allowed_page_counts={letter_pages, 1},
                              max_bytes=max_bytes)
    field = pdfs.signing_field(letter_pdf, role)
    width_pt = field.page_box[2] - field.page_box[0]
    pages = paper.rasterise_upload(upload.pdf, width_px=round(width_pt * paper.PIXELS_PER_POINT),
                                   name=name)
    return CheckedScan(role, hashlib.sha256(data).hexdigest(), upload.pdf,
                       paper.check_scan(letter_pdf, pages, role),
                       paper.inert_copy(upload.pdf, name=name))


def _examine_scan(session: Session, envelope: Envelope, counterpart: Counterpart, data: bytes,
                  filename: str, max_bytes: int, checked: CheckedScan | None) -> CheckedScan:
    """Refuse a scan that is the system's own document or its unsigned pages, and return its
    checks (made now unless ``checked`` already holds them for these bytes and this signer).
    Raises DocumentError or ScanCheckError naming the file."""
    name = pdfs.display_name(filename)
    digest = hashlib.sha256(data).hexdigest()
    copy = paper.system_copy_of(session, digest)
    if copy is not None:
        what = {"letter_pdf": "the letter's PDF (the blank counterpart)",
                "signed_counterpart": "a counterpart this system stamped when it was signed "
                                      "online",
                "executed_pdf": "an executed PDF this system sealed"}[copy.kind]
        raise ScanCheckError(f"{name} is {what}, not a scan of a counterpart signed on paper. "
                             f"Upload the scan of the pages {counterpart.name} signed.",
                             "unsigned_copy")
    if checked is None or checked.sha256 != digest or checked.role != counterpart.role:
        checked = check_paper_scan(letter_pdf_for(session, envelope), counterpart.role, data,
                                   filename, max_bytes=max_bytes)
    if checked.check.unchanged:
        raise ScanCheckError(
            f"{name} is the unsigned counterpart: its signature page has nothing written on it "
            f"that the blank counterpart does not have. Upload the scan of the pages "
            f"{counterpart.name} signed.", "unsigned_copy")
    return checked


def _ink_refusal(name: str, counterpart: Counterpart, check: paper.ScanCheck) -> ScanCheckError:
    if check.matched:
        return ScanCheckError(
            f"No signature was found on {counterpart.name}'s signature line in {name}: nothing "
            f"is written above the line that the blank counterpart does not have. If they did "
            f"sign, staff can accept it anyway.", "ink_not_found")
    return ScanCheckError(
        f"No signature was found on {counterpart.name}'s signature line in {name}: no page of "
        f"it lines up with the blank counterpart's signature page, so the line could not be "
        f"checked. If they did sign, staff can accept it anyway.", "ink_not_found")


def _order_override(counterpart: Counterpart, envelope: Envelope, choices: PaperChoices
                    ) -> str | None:
    """Return the reason for recording out of order, or None; refuse if the order blocks."""
    waiting = _waiting_for(counterpart, envelope)
    if not waiting:
        return None
    names = ", ".join(waiting)
    if not choices.override_order:
        verb = "has" if len(waiting) == 1 else "have"
        raise SigningOrderError(
            f"The letter is signed in order: {names} must sign before {counterpart.name}, and "
            f"not all of them {verb} signed. To record {counterpart.name}'s counterpart now, "
            f"override the order and give a reason.")
    return _clean_text(choices.reason, "reason: the reason for overriding the signing order",
                       1000)


def _check_paper_open(session: Session, counterpart: Counterpart, envelope: Envelope,
                      now: dt.datetime) -> None:
    if counterpart.status == CounterpartStatus.SIGNED.value:
        raise StateError(f"Counterpart {counterpart.id} ({counterpart.name}) is already "
                         "signed.")
    _check_link(session, counterpart, envelope, now)


def _count_paper(session: Session, envelope: Envelope, counterpart: Counterpart, *,
                 original: Document, examined: CheckedScan, filename: str,
                 choices: PaperChoices,
                 signed_on: dt.date, uploaded_at: dt.datetime, actor: Actor,
                 now: dt.datetime) -> bool:
    """Count a checked scan as the signer's signature; return whether all are now signed."""
    check = examined.check
    name = pdfs.display_name(filename)
    if not check.ink_found and not choices.accept_without_ink:
        raise _ink_refusal(name, counterpart, check)
    reason = _order_override(counterpart, envelope, choices)
    previous_status = counterpart.status
    _mark_signed(session, counterpart, now)
    if examined.processing_pdf == document_bytes(session, original):
        signed = original
    else:  # the bytes before the header dropped, or the owner password's encryption removed
        signed = _store_document(session, envelope, "scanned_counterpart",
                                 examined.processing_pdf,
                                 _counterpart_filename(envelope, counterpart, "scan-readable"))
    # The executed letter is assembled from an inert copy: the pages redrawn as pictures.
    inert = _store_document(session, envelope, "inert_scan",
                            examined.inert_pdf if examined.inert_pdf is not None
                            else paper.inert_copy(examined.processing_pdf, name=name),
                            _counterpart_filename(envelope, counterpart, "scan-inert"))
    counterpart.method = "paper"
    counterpart.signed_document_id = signed.id
    counterpart.pending_document_id = None
    counterpart.signed_on = signed_on
    counterpart.uploaded_at = uploaded_at
    counterpart.signature_sha256 = store_blob(session, check.signature_png)
    ink = "found" if check.ink_found else "accepted_without_ink"
    counterpart.paper = {
        "filename": filename[:200], "sha256": original.blob_sha256,
        "signature_page": check.signature_page, "ink": ink,
        "ink_accepted_by": None if check.ink_found else actor.name,
        "order_override_reason": reason, "order_override_by": actor.name if reason else None,
        "crop_box": list(check.crop_box), "recorded_by": actor.name,
        "original_document_id": original.id, "previous_status": previous_status,
        "inert_document_id": inert.id,
    }
    record_event(session, envelope.letter_id, "signed", actor=counterpart.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"method": "paper", "document_sha256": original.blob_sha256,
                         "recorded_by": actor.name, "file": filename[:200],
                         "signed_on": signed_on.isoformat(), "ink": ink,
                         "ink_accepted_by": counterpart.paper["ink_accepted_by"],
                         "order_override_reason": reason,
                         "order_override_by": counterpart.paper["order_override_by"],
                         "signature_page": check.signature_page,
                         "signature_sha256": counterpart.signature_sha256,
                         "document_id": original.id, "readable_document_id": signed.id,
                         "inert_document_id": inert.id, "inert_sha256": inert.blob_sha256})
    return _after_signature(session, envelope, now)


def _signed_on(session: Session, envelope: Envelope, value: Any, now: dt.datetime) -> dt.date:
    letter_pdf = session.get(Document, envelope.letter_pdf_id)
    ready = letter_pdf.created_at if letter_pdf is not None else envelope.created_at
    return paper.parse_signed_on(value, not_before=min(ready, envelope.created_at), now=now)


def _same_paper_upload(counterpart: Counterpart, digest: str) -> bool:
    return (counterpart.status == CounterpartStatus.SIGNED.value and counterpart.method == "paper"
            and (counterpart.paper or {}).get("sha256") == digest)


def upload_paper_counterpart(session: Session, letter_id: int, counterpart_id: int,
                             data: bytes, filename: str, actor: Actor, *,
                             choices: PaperChoices, max_bytes: int = MAX_UPLOAD_BYTES,
                             checked: CheckedScan | None = None, now: dt.datetime | None = None
                             ) -> tuple[Counterpart, bool, bool]:
    """Record a counterpart signed on paper from its scanned PDF, in one step.

    The scan counts when its checks pass (:mod:`workflow.paper`): it is not the system's own
    document or its unsigned pages, the signer's line has ink (or ``choices`` accepts it
    without), and the signing order allows it (or ``choices`` overrides it with a reason).
    ``checked`` is :func:`check_paper_scan`'s answer for these bytes, made before the
    transaction so that it is not held open meanwhile; without it the checks run here.
    Returns the counterpart, whether this upload was new (the same file again is one upload),
    and whether every counterpart is now signed.
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    if _same_paper_upload(counterpart, hashlib.sha256(data).hexdigest()):
        return counterpart, False, False
    _check_paper_open(session, counterpart, envelope, now)
    signed_on = _signed_on(session, envelope, choices.signed_on, now)
    _order_override(counterpart, envelope, choices)
    examined = _examine_scan(session, envelope, counterpart, data, filename, max_bytes,
                             checked)
    replaced = counterpart.pending_document_id
    original = _store_document(session, envelope, "scanned_counterpart", data,
                               _counterpart_filename(envelope, counterpart, "scan"))
    record_event(session, letter_id, "uploaded", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"file": filename[:200], "sha256": original.blob_sha256,
                         "size": len(data), "document_id": original.id,
                         "replaces_pending_document_id": replaced})
    all_signed = _count_paper(session, envelope, counterpart, original=original,
                              examined=examined, filename=filename, choices=choices,
                              signed_on=signed_on, uploaded_at=now, actor=actor, now=now)
    return counterpart, True, all_signed


def stage_paper_counterpart(session: Session, letter_id: int, counterpart_id: int, data: bytes,
                            filename: str, actor: Actor, *, signed_on: Any,
                            max_bytes: int = MAX_UPLOAD_BYTES,
                            checked: CheckedScan | None = None,
                            now: dt.datetime | None = None) -> PendingScan:
    """Store a scan uploaded on the letter page for staff to review; it does not count yet.

    The file checks run now (a copy of the system's documents or the unsigned pages is refused
    at once; ``checked`` as for :func:`upload_paper_counterpart`); the ink check's finding is
    kept with the upload for the preview. A scan already waiting for the counterpart is
    replaced (both stay stored).
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    _check_paper_open(session, counterpart, envelope, now)
    day = _signed_on(session, envelope, signed_on, now)
    examined = _examine_scan(session, envelope, counterpart, data, filename, max_bytes,
                             checked)
    replaced = counterpart.pending_document_id
    document = _store_document(session, envelope, "scanned_counterpart", data,
                               _counterpart_filename(envelope, counterpart, "scan"))
    counterpart.pending_document_id = document.id
    check = examined.check
    record_event(session, letter_id, "uploaded", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"file": filename[:200], "sha256": document.blob_sha256,
                         "size": len(data), "document_id": document.id, "pending": True,
                         "signature_page": check.signature_page, "matched": check.matched,
                         "ink": "found" if check.ink_found else "not_found",
                         "signed_on": day.isoformat(),
                         "replaces_pending_document_id": replaced})
    pending = pending_paper_upload(session, letter_id, counterpart_id)
    assert pending is not None
    return pending


def pending_paper_upload(session: Session, letter_id: int, counterpart_id: int
                         ) -> PendingScan | None:
    """Describe the scan awaiting staff confirmation for a counterpart, if there is one."""
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    if counterpart.pending_document_id is None:
        return None
    document = session.get(Document, counterpart.pending_document_id)
    assert document is not None and document.blob_sha256 is not None
    staged = next((e for e in reversed(events_of(session, letter_id))
                   if e.type == "uploaded" and e.counterpart_id == counterpart.id
                   and (e.detail or {}).get("document_id") == document.id), None)
    detail = dict(staged.detail or {}) if staged is not None else {}
    letter_pdf = letter_pdf_for(session, counterpart.envelope)
    signed_on = detail.get("signed_on")
    return PendingScan(
        counterpart_id=counterpart.id, signer=counterpart.name, document_id=document.id,
        filename=str(detail.get("file") or document.filename), sha256=document.blob_sha256,
        uploaded_at=staged.at if staged is not None else document.created_at,
        uploaded_by=staged.actor if staged is not None else "",
        signature_page=int(detail.get("signature_page") or 0),
        blank_page=pdfs.signing_field(letter_pdf, counterpart.role).page_index,
        ink_found=detail.get("ink") == "found", matched=bool(detail.get("matched", True)),
        signed_on=dt.date.fromisoformat(signed_on) if isinstance(signed_on, str) else None,
        waiting_for=_waiting_for(counterpart, counterpart.envelope))


def confirm_paper_counterpart(session: Session, letter_id: int, counterpart_id: int,
                              actor: Actor, *, document_id: int, choices: PaperChoices,
                              checked: CheckedScan | None = None,
                              now: dt.datetime | None = None) -> tuple[Counterpart, bool]:
    """Count the scan awaiting confirmation as the signer's signature on paper.

    The checks run again on the stored scan, as :func:`upload_paper_counterpart` runs them
    (``checked`` likewise, from :func:`pending_scan_bytes` and :func:`check_paper_scan`).
    ``document_id`` must be the scan the staff member reviewed (a newer upload replaces it).
    Returns the counterpart and whether every counterpart is now signed.
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    _check_paper_open(session, counterpart, envelope, now)
    if counterpart.pending_document_id is None:
        raise StateError(f"No scan of {counterpart.name}'s counterpart is waiting to be "
                         "counted; upload it again.")
    if counterpart.pending_document_id != document_id:
        raise StateError(f"Another scan of {counterpart.name}'s counterpart was uploaded since "
                         "this one; review that one instead.")
    pending = pending_paper_upload(session, letter_id, counterpart_id)
    assert pending is not None
    original = session.get(Document, document_id)
    assert original is not None
    signed_on = _signed_on(session, envelope, choices.signed_on, now)
    examined = _examine_scan(session, envelope, counterpart, document_bytes(session, original),
                             pending.filename, MAX_UPLOAD_BYTES, checked)
    all_signed = _count_paper(session, envelope, counterpart, original=original,
                              examined=examined, filename=pending.filename, choices=choices,
                              signed_on=signed_on, uploaded_at=pending.uploaded_at,
                              actor=actor, now=now)
    return counterpart, all_signed


def pending_scan_bytes(session: Session, letter_id: int, counterpart_id: int
                       ) -> tuple[bytes, str] | None:
    """Return the bytes and file name of the scan awaiting review, if any, to check it."""
    pending = pending_paper_upload(session, letter_id, counterpart_id)
    if pending is None:
        return None
    document = session.get(Document, pending.document_id)
    assert document is not None
    return document_bytes(session, document), pending.filename


def discard_paper_upload(session: Session, letter_id: int, counterpart_id: int, actor: Actor,
                         *, document_id: int | None = None, now: dt.datetime | None = None
                         ) -> Counterpart:
    """Set aside the scan awaiting confirmation; it stays stored and named in the record."""
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    pending = counterpart.pending_document_id
    if pending is None or (document_id is not None and pending != document_id):
        raise StateError(f"That scan of {counterpart.name}'s counterpart is no longer waiting "
                         "to be counted.")
    counterpart.pending_document_id = None
    document = session.get(Document, pending)
    record_event(session, letter_id, "upload_discarded", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"signer": counterpart.name, "document_id": pending,
                         "sha256": document.blob_sha256 if document else None})
    return counterpart


def undo_paper_counterpart(session: Session, letter_id: int, counterpart_id: int, actor: Actor,
                           *, now: dt.datetime | None = None) -> Counterpart:
    """Undo the upload that counted a counterpart as signed on paper.

    The counterpart goes back to the open status it had, the letter back to out for signature
    (or partially executed if others have signed); the scan stays stored and is named in the
    audit record. Refused once the letter is executed or its executed PDF is being assembled.
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    if counterpart.status != CounterpartStatus.SIGNED.value or counterpart.method != "paper":
        raise StateError(f"{counterpart.name}'s counterpart was not signed on paper; only a "
                         "paper upload can be undone.")
    if envelope.status != EnvelopeStatus.OUT.value or envelope.executed_document_id:
        raise StateError(f"This envelope is {envelope.status}; {counterpart.name}'s paper "
                         "upload can no longer be undone.")
    if envelope.assembly_state in ("running", "done"):
        raise StateError("Every counterpart is signed and the executed PDF is being "
                         f"assembled; {counterpart.name}'s paper upload can no longer be "
                         "undone.")
    record = dict(counterpart.paper or {})
    previous = record.get("previous_status")
    if previous not in _OPEN:
        previous = (CounterpartStatus.CREATED.value if _waiting_for(counterpart, envelope)
                    else CounterpartStatus.READY.value)
    target = transition(counterpart.status, CounterpartStatus(previous))
    changed = rowcount(session.execute(
        update(Counterpart).where(Counterpart.id == counterpart.id,
                                  Counterpart.status == CounterpartStatus.SIGNED.value)
        .values(status=target.value, signed_at=None, method=None, signed_document_id=None,
                signature_sha256=None, signed_on=None, uploaded_at=None, paper=None)))
    if changed != 1:
        raise StateError(f"{counterpart.name}'s counterpart changed meanwhile; reload and try "
                         "again.")
    session.refresh(counterpart)
    others_signed = any(c.status == CounterpartStatus.SIGNED.value
                        for c in envelope.counterparts if c.id != counterpart.id)
    letter = get_letter(session, letter_id, for_update=True)
    letter.status = transition(letter.status, LetterStatus.PARTIALLY_EXECUTED if others_signed
                               else LetterStatus.OUT_FOR_SIGNATURE).value
    letter.updated_at = now
    record_event(session, letter_id, "upload_undone", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now,
                 detail={"signer": counterpart.name, "status": target.value,
                         "file": record.get("filename"), "sha256": record.get("sha256"),
                         "document_id": record.get("original_document_id"),
                         "paper": record})
    return counterpart


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


def _closed_envelope_message(envelope: Envelope) -> str:
    if envelope.status == EnvelopeStatus.VOIDED.value:
        return ("This envelope was voided; its links cannot be renewed. Send the letter again "
                "for new links.")
    if envelope.status == EnvelopeStatus.DECLINED.value:
        return ("A signer declined this letter, so it can no longer be signed and its links "
                "cannot be renewed. Void the envelope, then send the letter again.")
    if envelope.status == EnvelopeStatus.COMPLETED.value:
        return "This letter is fully executed; nothing is left to sign, so no link is renewed."
    return f"This envelope is {envelope.status}; its links cannot be renewed."


def reissue_link(session: Session, letter_id: int, counterpart_id: int, actor: Actor, *,
                 link_days: int = DEFAULT_LINK_DAYS, email_invitation: bool = False,
                 now: dt.datetime | None = None) -> IssuedLink:
    """Give a counterpart still to be signed, or whose link expired, a new signing link.

    Links are stored only as hashes, so a lost link cannot be shown again: this replaces it,
    and the old one stops working at once. The new link works for ``link_days`` days (1 to
    365): the envelope's expiry, shared by its signers, moves later if needed, never earlier;
    other signers whose links ran out stay expired. The counterpart is then "ready" (or still
    "created" while it waits its turn, "viewed" if its signer already read the letter) until
    :func:`record_delivery` records its invitation accepted by the mail server.
    ``email_invitation`` says whether the caller will try to email it. Raises StateError for a
    voided, declined or executed envelope and a counterpart already signed or declined.
    """
    now = now or utcnow()
    if isinstance(link_days, bool) or not isinstance(link_days, int) \
            or not 1 <= link_days <= 365:
        raise CounterpartError("link_days: links last between 1 and 365 days.")
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    if envelope.status != EnvelopeStatus.OUT.value:
        raise StateError(_closed_envelope_message(envelope))
    before = counterpart.status
    if before not in _OPEN and before != CounterpartStatus.EXPIRED.value:
        raise StateError(f"{counterpart.name}'s counterpart is {before}; only a counterpart "
                         "still to be signed, or whose link expired, gets a new link.")
    # Before the shared expiry moves, the other links that ran out are marked expired, so
    # that renewing this one does not bring theirs back.
    _expire_envelope(session, envelope, now)
    before = counterpart.status
    if before in (CounterpartStatus.EXPIRED.value, CounterpartStatus.SENT.value):
        # The new link has not been emailed (yet): it is ready to be handed over.
        counterpart.status = transition(before, CounterpartStatus.READY).value
    detail: dict[str, Any] = {
        "signer": counterpart.name, "role": counterpart.role, "email": counterpart.email,
        "reason": "new link; the earlier link no longer works", "link_days": link_days,
        "status_before": before, "status": counterpart.status,
        "delivery": _delivery(counterpart.email, email_invitation)}
    expires_at = now + dt.timedelta(days=link_days)
    if expires_at > envelope.expires_at:
        detail["expires_at_before"] = envelope.expires_at.isoformat()
        envelope.expires_at = expires_at
    detail["expires_at"] = envelope.expires_at.isoformat()
    token = secrets.token_urlsafe(32)
    counterpart.token_hash = token_hash(token)
    record_event(session, letter_id, "new_link", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope.id,
                 counterpart_id=counterpart.id, at=now, detail=detail)
    return IssuedLink(counterpart.id, token)


def record_delivery(session: Session, counterpart_id: int, *, to: str, accepted: bool,
                    answer: str, link_hash: str, at: dt.datetime | None = None) -> None:
    """Record what the mail server did with a signer's invitation, after it was handed over.

    Accepted: an "emailed" event (to, at, the server's answer), ``emailed_at``, and a "ready"
    counterpart becomes "sent". Refused or unreachable: an "email_failed" event with the
    error, and the status stays as it was. ``link_hash`` is the hash of the link the email
    carried: an email of a link replaced meanwhile is recorded but changes no status.
    """
    at = at or utcnow()
    counterpart = session.get(Counterpart, counterpart_id)
    if counterpart is None:
        raise NotFoundError(f"There is no counterpart {counterpart_id}.")
    envelope = _lock_envelope(session, counterpart.envelope_id)
    session.refresh(counterpart)
    current = counterpart.token_hash == link_hash
    detail: dict[str, Any] = {"signer": counterpart.name, "to": to, "at": at.isoformat()}
    if not current:
        detail["link"] = "replaced since; the emailed link no longer works"
    if not accepted:
        record_event(session, envelope.letter_id, "email_failed", actor="system",
                     envelope_id=envelope.id, counterpart_id=counterpart.id, at=at,
                     detail={**detail, "error": answer[:1000]})
        return
    if current:
        counterpart.emailed_at = at
        if counterpart.status == CounterpartStatus.READY.value and \
                envelope.status == EnvelopeStatus.OUT.value:
            counterpart.status = transition(counterpart.status, CounterpartStatus.SENT).value
    record_event(session, envelope.letter_id, "emailed", actor="system",
                 envelope_id=envelope.id, counterpart_id=counterpart.id, at=at,
                 detail={**detail, "answer": answer[:1000]})


def _expire_envelope(session: Session, envelope: Envelope, now: dt.datetime) -> int:
    """Mark an envelope's open counterparts expired if its links are past their expiry."""
    if envelope.status != EnvelopeStatus.OUT.value or now < envelope.expires_at:
        return 0
    count = 0
    for counterpart in envelope.counterparts:
        if counterpart.status in _OPEN:
            counterpart.status = CounterpartStatus.EXPIRED.value
            record_event(session, envelope.letter_id, "expired", actor="system",
                         envelope_id=envelope.id, counterpart_id=counterpart.id, at=now,
                         detail={"signer": counterpart.name,
                                 "expires_at": envelope.expires_at.isoformat()})
            count += 1
    return count


def expire_links(session: Session, *, now: dt.datetime | None = None) -> int:
    """Mark the open counterparts of envelopes past their expiry as expired."""
    now = now or utcnow()
    envelopes = list(session.scalars(select(Envelope).where(
        Envelope.status == EnvelopeStatus.OUT.value, Envelope.expires_at <= now)))
    return sum(_expire_envelope(session, envelope, now) for envelope in envelopes)


# --- assembly ---------------------------------------------------------------------------------

def _assemblable(envelope: Envelope) -> bool:
    """Whether an envelope's executed PDF is still to be made: out, every counterpart signed,
    none attached yet."""
    return (envelope.executed_document_id is None
            and envelope.status == EnvelopeStatus.OUT.value
            and all(c.status == CounterpartStatus.SIGNED.value for c in envelope.counterparts))


def _queue_assembly(session: Session, envelope: Envelope, now: dt.datetime) -> None:
    """Show the envelope as being assembled and enqueue its assembly, to run once this
    transaction commits (in immediate mode, then and there)."""
    envelope.assembly_state = "running"
    envelope.assembly_error = None
    # When the job was last enqueued or started: only resume_assemblies reads it.
    envelope.assembly_claimed_at = now
    jobs.enqueue_after_commit(session, assemble_envelope_job, envelope.id)


def assembly_state(session: Session, envelope_id: str) -> str | None:
    """Say where an envelope's executed PDF stands: None (not every counterpart is signed),
    ``running`` (queued or being assembled), ``failed`` or ``done``."""
    envelope = session.get(Envelope, envelope_id)
    if envelope is None:
        raise NotFoundError(f"There is no envelope {envelope_id}.")
    if envelope.executed_document_id is not None:
        return "done"
    return envelope.assembly_state


def record_assembly_failure(db: Database, envelope_id: str, error: BaseException) -> None:
    """Show an envelope's assembly as failed, with the reason, unless its executed PDF exists.

    The letter page then offers "Retry" (:func:`retry_assembly`).
    """
    reason = str(error) or type(error).__name__
    with db.transaction() as session:
        session.execute(update(Envelope).where(Envelope.id == envelope_id,
                                               Envelope.executed_document_id.is_(None))
                        .values(assembly_state="failed", assembly_error=reason[:2000]))


def retry_assembly(session: Session, envelope_id: str, *, now: dt.datetime | None = None
                   ) -> bool:
    """Assemble a failed executed PDF again: its job is enqueued once this transaction commits.

    Returns False, changing nothing, unless the assembly failed and the envelope still waits
    for its executed PDF (one being assembled, or made, is left to its job).
    """
    envelope = _lock_envelope(session, envelope_id)
    if envelope.assembly_state != "failed" or not _assemblable(envelope):
        return False
    _queue_assembly(session, envelope, now or utcnow())
    return True


def _certificate_info(session: Session, envelope: Envelope, letter: Letter,
                      letter_pdf: bytes, completed_at: dt.datetime) -> pdfs.CertificateInfo:
    signers = []
    for c in envelope.counterparts:
        paper = c.paper or {}
        signers.append(pdfs.CertificateSigner(
            name=c.name, email=c.email or "", role=party_label(session, c),
            method=cast(Literal["typed", "drawn", "paper"], c.method),
            consent_at=c.consent_at, first_viewed_at=c.first_viewed_at, signed_at=c.signed_at,
            ip=c.ip, user_agent=c.user_agent,
            signature_png=blob_bytes(session, c.signature_sha256) if c.signature_sha256
            else None,
            time_zone=None if c.method == "paper" else c.time_zone or "UTC",
            signed_on=_date_of_signing(c), emailed_at=c.emailed_at,
            uploaded_at=c.uploaded_at, ink=paper.get("ink"),
            ink_accepted_by=paper.get("ink_accepted_by"),
            order_override_reason=paper.get("order_override_reason"),
            order_override_by=paper.get("order_override_by"),
            recorded_by=paper.get("recorded_by"),
            identified_by=None if c.method == "paper" else signer_identity.identity_words(
                c.identity, pdfs.format_utc)))
    events = [pdfs.CertificateEvent(at=e.at, type=e.type, actor=e.actor,
                                    detail=_event_detail(e.detail))
              for e in events_of(session, letter.id) if e.envelope_id in (None, envelope.id)]
    title = letter.title
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


@dataclass
class _SignedCounterpart:
    """What the executed PDF needs of one signed counterpart, read in one transaction."""

    name: str
    method: str
    signed_on: dt.date | None
    signature_png: bytes | None
    paper: dict[str, Any]
    signed_pdf: bytes
    """The signed counterpart; for paper, the scan's inert copy (pictures only)."""
    inert: bool = True
    """False for a paper counterpart recorded without an inert copy: one is made first."""
    role: str = ""
    """The party's role: where its signature goes (its template's signature field)."""


def _paper_signature_page(counterpart: _SignedCounterpart, letter_pdf: bytes) -> int:
    """The page of a paper scan that holds the signer's signature page (0-based)."""
    page = counterpart.paper.get("signature_page")
    pages = pdfs.page_count(counterpart.signed_pdf)
    if isinstance(page, int) and not isinstance(page, bool):
        return page
    if pages == 1:
        return 0
    # A scan of the whole letter: its signature page is where the letter has it.
    return pdfs.signing_field(letter_pdf, counterpart.role).page_index


def _conformed_signatures(signed: list[_SignedCounterpart]
                          ) -> list[pdfs.OnlineSignature | pdfs.PaperSignature]:
    """Every signature as the conformed copy shows it: stamped, or the crop of the ink."""
    marks: list[pdfs.OnlineSignature | pdfs.PaperSignature] = []
    for c in signed:
        if c.method == "paper":
            crop = c.paper.get("crop_box")
            box = cast(pdfs.Box, tuple(crop)) if isinstance(crop, list | tuple) else None
            marks.append(pdfs.PaperSignature(c.role, c.signature_png, box, c.signed_on))
        else:
            assert c.signature_png is not None and c.signed_on is not None
            marks.append(pdfs.OnlineSignature(c.role, c.signature_png, c.signed_on))
    return marks


class _AlreadyAssembled(Exception):
    """Raised inside the transaction storing an executed PDF to roll it back: the envelope got
    one meanwhile, or is no longer out."""


def assemble_envelope(db: Database, envelope_id: str, sealer: Sealer,
                      converter: PdfConverter | None = None, *,
                      record_failure: bool = True) -> Document | None:
    """Build, seal and store the executed PDF once every counterpart is signed.

    The executed PDF is one instrument: the conformed copy (the letter rendered again from
    its version's template with every signer's date of signing, each online signature
    stamped on its line and each paper signature drawn from its scan), then each signer's
    signature page as they signed it, then the certificate of completion, with a bookmark for
    each; the seal covers all of it. ``converter`` makes the PDF of the conformed copy (the
    process-wide LibreOffice when None).

    Safe to run twice, or twice at once: the executed document is attached only if the
    envelope has none, by a conditional update in the transaction that stores it. Returns it
    if this call stored it, None if there was nothing to do (already made, the envelope no
    longer out, a counterpart unsigned). A failure raises CounterpartError, leaving the letter
    partially executed with nothing half-written; with ``record_failure`` the envelope then
    shows the assembly failed, with the reason (:func:`record_assembly_failure`). Raises
    NotFoundError for an unknown envelope.
    """
    with db.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        if envelope is None:
            raise NotFoundError(f"There is no envelope {envelope_id}.")
        if not _assemblable(envelope):
            return None
        # Still "running" as shown; the time is when this attempt began (resume_assemblies).
        envelope.assembly_state = "running"
        envelope.assembly_claimed_at = utcnow()
        letter = get_letter(session, envelope.letter_id)
        version = session.get(LetterVersion, envelope.version_id)
        assert version is not None
        letter_pdf = letter_pdf_for(session, envelope)
        signed = []
        dates: dict[str, dt.date] = {}
        for c in envelope.counterparts:
            document = session.get(Document, c.signed_document_id)
            inert_id = (c.paper or {}).get("inert_document_id") \
                if c.method == "paper" else None
            if isinstance(inert_id, int) and not isinstance(inert_id, bool):
                document = session.get(Document, inert_id)
            assert document is not None
            signed.append(_SignedCounterpart(
                c.name, c.method or "", _date_of_signing(c),
                blob_bytes(session, c.signature_sha256) if c.signature_sha256 else None,
                dict(c.paper or {}), document_bytes(session, document),
                inert=c.method != "paper" or document.kind == "inert_scan", role=c.role))
            if signed[-1].signed_on is not None:
                dates[c.role] = signed[-1].signed_on
        conformed_docx = render_version(session, version, dates)
        completed_at = utcnow()
        info = _certificate_info(session, envelope, letter, letter_pdf, completed_at)
        filename = f"{letter.file_stem}-executed.pdf"
    try:
        conformed = pdfs.stamp_signatures(render_pdf(conformed_docx, converter),
                                          _conformed_signatures(signed))
        signed_pages = []
        for part in signed:
            if not part.inert:  # recorded before scans were kept inert: redraw it now
                part.signed_pdf = paper.inert_copy(part.signed_pdf,
                                                   name=f"The scan of {part.name}")
            page = (_paper_signature_page(part, letter_pdf) if part.method == "paper"
                    else pdfs.signing_field(part.signed_pdf, part.role).page_index)
            signed_pages.append((part.name, pdfs.extract_pages(part.signed_pdf, [page])))
        executed = pdfs.assemble_executed_pdf(
            conformed, signed_pages, pdfs.certificate_pdf(info),
            metadata={"/Title": info.title, "/CounterpartEnvelope": envelope_id,
                      "/CounterpartLetterSHA256": info.letter_sha256})
        sealed = seal_pdf(executed, sealer)
    except Exception as exc:
        failure = exc if isinstance(exc, CounterpartError) else CounterpartError(
            f"Assembling the executed PDF failed: {exc}")
        if record_failure:
            record_assembly_failure(db, envelope_id, failure)
        if failure is exc:
            raise
        raise failure from exc
    try:
        with db.transaction() as session:
            envelope = _lock_envelope(session, envelope_id)
            if not _assemblable(envelope):
                raise _AlreadyAssembled
            transition(envelope.status, EnvelopeStatus.COMPLETED)  # raises if not allowed
            document = _store_document(session, envelope, "executed_pdf", sealed, filename)
            attached = rowcount(session.execute(
                update(Envelope).where(Envelope.id == envelope_id,
                                       Envelope.executed_document_id.is_(None),
                                       Envelope.status == EnvelopeStatus.OUT.value)
                .values(executed_document_id=document.id, assembly_state="done",
                        assembly_error=None, status=EnvelopeStatus.COMPLETED.value,
                        completed_at=completed_at)))
            if attached != 1:
                raise _AlreadyAssembled
            letter = get_letter(session, envelope.letter_id, for_update=True)
            letter.status = transition(letter.status, LetterStatus.FULLY_EXECUTED).value
            letter.updated_at = completed_at
            record_event(session, letter.id, "executed", actor="system",
                         envelope_id=envelope_id, at=completed_at,
                         detail={"sha256": document.blob_sha256,
                                 "document": document.filename})
            return document
    except _AlreadyAssembled:
        return None  # the transaction rolled back: nothing of this run is kept


@jobs.job(retries=ASSEMBLY_RETRIES, retry_delay=ASSEMBLY_RETRY_DELAY_SECONDS,
          retry_backoff=ASSEMBLY_RETRY_BACKOFF, context=True)
def assemble_envelope_job(envelope_id: str, task: Task | None = None) -> None:
    """Assemble and seal an envelope's executed PDF (see :func:`assemble_envelope`), with the
    worker's LibreOffice and seal.

    A failure is retried with backoff (``ASSEMBLY_RETRIES`` times); the last attempt records
    it on the envelope instead, for staff to retry from the letter page. Run by
    ``.call_local``, it is a last attempt.
    """
    rt = jobs.runtime()
    last_attempt = task is None or not task.retries
    try:
        sealer = rt.sealer  # a seal that cannot be loaded fails the attempt like any other
        assemble_envelope(rt.db, envelope_id, sealer, rt.converter,
                          record_failure=last_attempt)
    except NotFoundError:
        log.warning("envelope %s is gone; there is nothing to assemble", envelope_id)
    except Exception as exc:
        if not last_attempt:
            raise
        record_assembly_failure(rt.db, envelope_id, exc)
        log.error("assembling envelope %s failed for good: %s", envelope_id, exc)


@jobs.periodic(minutes=5)
def resume_assemblies() -> int:
    """Enqueue again the assemblies still under way ``RESUME_ASSEMBLY_AFTER`` after their job
    was last enqueued or started; return how many.

    A safety net, as :func:`workflow.letters.resume_pending_pdfs` is for letter PDFs: a
    worker that dies mid-job has its job put back by the queue's in-flight ledger; this
    catches an enqueue lost between the commit of the last signature and the queue.
    """
    now = utcnow()
    unsigned = (select(Counterpart.id).where(Counterpart.envelope_id == Envelope.id,
                                             Counterpart.status
                                             != CounterpartStatus.SIGNED.value).exists())
    with jobs.runtime().db.transaction() as session:
        stalled = list(session.scalars(select(Envelope).where(
            Envelope.status == EnvelopeStatus.OUT.value,
            Envelope.executed_document_id.is_(None), Envelope.assembly_state == "running",
            func.coalesce(Envelope.assembly_claimed_at, Envelope.created_at)
            < now - RESUME_ASSEMBLY_AFTER, ~unsigned).order_by(Envelope.created_at)))
        for envelope in stalled:
            _queue_assembly(session, envelope, now)
    if stalled:
        log.warning("envelopes %s were still being assembled; their jobs are queued again",
                    [e.id for e in stalled])
    return len(stalled)


# --- proof ------------------------------------------------------------------------------------

def audit_record(session: Session, letter_id: int) -> dict[str, Any]:
    """Describe a letter's execution and audit chain as JSON values."""
    letter = get_letter(session, letter_id)
    envelope = current_envelope(session, letter_id)
    chain = verify_chain(session, letter_id)
    record: dict[str, Any] = {
        "letter": {"id": letter.id, "template": letter.template, "status": letter.status,
                   "title": letter.title, "listed": list(letter.list_values or []),
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

    status = c.status
    if (status in _OPEN and c.envelope.status == EnvelopeStatus.OUT.value
            and utcnow() >= c.envelope.expires_at):
        status = CounterpartStatus.EXPIRED.value  # past its date before the sweep records it
    return {"counterpart_id": c.id, "position": c.position, "role": c.role, "name": c.name,
            "email": c.email, "status": status,
            "status_label": CounterpartStatus(status).label, "method": c.method,
            "emailed_at": iso(c.emailed_at),
            "consent_at": iso(c.consent_at), "first_viewed_at": iso(c.first_viewed_at),
            "signed_at": iso(c.signed_at), "declined_at": iso(c.declined_at),
            "decline_reason": c.decline_reason, "ip": c.ip, "user_agent": c.user_agent,
            "verify_email": bool(c.verify_email), "identity": c.identity,
            "signed_document_sha256": signed.blob_sha256 if signed else None}


def audit_json(session: Session, letter_id: int) -> str:
    """Return a letter's audit record as pretty JSON."""
    return json.dumps(audit_record(session, letter_id), indent=2, ensure_ascii=False)
