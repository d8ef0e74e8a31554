"""Counterparts signed on paper, from the letter page: upload a scan, review it, count it.

An upload does not count at once. Staff first see a preview: the scan's signature page beside
the blank counterpart's, with what the ink check found on the signer's line. "Count this as
signed" counts it; when no signature was found, a second, explicit click ("Accept without a
signature found") is needed. The scan can be discarded instead, and a counted upload can be
undone until the letter is executed. Scans are drawn for the preview in a limited child
process (:func:`workflow.paper.upload_page_png`); these pictures are for staff only.
"""

from __future__ import annotations

from typing import Any

from flask import flash, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from workflow.envelopes import (
    CheckedScan,
    PaperChoices,
    PendingScan,
    check_paper_scan,
    confirm_paper_counterpart,
    counterpart_of,
    discard_paper_upload,
    letter_pdf_for,
    paper_scan_target,
    pending_paper_upload,
    pending_scan_bytes,
    stage_paper_counterpart,
    undo_paper_counterpart,
)
from workflow.errors import CounterpartError, LinkError, NotFoundError, StateError
from workflow.letters import document_bytes, get_letter
from workflow.models import Document
from workflow.paper import blank_page_png, upload_page_png
from workflow.pdfs import signing_field

from ..database import get_db
from ..execution import assembly_outcome, staff_actor, upload_limit
from . import bp

__all__ = ["status_of", "check_upload"]


def check_upload(letter_id: int, counterpart_id: int, data: bytes, filename: str,
                 max_bytes: int) -> CheckedScan:
    """Check a scan for a counterpart before the transaction that records it, so that the
    second or two this takes holds no lock."""
    with get_db().transaction() as session:
        letter_pdf, role = paper_scan_target(session, letter_id, counterpart_id)
    return check_paper_scan(letter_pdf, role, data, filename, max_bytes=max_bytes)


def status_of(error: CounterpartError) -> int:
    """The HTTP status a page answers a refused paper upload with."""
    if isinstance(error, LinkError):
        return 409 if error.reason == "waiting" else 410
    if isinstance(error, StateError):
        return 409
    return 422


def _to_signer(letter_id: int, counterpart_id: int) -> Response:
    return redirect(url_for(".show", letter_id=letter_id, _anchor=f"signer-{counterpart_id}"),
                    code=303)


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload")
def upload(letter_id: int, counterpart_id: int) -> Response | tuple[str, int]:
    """Take the scan of a counterpart signed on paper for review; it does not count yet."""
    from .views import render_letter

    upload_file = request.files.get("file")
    signed_on = request.form.get("signed_on", "")
    try:
        if upload_file is None or not upload_file.filename:
            raise CounterpartError("Choose the PDF of the signed counterpart to upload.")
        limit = upload_limit()
        data = upload_file.read(limit + 1)
        if len(data) > limit:
            raise CounterpartError(f"{upload_file.filename[:80]} is larger than "
                                   f"{limit // (1024 * 1024)} MB, the largest file accepted.")
        checked = check_upload(letter_id, counterpart_id, data, upload_file.filename, limit)
        with get_db().transaction() as session:
            stage_paper_counterpart(session, letter_id, counterpart_id, data,
                                    upload_file.filename, staff_actor(), signed_on=signed_on,
                                    max_bytes=limit, checked=checked)
    except NotFoundError:
        raise
    except CounterpartError as exc:
        error = {"counterpart_id": counterpart_id, "signed_on": signed_on[:10],
                 "message": f"The scan was not accepted: {exc}"}
        return render_letter(letter_id, upload_error=error, status=status_of(exc))
    return redirect(url_for(".review_upload", letter_id=letter_id,
                            counterpart_id=counterpart_id), code=303)


def _review(letter_id: int, counterpart_id: int, *, error: CounterpartError | None = None,
            form: dict[str, str] | None = None, status: int = 200
            ) -> Response | tuple[str, int]:
    with get_db().transaction() as session:
        pending = pending_paper_upload(session, letter_id, counterpart_id)
        letter = get_letter(session, letter_id)
        title = {"id": letter.id, "title": letter.title}
    if pending is None:
        flash("No scan of this counterpart is waiting for review.", "info")
        return _to_signer(letter_id, counterpart_id)
    values = {"signed_on": pending.signed_on.isoformat() if pending.signed_on else "",
              "override_order": "", "reason": ""}
    values.update(form or {})
    return render_template("letters/paper_review.html", letter=title, pending=pending,
                           values=values, error=str(error) if error else None,
                           error_code=error.code if error else None), status


