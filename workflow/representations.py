"""Letters, envelopes and counterparts as plain values: the records pages read, and the JSON
the API answers and webhooks deliver.

Two layers. The ``describe_*`` functions copy what a page or an answer needs out of the ORM
objects inside the caller's transaction (timestamps stay ``datetime``), so nothing is loaded
lazily later. The ``*_json`` functions turn those records into JSON values with absolute
addresses built from ``base_url`` (``"https://sign.example.com"``, no trailing slash): the API
passes the address the request came to, a webhook the configured ``BASE_URL``. The paths
below are the API's routes (``web/api``); a test compares both answers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .formatting import long_date
from .letters import EDIT_LOCKED, get_letter, get_version, version_template_version
from .library import template_spec
from .models import Counterpart, Document, Envelope, Letter, LetterVersion, User, utcnow
from .schema import DEFAULT_TEMPLATE_DIR
from .states import OPEN_COUNTERPART_STATUSES, CounterpartStatus, EnvelopeStatus, LetterStatus

__all__ = ["iso", "status_label", "is_editable", "document_record", "letter_summary",
           "letter_documents", "describe_letter", "describe_envelope", "signature_progress",
           "document_json", "summary_json", "letter_json", "signer_json", "paper_json",
           "envelope_json", "PAPER_KEYS"]

PAPER_KEYS = ("filename", "sha256", "signature_page", "ink", "ink_accepted_by",
              "order_override_reason", "order_override_by", "crop_box", "recorded_by")


def iso(value: dt.datetime | None) -> str | None:
    """Format a timestamp as ISO 8601 UTC, to the second, for JSON (None stays None)."""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else None


def status_label(status: str) -> str:
    """Return the readable name of a letter status."""
    try:
        return LetterStatus(status).label
    except ValueError:
        return status


def is_editable(status: str) -> bool:
    """Say whether a letter's terms may be changed in its current status."""
    try:
        return LetterStatus(status) not in EDIT_LOCKED
    except ValueError:
        return False


# --- letters -------------------------------------------------------------------------------

def document_record(document: Document, letter_id: int, number: int | None) -> dict[str, Any]:
    """Describe a document: what it is, whether it is ready, its size and SHA-256."""
    extension = "pdf" if document.kind.endswith("pdf") else "docx"
    return {
        "id": document.id,
        "kind": document.kind,
        "status": document.status,
        "filename": document.filename,
        "media_type": document.media_type,
        "size": document.size,
        "sha256": document.blob_sha256,
        "error": document.error,
        "version": number,
        "extension": extension,
        "letter_id": letter_id,
    }


