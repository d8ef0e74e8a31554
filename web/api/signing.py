"""The public API: what the signing page does, as JSON (the token in the path is the
credential), and the verification of an executed PDF anyone may hand in.

A link whose signer must confirm their email answers 403 with ``code`` ``identity`` until the
code is entered: ``POST /api/sign/<token>/code`` emails one, ``POST
/api/sign/<token>/code/verify`` with ``{"code"}`` checks it and sets the same signed cookie
the signing page sets, which the client then sends with its requests.
"""

from __future__ import annotations

from flask import jsonify, url_for
from werkzeug.wrappers import Response

from workflow.envelopes import decline_counterpart, record_signature, view_signing
from workflow.models import Letter
from workflow.states import LetterStatus

from ..auth import public
from ..database import get_db
from ..execution import assembly_outcome, prepare_signed_copy, signer_actor
from ..letters.records import iso
from ..signing import (
    CONSENT_DISCLOSURE,
    check_identity_code,
    copy_urls,
    identity_tokens,
    page_urls,
    remember_identity,
    send_identity_code,
    send_signer_copy,
    signing_summary,
)
from ..verify import api_answer
from . import bp
from .execution import read_upload
from .views import json_body


@bp.get("/sign/<token>")
@public
def signing(token: str) -> Response:
    """The letter and signer behind a link; opening it records the signer's first view.

    Once signed, the link still reads until it expires: ``signed_pdf`` and ``executed_pdf``
    are the signer's copies (null until each exists), to POST to with the token alone.
    """
    database = get_db()
    with database.transaction() as session:  # read-only: the first view is written after
        summary = signing_summary(session, view_signing(session, token, signer_actor(),
                                                        identity=identity_tokens(),
                                                        views=database.activity))
    count = len(summary["page_sizes"])
    readable = summary["can_sign"]
    return jsonify(
        letter={"title": summary["title"],
                "page_count": count,
                "pages": page_urls(token, count, external=True) if readable else [],
                "pdf": url_for("signing.letter_pdf", token=token, _external=True)
                if readable else None,
                "fully_executed": summary["fully_executed"],
                "still_to_sign": summary["still_to_sign"]},
        signer={"name": summary["name"], "role": summary["role"],
                "status": summary["status"], "status_label": summary["status_label"],
                "method": summary["method"], "signed_at": iso(summary["signed_at"]),
                "time_zone": summary["time_zone"]},
        can_sign=summary["can_sign"], waiting_for=summary["waiting_for"],
        expires_at=iso(summary["expires_at"]), consent_disclosure=list(CONSENT_DISCLOSURE),
        **copy_urls(token, summary, api=True),
        page=url_for("signing.sign", token=token, _external=True))


@bp.route("/sign/<token>/signed.pdf", methods=["GET", "POST"])
@public
def signer_signed_copy(token: str) -> Response:
    """POST: the signer's own signed counterpart, once signed (the download is recorded)."""
    return send_signer_copy(token, "signed")


@bp.route("/sign/<token>/executed.pdf", methods=["GET", "POST"])
@public
def signer_executed_copy(token: str) -> Response:
    """POST: the executed letter, once every counterpart is signed (the download is
    recorded)."""
    return send_signer_copy(token, "executed")


def _letter_status(letter_id: int) -> str:
    with get_db().transaction() as session:
        letter = session.get(Letter, letter_id)
        assert letter is not None
        return letter.status


@bp.post("/sign/<token>")
@public
def sign(token: str) -> Response:
    """Sign: ``{"consent": true, "signature": {"type": "typed", "text": ...}}`` or drawn."""
    body = json_body()
    copy = prepare_signed_copy(token, consent=body.get("consent"),
                               signature=body.get("signature"), time_zone=body.get("time_zone"),
                               identity=identity_tokens())
    get_db().activity.flush(get_db())  # a first view noted by a GET comes first
    with get_db().transaction() as session:
        counterpart, all_signed = record_signature(session, token, copy, signer_actor(),
                                                   identity=identity_tokens())
        envelope_id = counterpart.envelope_id
        letter_id = counterpart.envelope.letter_id
        answer = {"status": counterpart.status, "method": counterpart.method,
                  "signed_at": iso(counterpart.signed_at), "time_zone": counterpart.time_zone,
                  "signed_on": counterpart.signed_on.isoformat() if counterpart.signed_on
                  else None, "all_signed": all_signed}
    # The last signature's transaction enqueued the assembly: say where it stands now
    # (``running`` until a worker has made the executed letter; this link then serves it).
    assembly = assembly_outcome(envelope_id) if all_signed else None
    status = _letter_status(letter_id)
    return jsonify(**answer, letter_status=status, assembly=assembly,
                   fully_executed=status == LetterStatus.FULLY_EXECUTED.value)


@bp.post("/sign/<token>/decline")
@public
def decline(token: str) -> Response:
    """Decline to sign with ``{"reason": ...}``; the letter is then declined."""
    body = json_body()
    get_db().activity.flush(get_db())  # a first view noted by a GET comes first
    with get_db().transaction() as session:
        counterpart = decline_counterpart(session, token, reason=body.get("reason"),
                                          actor=signer_actor(), identity=identity_tokens())
        answer = {"status": counterpart.status, "declined_at": iso(counterpart.declined_at),
                  "reason": counterpart.decline_reason}
    return jsonify(answer)


@bp.post("/sign/<token>/code")
@public
def signer_code(token: str) -> tuple[Response, int]:
    """Email the signer a one-time code: 202 once the mail server took it, 503 if it did not,
    429 when asked again within a minute or more than five times an hour."""
    sent, message = send_identity_code(token)
    return jsonify(sent=sent, message=message), 202 if sent else 503


@bp.post("/sign/<token>/code/verify")
@public
def signer_code_verify(token: str) -> Response | tuple[Response, int]:
    """Check ``{"code"}``: 200 and the cookie that opens the link, or 401 with the tries
    left."""
    body = json_body()
    check = check_identity_code(token, body.get("code"))
    if not check.ok:
        return jsonify(error=check.message, tries_left=check.tries_left), 401
    assert check.browser_token is not None
    return remember_identity(jsonify(verified=True, message=check.message),
                             check.browser_token)


@bp.post("/verify")
@public
def verify() -> Response:
    """Check a PDF (multipart field ``file``): is it an executed letter of ours, unchanged?"""
    data, _ = read_upload()
    return api_answer(data)