@bp.get("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload")
def review_upload(letter_id: int, counterpart_id: int) -> Response | tuple[str, int]:
    """The preview of a scan awaiting review: its signature page beside the blank's."""
    return _review(letter_id, counterpart_id)


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload/confirm")
def confirm_upload(letter_id: int, counterpart_id: int) -> Response | tuple[str, int]:
    """Count the reviewed scan as signed (accepting it without ink takes its own button)."""
    form = request.form
    values = {"signed_on": form.get("signed_on", "")[:10],
              "override_order": "yes" if form.get("override_order") == "yes" else "",
              "reason": form.get("reason", "")[:1000]}
    choices = PaperChoices(signed_on=values["signed_on"],
                           accept_without_ink=form.get("accept_without_ink") == "yes",
                           override_order=values["override_order"] == "yes",
                           reason=values["reason"])
    try:
        with get_db().transaction() as session:
            waiting = pending_scan_bytes(session, letter_id, counterpart_id)
        checked = (check_upload(letter_id, counterpart_id, waiting[0], waiting[1],
                                len(waiting[0])) if waiting else None)
        with get_db().transaction() as session:
            counterpart, all_signed = confirm_paper_counterpart(
                session, letter_id, counterpart_id, staff_actor(),
                document_id=form.get("document_id", -1, type=int), choices=choices,
                checked=checked)
            name, envelope_id = counterpart.name, counterpart.envelope_id
    except NotFoundError:
        raise
    except CounterpartError as exc:
        return _review(letter_id, counterpart_id, error=exc, form=values,
                       status=status_of(exc))
    # The last counted counterpart enqueued the assembly of the executed PDF.
    outcome = assembly_outcome(envelope_id) if all_signed else None
    if outcome == "done":
        flash(f"{name}'s counterpart is signed on paper. Every counterpart is signed: the "
              "letter is fully executed.", "success")
    elif outcome == "running":
        flash(f"{name}'s counterpart is signed on paper. Every counterpart is signed: the "
              "executed PDF is being assembled.", "success")
    elif outcome == "failed":
        flash(f"{name}'s counterpart is signed on paper. Every counterpart is signed, but the "
              "executed PDF could not be assembled: see below to retry.", "error")
    else:
        flash(f"{name}'s counterpart is signed on paper.", "success")
    return _to_signer(letter_id, counterpart_id)


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload/discard")
def discard_upload(letter_id: int, counterpart_id: int) -> Response:
    """Set the scan awaiting review aside; it stays stored and in the audit record."""
    try:
        with get_db().transaction() as session:
            counterpart = discard_paper_upload(
                session, letter_id, counterpart_id, staff_actor(),
                document_id=request.form.get("document_id", type=int))
            name = counterpart.name
    except NotFoundError:
        raise
    except CounterpartError as exc:
        flash(str(exc), "error")
    else:
        flash(f"The scan of {name}'s counterpart was discarded; it did not count.", "info")
    return _to_signer(letter_id, counterpart_id)


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload/undo")
def undo_upload(letter_id: int, counterpart_id: int) -> Response:
    """Undo a counted paper upload, until the letter is executed."""
    try:
        with get_db().transaction() as session:
            counterpart = undo_paper_counterpart(session, letter_id, counterpart_id,
                                                 staff_actor())
            name = counterpart.name
    except NotFoundError:
        raise
    except CounterpartError as exc:
        flash(f"The upload was not undone: {exc}", "error")
    else:
        flash(f"The paper upload of {name}'s counterpart was undone; it is open to sign again. "
              "The scan stays in the record.", "success")
    return _to_signer(letter_id, counterpart_id)


def _png(data: bytes, etag: str) -> Response:
    response = make_response(data)
    response.mimetype = "image/png"
    # A stored scan never changes, so neither does its picture; it is for staff only.
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.set_etag(etag)
    return response.make_conditional(request)


def _scan_page(pending: PendingScan | None, counterpart: Any, document_id: int) -> int:
    """The page of a scan of this counterpart to show, or NotFound if it is not theirs."""
    if pending is not None and pending.document_id == document_id:
        return pending.signature_page
    paper = counterpart.paper or {}
    if paper.get("original_document_id") == document_id:
        return int(paper.get("signature_page") or 0)
    raise NotFound("There is no such scan of this counterpart.")


@bp.get("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/scans/<int:document_id>"
        "/signature-page.png")
def scan_page_image(letter_id: int, counterpart_id: int, document_id: int) -> Response:
    """A picture of the signature page of a scan of this counterpart."""
    with get_db().transaction() as session:
        counterpart = counterpart_of(session, letter_id, counterpart_id)
        page = _scan_page(pending_paper_upload(session, letter_id, counterpart_id),
                          counterpart, document_id)
        document = session.get(Document, document_id)
        assert document is not None
        data, sha = document_bytes(session, document), document.blob_sha256
    return _png(upload_page_png(data, page, name="The scan"), f"{sha}-{page}")


@bp.get("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/blank-signature-page.png")
def blank_page_image(letter_id: int, counterpart_id: int) -> Response:
    """A picture of the blank counterpart's page that holds this signer's signature field."""
    with get_db().transaction() as session:
        counterpart = counterpart_of(session, letter_id, counterpart_id)
        letter_pdf = letter_pdf_for(session, counterpart.envelope)
        document_sha = counterpart.envelope.letter_pdf_id
    page = signing_field(letter_pdf, counterpart.role).page_index
    return _png(blank_page_png(letter_pdf, page), f"blank-{document_sha}-{page}")

