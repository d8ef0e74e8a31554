"""The API of versions and their changes: one version with the terms that changed since the
version before it, the redline between two versions (.docx or PDF), the review before
sending, and the review download of a version's PDF (a POST, written in the audit record)."""

from __future__ import annotations

from typing import Any

from flask import jsonify, url_for
from werkzeug.wrappers import Response

from ..database import get_db
from ..letters.records import iso, letter_detail
from ..letters.redline import (
    changed_terms_of,
    redline_response,
    requested_redline,
    review_json,
    review_warnings,
)
from ..letters.redline import (
    review_pdf as review_pdf_page,
)
from . import bp

__all__: list[str] = []


@bp.get("/letters/<int:letter_id>/redline.<any(docx, pdf):extension>")
def redline(letter_id: int, extension: str) -> Response:
    """The redline between two versions, ``?from=1&to=2`` (by default the newest and the one
    before it), as a tracked-changes .docx or its PDF."""
    return redline_response(requested_redline(letter_id), extension)


def _documents(letter_id: int, number: int, documents: dict[str, Any]) -> list[dict[str, Any]]:
    return [{
        "kind": d["kind"], "status": d["status"], "filename": d["filename"],
        "media_type": d["media_type"], "size": d["size"], "sha256": d["sha256"],
        "error": d["error"],
        "download": url_for(".letter_document", letter_id=letter_id, extension=d["extension"],
                            version=number, _external=True),
    } for d in documents.values()]


@bp.get("/letters/<int:letter_id>/versions/<int:number>")
def letter_version(letter_id: int, number: int) -> Response:
    """One version: its terms, documents, and ``changed_terms`` since the version before it
    (``{KEY: {"from": old, "to": new}}``, only the terms that changed; {} for version 1)."""
    with get_db().transaction() as session:
        letter = letter_detail(session, letter_id, number, with_events=False)
    shown = letter["version"]
    previous, changed = changed_terms_of(letter_id, number)
    redlines = None
    if previous is not None:
        redlines = {extension: url_for(".redline", letter_id=letter_id, extension=extension,
                                       _external=True, **{"from": previous, "to": number})
                    for extension in ("docx", "pdf")}
    return jsonify(
        letter_id=letter_id, number=shown["number"], current=shown["current"],
        created_at=iso(shown["created_at"]), created_by=shown["created_by"],
        template=shown["template_name"], template_version=shown["template_version"],
        template_sha256=shown["template_sha256"], terms=shown["terms"],
        changed_terms={t["key"]: {"from": t["from"], "to": t["to"]} for t in changed},
        compared_with=previous, redline=redlines,
        documents=_documents(letter_id, number, shown["documents"]),
        review_pdf=url_for(".review_pdf", letter_id=letter_id, number=number, _external=True))


@bp.get("/letters/<int:letter_id>/review")
def letter_review(letter_id: int) -> Response:
    """What to check before sending the current version: ``warnings``, each
    ``{"code", "field", "message"}`` (they never block sending)."""
    warnings = review_json(review_warnings(letter_id))
    with get_db().transaction() as session:
        current = letter_detail(session, letter_id, with_events=False)["current_version"]
    return jsonify(letter_id=letter_id, version=current, warnings=warnings)


@bp.post("/letters/<int:letter_id>/versions/<int:number>/review.pdf")
def review_pdf(letter_id: int, number: int) -> Response:
    """Download a version's PDF to review it; the download is written in the audit record."""
    return review_pdf_page(letter_id, number)
