"""Letters, versions and documents read from the database as plain values, for pages and API.

Views read inside a short transaction and render after it: the functions here copy what a
page or an answer needs out of the ORM objects, so nothing is loaded lazily later.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from workflow.audit import events_of
from workflow.errors import CounterpartError
from workflow.letters import (
    EDIT_LOCKED,
    blob_bytes,
    get_letter,
    get_version,
    latest_document,
    version_template_version,
)
from workflow.library import library_templates, published_specs, published_version, template_spec
from workflow.models import Document, Letter, LetterVersion, User
from workflow.schema import TemplateSpec
from workflow.states import LetterStatus

from ..database import get_db
from .display import EVENT_LABELS, describe_event

__all__ = ["spec_for", "published_templates", "template_titles", "template_title",
           "document_record", "letter_summary", "letter_detail",
           "pending_document_ids", "load_blob", "letter_documents", "find_document",
           "is_editable", "status_label", "iso"]


def _template_dir() -> Path:
    return Path(current_app.config["DOCX_TEMPLATE_DIR"])


def spec_for(name: str) -> TemplateSpec:
    """Return the schema of a template's newest published version, the one new letters use.

    Raises NotFoundError for an unknown template and StateError for one not yet published.
    """
    with get_db().transaction() as session:
        return template_spec(published_version(session, name, template_dir=_template_dir()))


def published_templates() -> list[TemplateSpec]:
    """Return the schemas of the templates letters can be made from, by title."""
    with get_db().transaction() as session:
        return published_specs(session)


def template_titles(session: Session) -> dict[str, str]:
    """Return each template's title (its newest published version's), by key."""
    return {summary.key: summary.title for summary in library_templates(session)}


def template_title(name: str) -> str:
    """Return a template's title, or its name if it is gone."""
    try:
        return spec_for(name).title
    except CounterpartError:  # a removed template must not break the letters table
        return name


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


def letter_summary(letter: Letter, titles: dict[str, str] | None = None) -> dict[str, Any]:
    """Describe a letter as the letters table shows it: its title and its template's listed
    terms (``columns``: term, label and value as the letter writes it).

    ``titles`` gives the templates' titles by key (see :func:`template_titles`).
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


def letter_detail(session: Session, letter_id: int, number: int | None = None,
                  *, with_events: bool = True) -> dict[str, Any]:
    """Describe a letter with its versions, their documents, and its events.

    ``version`` is the version asked for (the current one by default), with its terms.
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
    template_version = version_template_version(session, version, _template_dir())
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
    if with_events:
        detail["events"] = [{
            "sequence": e.sequence,
            "type": e.type,
            "label": EVENT_LABELS.get(e.type, e.type.capitalize()),
            "description": describe_event(e.type, e.detail or {}),
            "at": e.at,
            "actor": e.actor,
            "ip": e.ip,
        } for e in events_of(session, letter.id)]
    return detail


def find_document(session: Session, letter_id: int, number: int | None, kind: str
                  ) -> tuple[Document, int]:
    """Return one version's newest document of a kind and the version number, or raise."""
    letter = get_letter(session, letter_id)
    version = get_version(session, letter, number)
    return latest_document(session, version, kind), version.number


def pending_document_ids(session: Session, letter_id: int) -> list[int]:
    """List a letter's documents that wait to be generated."""
    return list(session.scalars(select(Document.id).where(
        Document.letter_id == letter_id, Document.status == "pending").order_by(Document.id)))


def load_blob(sha256: str) -> bytes:
    """Read stored bytes in a transaction of their own."""
    with get_db().transaction() as session:
        return blob_bytes(session, sha256)


def iso(value: dt.datetime | None) -> str | None:
    """Format a timestamp as ISO 8601 UTC for JSON."""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else None
