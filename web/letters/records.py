"""Letters, versions and documents read from the database as plain values, for pages and API.

Views read inside a short transaction and render after it: the functions here (and those of
:mod:`workflow.representations`, which webhooks share and which are named here too) copy what
a page or an answer needs out of the ORM objects, so nothing is loaded lazily later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from workflow.audit import events_of
from workflow.errors import CounterpartError
from workflow.letters import blob_bytes, get_letter, get_version, latest_document
from workflow.library import library_templates, published_specs, published_version, template_spec
from workflow.models import Document
from workflow.representations import (
    describe_letter,
    document_record,
    is_editable,
    iso,
    letter_documents,
    letter_summary,
    status_label,
)
from workflow.schema import TemplateSpec

from ..database import get_db
from .display import EVENT_LABELS, describe_event

__all__ = ["spec_for", "published_templates", "template_titles", "template_title",
           "document_record", "letter_summary", "letter_detail",
           "load_blob", "letter_documents", "find_document",
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


def letter_detail(session: Session, letter_id: int, number: int | None = None,
                  *, with_events: bool = True) -> dict[str, Any]:
    """Describe a letter with its versions, their documents, and its events.

    ``version`` is the version asked for (the current one by default), with its terms (see
    :func:`workflow.representations.describe_letter`). Raises NotFoundError for an unknown
    letter or version.
    """
    detail = describe_letter(session, letter_id, number, template_dir=_template_dir())
    if with_events:
        detail["events"] = [{
            "sequence": e.sequence,
            "type": e.type,
            "label": EVENT_LABELS.get(e.type, e.type.capitalize()),
            "description": describe_event(e.type, e.detail or {}),
            "at": e.at,
            "actor": e.actor,
            "ip": e.ip,
        } for e in events_of(session, letter_id)]
    return detail


def find_document(session: Session, letter_id: int, number: int | None, kind: str
                  ) -> tuple[Document, int]:
    """Return one version's newest document of a kind and the version number, or raise."""
    letter = get_letter(session, letter_id)
    version = get_version(session, letter, number)
    return latest_document(session, version, kind), version.number


def load_blob(sha256: str) -> bytes:
    """Read stored bytes in a transaction of their own."""
    with get_db().transaction() as session:
        return blob_bytes(session, sha256)
