"""The letter page's "What changed" and its review before sending, and the redline downloads.

"What changed" compares the version shown with the one before it: the terms that differ (old
and new, as the letter writes them) and each changed sentence with its words marked, with the
redline between them as a tracked-changes .docx and as a PDF. The review lists what to check
before sending (:func:`workflow.review.review_letter`): on the letter page while the letter
has not gone out, and on the "Send for signature" form. A review download of a version's PDF
is a POST: it is written in the audit record, which is how the review knows the version was
seen.

The page's partials call :func:`what_changed` and :func:`letter_review` (made available to
the blueprint's templates), so the letter page's view needs to know nothing of them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from flask import abort, current_app, g
from werkzeug.wrappers import Response

from workflow.errors import CounterpartError
from workflow.letters import DOCX_TYPE, PDF_TYPE, get_letter, get_version, version_spec
from workflow.models import utcnow
from workflow.redline import LetterRedline, changed_sentences, changed_terms, letter_redline
from workflow.review import Warning, record_review_download, review_letter
from workflow.states import LetterStatus

from ..database import get_db
from ..documents import get_documents
from ..downloads import send_document
from ..execution import staff_actor
from ..numbers import query_number
from . import bp
from .display import format_term
from .records import load_blob

__all__ = ["requested_redline", "redline_response", "redline_pdf", "what_changed",
           "letter_review", "review_warnings", "review_json", "changed_terms_of",
           "STORY_LABELS"]

STORY_LABELS = {"body": "Letter", "header": "Page header", "footer": "Page footer",
                "footnotes": "Footnote", "endnotes": "Endnote"}
# The review is for letters not yet out for signature (or voided, to be sent again).
BEFORE_SENDING = (LetterStatus.DRAFT.value, LetterStatus.GENERATED.value,
                  LetterStatus.VOIDED.value)
_PDF_CACHE_KEY = "counterpart.redline_pdfs"
_PDF_CACHE_SIZE = 16
_pdf_lock = threading.Lock()


# --- redlines ---------------------------------------------------------------------------------

def requested_redline(letter_id: int) -> LetterRedline:
    """Make the redline the query asks for (``from`` and ``to``: version numbers, by default
    the newest and the one before it); 400 for a bad or equal pair, 404 for a missing one."""
    from_number = query_number("from")
    to_number = query_number("to")
    if from_number is not None and from_number == to_number:
        abort(400, f"from and to are both version {from_number}; give two different versions.")
    with get_db().transaction() as session:
        if from_number is not None and to_number is None:
            if from_number == get_letter(session, letter_id).current_version:
                abort(400, f"from is version {from_number}, the newest, which to is by "
                           "default; give an earlier from or another to.")
        return letter_redline(session, letter_id, from_number, to_number)


def redline_pdf(redline: LetterRedline) -> bytes:
    """Convert a redline to PDF with the app's LibreOffice (kept for a few identical asks)."""
    key = hashlib.sha256(redline.docx).hexdigest()
    cache: OrderedDict[str, bytes] = current_app.extensions.setdefault(
        _PDF_CACHE_KEY, OrderedDict())
    with _pdf_lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    pdf = get_documents().converter.convert_bytes(redline.docx)
    with _pdf_lock:
        cache[key] = pdf
        while len(cache) > _PDF_CACHE_SIZE:
            cache.popitem(last=False)
    return pdf


def redline_response(redline: LetterRedline, extension: str) -> Response:
    """Answer with a redline as a .docx or a PDF download."""
    if extension == "pdf":
        data, media_type = redline_pdf(redline), PDF_TYPE
    else:
        data, media_type = redline.docx, DOCX_TYPE
    return send_document(data, filename=f"{redline.filename_stem}.{extension}",
                         media_type=media_type, sha256=hashlib.sha256(data).hexdigest())


@bp.get("/letters/<int:letter_id>/redline.<any(docx, pdf):extension>")
def redline(letter_id: int, extension: str) -> Response:
    """Download the redline between two versions (``?from=1&to=2``) as .docx or PDF."""
    return redline_response(requested_redline(letter_id), extension)


# --- what changed -----------------------------------------------------------------------------

