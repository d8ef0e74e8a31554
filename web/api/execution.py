"""The API of execution in counterparts, for staff tools: send, follow, void, paper uploads,
the executed PDF, the signed counterparts, their zip and the audit record.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, request, url_for
from werkzeug.wrappers import Response

from workflow.envelopes import (
    DEFAULT_LINK_DAYS,
    parse_signers,
    upload_paper_counterpart,
    void_envelope,
)
from workflow.errors import NotFoundError
from workflow.letters import get_letter

from ..database import get_db
from ..execution import (
    assemble_quietly,
    audit_json,
    envelope_record,
    executed_document,
    renew_signing_link,
    send_blank_counterpart,
    send_counterparts_zip,
    send_executed_pdf,
    send_for_signature,
    send_signed_counterpart,
    staff_actor,
    upload_limit,
)
from ..letters.records import iso
from . import bp
from .views import json_body

__all__ = ["envelope_json", "read_upload"]


def _signer_json(letter_id: int, signer: dict[str, Any]) -> dict[str, Any]:
    cid = signer["counterpart_id"]
    return {
        "counterpart_id": cid, "position": signer["position"], "name": signer["name"],
        "role": signer["role"], "email": signer["email"], "status": signer["status"],
        "method": signer["method"], "first_viewed_at": iso(signer["first_viewed_at"]),
        "consent_at": iso(signer["consent_at"]), "signed_at": iso(signer["signed_at"]),
        "declined_at": iso(signer["declined_at"]), "decline_reason": signer["decline_reason"],
        "blank_pdf": url_for("api.blank_counterpart", letter_id=letter_id, counterpart_id=cid,
                             _external=True),
        "signed_pdf": url_for("api.signed_counterpart", letter_id=letter_id,
                              counterpart_id=cid, _external=True)
        if signer["signed_document"] else None,
    }


def envelope_json(record: dict[str, Any], links: dict[int, str] | None = None
                  ) -> dict[str, Any]:
    """Describe an envelope for the API; ``links`` adds each signer's link (once, on sending)."""
    letter_id = record["letter_id"]
    signers = []
    for signer in record["signers"]:
        described = _signer_json(letter_id, signer)
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
        "executed_pdf": url_for("api.executed_pdf", letter_id=letter_id, _external=True)
        if executed else None,
        "executed_sha256": executed["sha256"] if executed else None,
        "counterparts_zip": url_for("api.counterparts_zip", letter_id=letter_id,
                                    _external=True) if executed else None,
        "audit": url_for("api.audit", letter_id=letter_id, _external=True),
    }


def _envelope_answer(letter_id: int, links: dict[int, str] | None = None) -> dict[str, Any]:
    with get_db().transaction() as session:
        record = envelope_record(session, letter_id)
        if record is None:
            get_letter(session, letter_id)  # an unknown letter is 404 for that reason
            raise NotFoundError(f"Letter {letter_id} has not been sent for signature.")
    return envelope_json(record, links)


def read_upload() -> tuple[bytes, str]:
    """Return the bytes and name of the multipart field ``file``, or answer 400 or 413."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        abort(400, "Send the PDF as the multipart form field 'file'.")
    limit = upload_limit()
    data = upload.read(limit + 1)
    if len(data) > limit:
        abort(413, f"{upload.filename[:80]} is larger than {limit // (1024 * 1024)} MB, the "
                   "largest file accepted.")
    return data, upload.filename


@bp.post("/letters/<int:letter_id>/envelope")
def send(letter_id: int) -> tuple[Response, int, dict[str, str]]:
    """Send a letter for signature; the answer holds each signer's link, shown only here."""
    body = json_body()
    raw_signers = body.get("signers")
    # No signers (or an empty list) means the letter's own: the company's chair, then the
    # executive.
    signers = None if raw_signers in (None, []) else parse_signers(raw_signers)
    signing_order = body.get("signing_order", False)
    if not isinstance(signing_order, bool):
        abort(400, "signing_order must be true or false.")
    link_days = body.get("link_days", DEFAULT_LINK_DAYS)
    if isinstance(link_days, bool) or not isinstance(link_days, int):
        abort(400, "link_days must be a whole number of days, from 1 to 365.")
    sent = send_for_signature(letter_id, signers, signing_order=signing_order,
                              link_days=link_days)
    answer = _envelope_answer(letter_id, sent.links)
    answer["emails"] = {"sent": sent.emailed, "error": sent.email_error}
    location = url_for(".envelope", letter_id=letter_id, _external=True)
    return jsonify(answer), 201, {"Location": location}


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/link")
def new_link(letter_id: int, counterpart_id: int) -> tuple[Response, int]:
    """Replace a signer's lost link: the answer holds the new one; the old one stops working."""
    sent = renew_signing_link(letter_id, counterpart_id)
    return jsonify({"counterpart_id": counterpart_id, "link": sent.links[counterpart_id],
                    "emails": {"sent": sent.emailed, "error": sent.email_error}}), 201


@bp.get("/letters/<int:letter_id>/envelope")
def envelope(letter_id: int) -> Response:
    """The newest envelope of a letter: its status and each signer's (without links)."""
    return jsonify(_envelope_answer(letter_id))


@bp.post("/letters/<int:letter_id>/envelope/void")
def void(letter_id: int) -> Response:
    """Void the envelope with ``{"reason": ...}``; its links stop working at once."""
    body = json_body()
    with get_db().transaction() as session:
        void_envelope(session, letter_id, body.get("reason"), staff_actor())
    return jsonify(_envelope_answer(letter_id))


@bp.get("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/blank.pdf")
def blank_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """A signer's counterpart to print and sign on paper."""
    return send_blank_counterpart(letter_id, counterpart_id)


@bp.get("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/signed.pdf")
def signed_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """A signed counterpart: stamped when signed online, the scan when signed on paper."""
    return send_signed_counterpart(letter_id, counterpart_id)


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload")
def upload(letter_id: int, counterpart_id: int) -> tuple[Response, int]:
    """Record a counterpart signed on paper from its scan (multipart field ``file``)."""
    data, filename = read_upload()
    with get_db().transaction() as session:
        counterpart, new, all_signed = upload_paper_counterpart(
            session, letter_id, counterpart_id, data, filename, staff_actor(),
            max_bytes=upload_limit())
        envelope_id = counterpart.envelope_id
    if all_signed:
        assemble_quietly(envelope_id)
    answer = _envelope_answer(letter_id)
    answer["new"] = new
    answer["counterpart"] = next(s for s in answer["signers"]
                                 if s["counterpart_id"] == counterpart_id)
    return jsonify(answer), 201 if new else 200


@bp.post("/letters/<int:letter_id>/assembly/retry")
def retry(letter_id: int) -> Response:
    """Assemble the executed PDF again after a failure (or wait for the one under way)."""
    executed_document(letter_id)
    return jsonify(_envelope_answer(letter_id))


@bp.get("/letters/<int:letter_id>/executed.pdf")
def executed_pdf(letter_id: int) -> Response:
    """The executed PDF: 409 until every counterpart is signed, then the sealed file."""
    return send_executed_pdf(letter_id)


@bp.get("/letters/<int:letter_id>/counterparts.zip")
def counterparts_zip(letter_id: int) -> Response:
    """The executed PDF, every signed counterpart and audit.json, in one zip."""
    return send_counterparts_zip(letter_id)


@bp.get("/letters/<int:letter_id>/audit")
def audit(letter_id: int) -> Response:
    """The audit record: the letter, the envelope and its signers, the chain check, events."""
    return jsonify(audit_json(letter_id))
