"""Proof of execution: what a file handed in is, said in words that are true.

Anyone may hand in a file. :func:`verify_document` answers whether it is an executed letter of
this system exactly as it was sealed, a changed copy of one, another file this system made
(a letter version's PDF, which is also the blank counterpart signers print, a signed
counterpart, an uploaded scan), or none of these, and who signed it. Files this system stored
are recognised by their SHA-256 before anything parses them; the seal of any other file is
checked in a sandboxed child process (:func:`workflow.seal.check_seal`) with no database
transaction open, so a slow check holds no lock.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, object_session

from . import pdfs
from .db import Database
from .errors import DocumentError
from .models import Counterpart, Document, Envelope, Letter, LetterVersion
from .seal import CHECK_LIMITS, CheckLimits, SealCheck, Sealer, check_seal

__all__ = ["verify_document", "EXECUTED_KIND"]

EXECUTED_KIND = "executed_pdf"
# When one file is stored as several documents, the first kind here names it.
_KIND_ORDER = (EXECUTED_KIND, "signed_counterpart", "scanned_counterpart", "letter_pdf",
               "letter_docx")


def verify_document(db: Database, data: bytes, sealer: Sealer, *,
                    limits: CheckLimits = CHECK_LIMITS) -> dict[str, Any]:
    """Say what ``data`` is and whether it can be relied on, as JSON values.

    The answer holds ``message`` (a sentence for a person), ``known`` and ``intact`` (an
    executed letter of this system, exactly as sealed), ``modified`` (a copy of one changed
    after sealing), ``seal`` (``intact``, ``broken``, ``other``, ``invalid`` or ``none``),
    ``document`` (for another file this system made: its ``kind`` and ``description``, else
    None), ``title``, ``signers`` and the file's ``sha256``. A PDF over ``limits`` is not
    checked: DocumentError names the limit.
    """
    digest = hashlib.sha256(data).hexdigest()
    with db.transaction() as session:
        stored = _stored_document(session, digest)
        if stored is not None and stored.kind != EXECUTED_KIND:
            return _system_file(session, stored, digest)
    check = check_seal(data, sealer.certificate, limits=limits)
    if check.limit is not None:
        raise DocumentError(check.message)
    with db.transaction() as session:
        envelope = None
        if stored is not None:
            envelope = session.scalar(select(Envelope).where(
                Envelope.executed_document_id == stored.id))
        if envelope is None:
            envelope_id = pdfs.envelope_id_of(data)
            if envelope_id:
                envelope = session.get(Envelope, envelope_id)
        if envelope is not None and envelope.executed_document_id is None:
            envelope = None  # a letter still out for signature has no executed document
        return _sealed_file(session, envelope, stored is not None, check, digest)


def _stored_document(session: Session, digest: str) -> Document | None:
    """Find the document stored with these bytes, the most telling kind first."""
    documents = list(session.scalars(select(Document).where(
        Document.blob_sha256 == digest, Document.status == "ready")
        .order_by(Document.id.desc())))
    if not documents:
        return None

    def rank(document: Document) -> int:
        return (_KIND_ORDER.index(document.kind) if document.kind in _KIND_ORDER
                else len(_KIND_ORDER))
    return min(documents, key=rank)


def _title(letter: Letter | None) -> str | None:
    if letter is None:
        return None
    return letter.title


def _signer(counterpart: Counterpart) -> str:
    from .envelopes import party_label

    session = object_session(counterpart)
    label = party_label(session, counterpart) if session is not None else counterpart.role
    role = label[:1].lower() + label[1:]
    return f"{counterpart.name} ({role})"


def _answer(digest: str, message: str, **values: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "known": False, "intact": False, "sealed": False, "seal_valid": False,
        "signed_by_this_system": False, "modified": False, "seal": "none",
        "sha256": digest, "message": message, "document": None, "title": None,
        "envelope_id": None, "signers": [],
    }
    answer.update(values)
    return answer


def _system_file(session: Session, document: Document, digest: str) -> dict[str, Any]:
    """Name a file this system made and did not seal."""
    title = _title(session.get(Letter, document.letter_id))
    version = session.get(LetterVersion, document.version_id) if document.version_id else None
    of_version = f", version {version.number}, of “{title}”" if version is not None \
        else f" of “{title}”"
    counterpart = session.scalar(select(Counterpart).where(or_(
        Counterpart.signed_document_id == document.id,
        Counterpart.pending_document_id == document.id)).order_by(Counterpart.id.desc()))
    not_executed = "not an executed document"
    if document.kind == "letter_pdf":
        description = f"the unsigned letter{of_version}"
        if session.scalar(select(Envelope.id).where(Envelope.letter_pdf_id == document.id)
                          .limit(1)) is not None:
            description += ", as sent to its signers (the blank counterpart they sign)"
    elif document.kind == "letter_docx":
        description = f"the Word file of the unsigned letter{of_version}"
    elif document.kind == "signed_counterpart" and counterpart is not None:
        description = (f"the counterpart{of_version}, signed electronically by "
                       f"{_signer(counterpart)}")
        not_executed = "one signer's copy, not the executed document"
    elif document.kind == "scanned_counterpart" and counterpart is not None:
        state = ("awaiting confirmation by staff"
                 if counterpart.signed_document_id != document.id else "as uploaded")
        description = (f"the scan of the counterpart{of_version}, signed on paper by "
                       f"{_signer(counterpart)}, {state}")
        not_executed = "one signer's copy, not the executed document"
    else:
        description = (f"a file made by this system ({document.kind.replace('_', ' ')})"
                       f"{of_version}")
    return _answer(digest, f"This is {description} — {not_executed}.", title=title,
                   document={"kind": document.kind, "description": description,
                             "version": version.number if version is not None else None})


def _seal_state(check: SealCheck, known: bool) -> str:
    """Name the state of the file's seal: intact, broken, other, invalid or none.

    A signature that names this system's certificate, or that sits in a file naming one of
    its executed letters, and does not hold, is this system's seal broken; a valid signature
    by anyone else is another's.
    """
    if not check.sealed:
        return "none"
    if check.intact and check.signed_by_us:
        return "intact"
    if check.our_certificate or (known and not check.intact):
        return "broken"
    return "other" if check.intact else "invalid"


def _when(moment: datetime | None) -> str:
    return f" on {moment:%Y-%m-%d at %H:%M:%S} UTC" if moment else ""


def _sealed_file(session: Session, envelope: Envelope | None, stored_as_executed: bool,
                 check: SealCheck, digest: str) -> dict[str, Any]:
    """Answer for a file that is not another stored file: executed, changed, or foreign."""
    known = envelope is not None
    seal = _seal_state(check, known)
    intact = bool(known and stored_as_executed and seal == "intact")
    values: dict[str, Any] = {
        "known": known, "intact": intact, "sealed": check.sealed, "seal_valid": check.intact,
        "signed_by_this_system": check.signed_by_us, "modified": known and not intact,
        "seal": seal,
    }
    if envelope is not None:
        letter = session.get(Letter, envelope.letter_id)
        title = _title(letter)
        values.update(
            title=title, envelope_id=envelope.id,
            completed_at=envelope.completed_at.isoformat() if envelope.completed_at else None,
            sealed_at=check.signed_at.isoformat() if check.signed_at else None,
            signers=[{"name": c.name, "role": c.role, "method": c.method,
                      "signed_at": c.signed_at.isoformat() if c.signed_at else None}
                     for c in envelope.counterparts])
        message = _known_message(check, seal, intact, f"“{title}”")
    else:
        message = _unknown_message(check, seal)
    return _answer(digest, message, **values)


def _known_message(check: SealCheck, seal: str, intact: bool, title: str) -> str:
    """The sentence for a file that names an executed letter of this system."""
    if intact:
        return (f"This is the executed {title}, exactly as this system sealed it"
                f"{_when(check.signed_at)}.")
    rely = "Do not rely on this copy; ask for the executed PDF again."
    if seal == "intact":
        return (f"The seal is this system's and unbroken, but this is not the executed {title} "
                f"on record. {rely}")
    if seal == "other":
        return (f"This copy of the executed {title} was changed after sealing: it carries "
                f"another signature ({check.signer_subject}) instead of this system's seal. "
                f"{rely}")
    if seal == "none":
        return (f"This copy of the executed {title} carries no seal: it was changed or saved "
                f"again after sealing. {rely}")
    if check.modified_after_seal:
        return (f"The seal is broken: changed after sealing. Something was added to this copy "
                f"of the executed {title} after it was sealed{_when(check.signed_at)}. {rely}")
    return (f"The seal is broken: changed after sealing. This copy of the executed {title} "
            f"differs from the document this system sealed. {rely}")


def _unknown_message(check: SealCheck, seal: str) -> str:
    """The sentence for a file that names no executed letter of this system."""
    if seal == "intact":
        return ("The seal is this system's and unbroken, but no executed letter with this "
                "content is on record.")
    if seal == "broken":
        return ("The seal is broken: changed after sealing. The file carries this system's "
                "seal certificate, but it is not an executed letter of this system as sealed; "
                "do not rely on it.")
    return f"{check.message} It is not an executed letter of this system."