def letter_summary(letter: Letter, titles: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Describe a letter as the letters table shows it: its title and its template's listed
    terms (``columns``: term, label and value as the letter writes it).

    ``titles`` gives the templates' titles by key; a template missing there is named by key.
    """
    return {
        "id": letter.id,
        "template": letter.template,
        "template_title": (titles or {}).get(letter.template, letter.template),
        "title": letter.title,
        "columns": [dict(column) for column in letter.list_values or []],
        "status": letter.status,
        "status_label": status_label(letter.status),
        "current_version": letter.current_version,
        "created_at": letter.created_at,
        "updated_at": letter.updated_at,
        "editable": is_editable(letter.status),
    }


def _emails(session: Session, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.email).where(User.id.in_(wanted))).all())


def letter_documents(session: Session, letter_id: int) -> list[tuple[int, Document]]:
    """Return every document of a letter's versions with its version number, oldest first."""
    rows = session.execute(
        select(LetterVersion.number, Document)
        .join(Document, Document.version_id == LetterVersion.id)
        .where(LetterVersion.letter_id == letter_id)
        .order_by(LetterVersion.number, Document.id))
    return [(number, document) for number, document in rows]


def describe_letter(session: Session, letter_id: int, number: int | None = None, *,
                    template_dir: Path = DEFAULT_TEMPLATE_DIR) -> dict[str, Any]:
    """Describe a letter with its versions (newest first) and their documents.

    ``version`` is the version asked for (the current one by default), with its terms;
    ``spec`` is the schema of the template version it was made from (``template_dir`` is the
    folder of built-in templates, for versions older than the template library).
    Raises NotFoundError for an unknown letter or version.
    """
    letter = get_letter(session, letter_id)
    version = get_version(session, letter, number)
    versions = list(session.scalars(select(LetterVersion).where(
        LetterVersion.letter_id == letter.id).order_by(LetterVersion.number.desc())))
    documents: dict[int, dict[str, dict[str, Any]]] = {}
    for doc_number, document in letter_documents(session, letter.id):
        # The newest document of each kind wins, as latest_document has it.
        documents.setdefault(doc_number, {})[document.kind] = document_record(
            document, letter.id, doc_number)
    emails = _emails(session, {v.created_by_id for v in versions} | {letter.created_by_id})
    template_version = version_template_version(session, version, template_dir)
    spec = template_spec(template_version)
    detail = letter_summary(letter, {letter.template: spec.title})
    detail["spec"] = spec
    detail["created_by"] = emails.get(letter.created_by_id or 0)
    detail["versions"] = [{
        "number": v.number,
        "created_at": v.created_at,
        "created_by": emails.get(v.created_by_id or 0),
        "template_sha256": v.template_sha256,
        "documents": documents.get(v.number, {}),
        "current": v.number == letter.current_version,
    } for v in versions]
    selected = next(v for v in detail["versions"] if v["number"] == version.number)
    detail["version"] = {**selected, "terms": dict(version.terms),
                         "template_name": version.template_name,
                         "template_version": template_version.number}
    return detail


# --- envelopes ------------------------------------------------------------------------------

def _document_info(document: Document | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {"id": document.id, "filename": document.filename, "size": document.size,
            "sha256": document.blob_sha256, "kind": document.kind}


def describe_envelope(session: Session, envelope: Envelope, *,
                      now: dt.datetime | None = None) -> dict[str, Any]:
    """Describe an envelope and its counterparts (``signers``, in signing position).

    A link past its date reads ``expired`` even before the expiry sweep recorded it; nothing
    is written.
    """
    now = now or utcnow()
    letter_id = envelope.letter_id
    expired = envelope.status == EnvelopeStatus.OUT.value and now >= envelope.expires_at
    signers = []
    unsigned_before = False  # in a signing order, someone earlier has still to sign
    # A paper upload can be undone until the executed PDF is being assembled.
    undo_open = (envelope.status == EnvelopeStatus.OUT.value
                 and envelope.executed_document_id is None
                 and envelope.assembly_state not in ("running", "done"))
    for c in envelope.counterparts:
        status = c.status
        if expired and status in OPEN_COUNTERPART_STATUSES:
            status = CounterpartStatus.EXPIRED.value  # the link no longer works, as it says
        signed = session.get(Document, c.signed_document_id) if c.signed_document_id else None
        signers.append({
            "counterpart_id": c.id, "position": c.position, "role": c.role, "name": c.name,
            "email": c.email, "status": status, "status_label": CounterpartStatus(status).label,
            "method": c.method, "emailed_at": c.emailed_at,
            "first_viewed_at": c.first_viewed_at,
            "consent_at": c.consent_at, "signed_at": c.signed_at,
            "declined_at": c.declined_at, "decline_reason": c.decline_reason,
            "ip": c.ip, "open": status in OPEN_COUNTERPART_STATUSES,
            "waiting": bool(envelope.signing_order and unsigned_before
                            and status in OPEN_COUNTERPART_STATUSES),
            # A lost link is replaced, an expired one renewed, while the envelope is out.
            "renewable": envelope.status == EnvelopeStatus.OUT.value
            and (status in OPEN_COUNTERPART_STATUSES
                 or status == CounterpartStatus.EXPIRED.value),
            "signed_document": _document_info(signed),
            # Signed on paper: the date the signer wrote, the upload, and its checks.
            "signed_on": c.signed_on, "uploaded_at": c.uploaded_at,
            "signed_on_text": long_date(c.signed_on) if c.signed_on else None,
            "paper": dict(c.paper) if c.paper else None,
            "pending_document_id": c.pending_document_id,
            "can_undo": (c.method == "paper" and c.status == CounterpartStatus.SIGNED.value
                         and undo_open),
            # Asked to confirm their email with a code; how they were identified once signed.
            "verify_email": bool(c.verify_email),
            "identity": dict(c.identity) if c.identity else None,
        })
        unsigned_before = unsigned_before or c.status != CounterpartStatus.SIGNED.value
    executed = (session.get(Document, envelope.executed_document_id)
                if envelope.executed_document_id else None)
    signed_count = sum(s["status"] == CounterpartStatus.SIGNED.value for s in signers)
    return {
        "id": envelope.id, "letter_id": letter_id, "status": envelope.status,
        "signing_order": envelope.signing_order, "created_at": envelope.created_at,
        "expires_at": envelope.expires_at, "expired": expired,
        "completed_at": envelope.completed_at, "voided_at": envelope.voided_at,
        "void_reason": envelope.void_reason, "assembly_state": envelope.assembly_state,
        "assembly_error": envelope.assembly_error,
        "assembling": (envelope.status == EnvelopeStatus.OUT.value
                       and signed_count == len(signers) and executed is None
                       and envelope.assembly_state != "failed"),
        "signers": signers, "signed": signed_count, "total": len(signers),
        "executed": _document_info(executed),
        # Once every counterpart is signed the letter is executed: there is nothing to void.
        "can_void": envelope.status in (EnvelopeStatus.OUT.value, EnvelopeStatus.DECLINED.value)
        and signed_count < len(signers),
    }


def signature_progress(session: Session, letter_ids: list[int], *,
                       now: dt.datetime | None = None) -> dict[int, dict[str, Any]]:
    """Count the signed counterparts of each letter's newest envelope, for the letters table.

    Returns ``{letter_id: {"signed", "total", "envelope_status", "ready", "expired"}}`` for the
    letters that were sent; ``ready`` counts links no mail server accepted (staff hand them
    over), ``expired`` the links past their date.
    """
    if not letter_ids:
        return {}
    # Only the columns the table shows, not whole envelopes (a list page asks for 25 letters).
    newest: dict[int, Any] = {}
    for envelope in session.execute(
            select(Envelope.id, Envelope.letter_id, Envelope.status, Envelope.expires_at)
            .where(Envelope.letter_id.in_(letter_ids))
            .order_by(Envelope.created_at, Envelope.id)):
        newest[envelope.letter_id] = envelope
    if not newest:
        return {}
    counts: dict[str, dict[str, int]] = {}
    rows = session.execute(select(Counterpart.envelope_id, Counterpart.status, func.count())
                           .where(Counterpart.envelope_id.in_([e.id for e in newest.values()]))
                           .group_by(Counterpart.envelope_id, Counterpart.status))
    for envelope_id, status, count in rows:
        counts.setdefault(envelope_id, {})[status] = count
    progress = {}
    now = now or utcnow()
    for letter_id, envelope in newest.items():
        by_status = counts.get(envelope.id, {})
        out = envelope.status == EnvelopeStatus.OUT.value
        lapsed = out and now >= envelope.expires_at
        open_count = sum(n for s, n in by_status.items() if s in OPEN_COUNTERPART_STATUSES)
        progress[letter_id] = {
            "signed": by_status.get(CounterpartStatus.SIGNED.value, 0),
            "total": sum(by_status.values()), "envelope_status": envelope.status,
            # Links issued but never accepted by a mail server: staff must hand them over.
            "ready": 0 if not out or lapsed else by_status.get(CounterpartStatus.READY.value, 0),
            "expired": 0 if not out else by_status.get(CounterpartStatus.EXPIRED.value, 0)
            + (open_count if lapsed else 0)}
    return progress


# --- JSON -----------------------------------------------------------------------------------

def _api(base_url: str, path: str) -> str:
    return f"{base_url.rstrip('/')}/api{path}"


def _letter_api(base_url: str, letter_id: int, tail: str = "") -> str:
    return _api(base_url, f"/letters/{letter_id}{tail}")


def document_json(document: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A document (:func:`document_record`) as the API states it, with its download address."""
    version = document["version"]
    query = f"?version={version}" if version is not None else ""
    return {
        "kind": document["kind"],
        "status": document["status"],
        "filename": document["filename"],
        "media_type": document["media_type"],
        "size": document["size"],
        "sha256": document["sha256"],
        "error": document["error"],
        "download": _letter_api(base_url, document["letter_id"],
                                f"/document.{quote(document['extension'])}{query}"),
    }


def summary_json(letter: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A letter as the API lists it (:func:`letter_summary`, with ``signatures`` from
    :func:`signature_progress` or None)."""
    return {
        "id": letter["id"],
        "template": letter["template"],
        "template_title": letter["template_title"],
        "title": letter["title"],
        # The template's listed terms, as the letter writes them.
        "columns": letter["columns"],
        "status": letter["status"],
        "status_label": letter["status_label"],
        "current_version": letter["current_version"],
        "created_at": iso(letter["created_at"]),
        "updated_at": iso(letter["updated_at"]),
        "url": _letter_api(base_url, letter["id"]),
        "page": f"{base_url.rstrip('/')}/letters/{letter['id']}",
        # The counterparts of the newest envelope, once the letter was sent for signature.
        "signatures": letter.get("signatures"),
    }


def letter_json(session: Session, letter_id: int, *, base_url: str,
                template_dir: Path = DEFAULT_TEMPLATE_DIR) -> dict[str, Any]:
    """A letter as the API shows it: its status, current terms, versions and documents."""
    letter = describe_letter(session, letter_id, template_dir=template_dir)
    letter["signatures"] = signature_progress(session, [letter_id]).get(letter_id)
    return {
        **summary_json(letter, base_url),
        "envelope": _letter_api(base_url, letter_id, "/envelope")
        if letter["signatures"] else None,
        "created_by": letter["created_by"],
        "template_version": letter["version"]["template_version"],
        "terms": letter["version"]["terms"],
        "versions": [{
            "number": v["number"],
            "created_at": iso(v["created_at"]),
            "created_by": v["created_by"],
            "template_sha256": v["template_sha256"],
            "documents": [document_json(d, base_url) for d in v["documents"].values()],
        } for v in letter["versions"]],
    }


def paper_json(paper: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The checks of a paper upload as the API states them (None if not signed on paper)."""
    return {key: paper.get(key) for key in PAPER_KEYS} if paper else None


def signer_json(letter_id: int, signer: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A counterpart (one of :func:`describe_envelope`'s ``signers``) as the API states it;
    never its signing link."""
    cid = signer["counterpart_id"]
    counterpart = f"/counterparts/{cid}"
    return {
        "counterpart_id": cid, "position": signer["position"], "name": signer["name"],
        "role": signer["role"], "email": signer["email"], "status": signer["status"],
        "status_label": signer["status_label"], "waiting": signer["waiting"],
        "method": signer["method"], "emailed_at": iso(signer["emailed_at"]),
        "first_viewed_at": iso(signer["first_viewed_at"]),
        "consent_at": iso(signer["consent_at"]), "signed_at": iso(signer["signed_at"]),
        "declined_at": iso(signer["declined_at"]), "decline_reason": signer["decline_reason"],
        "blank_pdf": _letter_api(base_url, letter_id, f"{counterpart}/blank.pdf"),
        "signed_pdf": _letter_api(base_url, letter_id, f"{counterpart}/signed.pdf")
        if signer["signed_document"] else None,
        "signed_on": signer["signed_on"].isoformat() if signer["signed_on"] else None,
        "uploaded_at": iso(signer["uploaded_at"]),
        "paper": paper_json(signer["paper"]),
        "pending_upload": signer["pending_document_id"] is not None,
        "can_undo_upload": signer["can_undo"],
        "verify_email": signer["verify_email"],
        "identity": signer["identity"],
    }


def envelope_json(record: Mapping[str, Any], base_url: str,
                  links: Mapping[int, str] | None = None) -> dict[str, Any]:
    """An envelope (:func:`describe_envelope`) as the API states it; ``links`` adds each
    signer's link (once, in the answer to sending)."""
    letter_id = record["letter_id"]
    signers = []
    for signer in record["signers"]:
        described = signer_json(letter_id, signer, base_url)
        if links is not None:
            described["link"] = links.get(signer["counterpart_id"])
        signers.append(described)
    executed = record["executed"]
    return {
        "envelope_id": record["id"], "letter_id": letter_id, "status": record["status"],
        "signing_order": record["signing_order"], "created_at": iso(record["created_at"]),
        "expires_at": iso(record["expires_at"]), "expired": record["expired"],
        "completed_at": iso(record["completed_at"]), "voided_at": iso(record["voided_at"]),
        "void_reason": record["void_reason"], "signed": record["signed"],
        "total": record["total"],
        "assembly": {"state": record["assembly_state"], "error": record["assembly_error"]},
        "signers": signers,
        "executed_pdf": _letter_api(base_url, letter_id, "/executed.pdf") if executed else None,
        "executed_sha256": executed["sha256"] if executed else None,
        "counterparts_zip": _letter_api(base_url, letter_id, "/counterparts.zip")
        if executed else None,
        "audit": _letter_api(base_url, letter_id, "/audit"),
    }