def changed_terms_of(letter_id: int, number: int) -> tuple[int | None, list[dict[str, Any]]]:
    """Return the version before ``number`` (None for version 1) and the terms that changed
    since it: ``[{"key", "label", "from", "to"}]`` with stored (JSON) values."""
    with get_db().transaction() as session:
        letter = get_letter(session, letter_id)
        version = get_version(session, letter, number)
        if number <= 1:
            return None, []
        previous = get_version(session, letter, number - 1)
        spec = version_spec(session, version)
        changed = changed_terms(spec.fields, previous.terms, version.terms)
    return number - 1, [{"key": key, "label": spec.fields[key].label if key in spec.fields
                         else key, "field": spec.fields.get(key), "from": old, "to": new}
                        for key, (old, new) in changed.items()]


def what_changed(letter_id: int, number: int) -> dict[str, Any] | None:
    """Describe what changed from the version before ``number`` to it, for the letter page:
    the terms (as the letter writes them) and the changed sentences; None for version 1."""
    previous, terms = changed_terms_of(letter_id, number)
    if previous is None:
        return None
    try:
        with get_db().transaction() as session:
            redline = letter_redline(session, letter_id, previous, number)
    except CounterpartError as exc:
        return {"from": previous, "to": number, "terms": _written(terms), "sentences": [],
                "error": str(exc)}
    sentences = [{"story": paragraph.story,
                  "story_label": STORY_LABELS.get(paragraph.story, paragraph.story),
                  "segments": [{"kind": s.kind, "text": s.text} for s in sentence]}
                 for paragraph in redline.redline.changes
                 for sentence in changed_sentences(paragraph)]
    return {"from": previous, "to": number, "terms": _written(terms), "sentences": sentences,
            "error": None}


def _written(terms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "old": format_term(t["field"], t["from"]) if t["field"] else str(t["from"]),
             "new": format_term(t["field"], t["to"]) if t["field"] else str(t["to"])}
            for t in terms]


# --- the review -------------------------------------------------------------------------------

def review_warnings(letter_id: int, signers: Sequence[Any] | None = None) -> list[Warning]:
    """Review the letter's current version now, for the ``signers`` of the send form if given
    (raises NotFoundError for an unknown letter)."""
    with get_db().transaction() as session:
        return review_letter(session, letter_id, utcnow(), signers=signers)


def letter_review(letter_id: int, status: str | None = None) -> list[Warning] | None:
    """The review the letter page shows, once per request; None once the letter has gone
    out for signature (``status`` is the letter's)."""
    if status is not None and status not in BEFORE_SENDING:
        return None
    reviews = g.setdefault("letter_reviews", {})
    if letter_id not in reviews:
        reviews[letter_id] = review_warnings(letter_id)
    return reviews[letter_id]  # type: ignore[no-any-return]


@bp.context_processor
def _page_functions() -> dict[str, Any]:
    return {"what_changed": what_changed, "letter_review": letter_review}


@bp.post("/letters/<int:letter_id>/versions/<int:number>/review.pdf")
def review_pdf(letter_id: int, number: int) -> Response:
    """Download a version's PDF to review it, recording that staff saw this version."""
    document_id = _review_document(letter_id, number)
    document = get_documents().wait(document_id)
    if document.status != "ready" or document.blob_sha256 is None:
        abort(409, f"{document.filename} could not be generated: {document.error}")
    actor = staff_actor()
    with get_db().transaction() as session:
        document = record_review_download(session, letter_id, number, actor=actor.name,
                                          ip=actor.ip, user_agent=actor.user_agent)
        sha, filename, media_type = document.blob_sha256, document.filename, document.media_type
    assert sha is not None
    return send_document(load_blob(sha), filename=filename, media_type=media_type, sha256=sha)


def _review_document(letter_id: int, number: int) -> int:
    from .records import find_document

    with get_db().transaction() as session:
        document, _ = find_document(session, letter_id, number, "letter_pdf")
        return document.id


def review_json(warnings: list[Warning]) -> list[dict[str, Any]]:
    """State warnings as the API does: ``[{"code", "field", "message"}]``."""
    return [w.as_json() for w in warnings]
