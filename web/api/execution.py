"""The API of execution in counterparts, for staff tools: send, follow, void, paper uploads,
the executed PDF, the signed counterparts, their zip and the audit record.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, request, url_for
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.wrappers import Response

from workflow import representations
from workflow.envelopes import (
    DEFAULT_LINK_DAYS,
    PaperChoices,
    parse_signers,
    undo_paper_counterpart,
    upload_paper_counterpart,
    void_envelope,
)
from workflow.errors import NotFoundError
from workflow.letters import get_letter
from workflow.models import utcnow
from workflow.notices import ReminderTooSoon, parse_reminders

from ..database import get_db
from ..downloads import require_post
from ..execution import (
    SentEnvelope,
    audit_json,
    envelope_record,
    remind_signer,
    renew_signing_link,
    retry_letter_assembly,
    send_blank_counterpart,
    send_counterparts_zip,
    send_executed_pdf,
    send_for_signature,
    send_signed_counterpart,
    staff_actor,
    upload_limit,
)
from ..letters.paper import check_upload
from ..letters.redline import review_json, review_warnings
from . import bp
from .views import base_url, json_body

__all__ = ["envelope_json", "read_upload"]


def envelope_json(record: dict[str, Any], links: dict[int, str] | None = None
                  ) -> dict[str, Any]:
    """Describe an envelope for the API; ``links`` adds each signer's link (once, on sending).

    The same representation as a webhook's (:func:`workflow.representations.envelope_json`),
    with addresses on the host this request came to, and the reminders and notices
    (:mod:`workflow.notices`): the envelope's ``reminders`` settings, each signer's
    ``reminders_sent``, ``next_reminder_at`` and ``remind_allowed_at``, and ``notices``.
    """
    answer = representations.envelope_json(record, base_url(), links)
    return {**answer, **_reminders_json(record, answer)}


def _reminders_json(record: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The reminder settings, each signer's reminders, and every notice, as JSON values."""
    iso = representations.iso
    by_id = {s["counterpart_id"]: s for s in record["signers"]}
    for signer in answer["signers"]:
        mine = by_id[signer["counterpart_id"]]
        signer.update(reminders_sent=mine.get("reminders_sent", 0),
                      next_reminder_at=iso(mine.get("next_reminder_at")),
                      remind_allowed_at=iso(mine.get("remind_allowed_at")),
                      can_remind=bool(mine.get("can_remind")))
    return {"reminders": record.get("reminders"), "notices": [{
        "id": n["id"], "kind": n["kind"], "to": n["to_email"], "to_name": n["to_name"],
        "audience": n["audience"], "counterpart_id": n["counterpart_id"],
        "status": n["status"], "attempts": n["attempts"], "answer": n["answer"],
        "created_at": iso(n["created_at"]), "sent_at": iso(n["sent_at"]),
        "next_attempt_at": iso(n["next_attempt_at"]), "attachment": n["attachment"],
        "download": n["download"]} for n in record.get("notices", [])]}


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
    # No signers (or an empty list) means the template's parties, in signing order, named
    # (and emailed) from the letter's terms. Given signers are the parties, each once.
    signers = None if raw_signers in (None, []) else parse_signers(raw_signers)
    signing_order = body.get("signing_order", False)
    if not isinstance(signing_order, bool):
        abort(400, "signing_order must be true or false.")
    reminders = parse_reminders(body.get("reminders"))
    # Never block (see web/letters/redline); the parties as they will be sent to.
    warnings = review_json(review_warnings(letter_id, signers))
    sent = send_for_signature(letter_id, signers, signing_order=signing_order,
                              link_days=_link_days(body), reminders=reminders)
    answer = _envelope_answer(letter_id, sent.links)
    answer["warnings"] = warnings
    answer["emails"] = _emails(sent)
    location = url_for(".envelope", letter_id=letter_id, _external=True)
    return jsonify(answer), 201, {"Location": location}


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/link")
def new_link(letter_id: int, counterpart_id: int) -> tuple[Response, int]:
    """Replace a signer's lost or expired link, for ``{"link_days": 1..365}`` days (30): the
    answer holds the new link and the signer as they now stand; the old link stops working."""
    body = json_body() if request.get_data().strip() else {}
    sent = renew_signing_link(letter_id, counterpart_id, link_days=_link_days(body))
    answer = _envelope_answer(letter_id)
    signer = next(s for s in answer["signers"] if s["counterpart_id"] == counterpart_id)
    return jsonify({"counterpart_id": counterpart_id, "link": sent.links[counterpart_id],
                    "signer": signer, "expires_at": answer["expires_at"],
                    "emails": _emails(sent)}), 201


def _link_days(body: dict[str, Any]) -> int:
    link_days = body.get("link_days", DEFAULT_LINK_DAYS)
    if isinstance(link_days, bool) or not isinstance(link_days, int):
        abort(400, "link_days must be a whole number of days, from 1 to 365.")
    return link_days


def _emails(sent: SentEnvelope) -> dict[str, Any]:
    """What is known of the invitations when answering: ``sent`` (the mail server accepted
    them), ``failed`` ([{name, email, error, retrying}]), ``queued`` (on their way: a job
    emails them)."""
    return {"sent": sent.emailed, "failed": sent.failed, "queued": sent.queued,
            "error": sent.email_error}


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/remind")
def remind(letter_id: int, counterpart_id: int) -> tuple[Response, int, dict[str, str]]:
    """Email a signer a reminder with their link now: 202 with the reminder as it stands
    (``status`` queued, sent or failed); 429 within an hour of their last reminder, with
    ``allowed_at`` and ``Retry-After``; 409 when they cannot be reminded."""
    try:
        reminder = remind_signer(letter_id, counterpart_id)
    except ReminderTooSoon as exc:
        wait = max(1, int((exc.allowed_at - utcnow()).total_seconds()) + 1)
        return (jsonify(error=str(exc), code=exc.code,
                        allowed_at=representations.iso(exc.allowed_at)),
                429, {"Retry-After": str(wait)})
    iso = representations.iso
    return jsonify({**reminder, "next_reminder_at": iso(reminder["next_reminder_at"]),
                    "remind_allowed_at": iso(reminder["remind_allowed_at"])}), 202, {}


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


@bp.route("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/blank.pdf",
          methods=["GET", "POST"])
def blank_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """A signer's counterpart to print and sign on paper."""
    require_post()  # recorded: see web/downloads.py
    return send_blank_counterpart(letter_id, counterpart_id)


# Recorded downloads are POSTs (a GET answers 405 saying so): see web/downloads.py.
@bp.route("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/signed.pdf",
          methods=["GET", "POST"])
def signed_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """A signed counterpart: stamped when signed online, the scan when signed on paper."""
    require_post()
    return send_signed_counterpart(letter_id, counterpart_id)


def _flag(name: str) -> bool:
    """Read a true/false form field of a multipart request (absent is false), or answer 400."""
    value = request.form.get(name, "").strip().lower()
    if value in ("", "false", "0", "no", "off"):
        return False
    if value in ("true", "1", "yes", "on"):
        return True
    abort(400, f"{name} must be true or false.")


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload")
def upload(letter_id: int, counterpart_id: int) -> tuple[Response, int]:
    """Record a counterpart signed on paper from its scan, in one request.

    Multipart fields: ``file`` (the PDF), ``signed_on`` (YYYY-MM-DD, required), ``confirm``
    (true accepts a scan on whose signature line no signature was found), ``override_order``
    and ``reason`` (record it before earlier signers in a signing order).
    """
    data, filename = read_upload()
    choices = PaperChoices(signed_on=request.form.get("signed_on"),
                           accept_without_ink=_flag("confirm"),
                           override_order=_flag("override_order"),
                           reason=request.form.get("reason"))
    checked = check_upload(letter_id, counterpart_id, data, filename, upload_limit())
    with get_db().transaction() as session:
        _, new, _ = upload_paper_counterpart(
            session, letter_id, counterpart_id, data, filename, staff_actor(),
            choices=choices, max_bytes=upload_limit(), checked=checked)
    # The last counted upload enqueued the assembly; the envelope's "assembly" says where it is.
    answer = _envelope_answer(letter_id)
    answer["new"] = new
    answer["counterpart"] = next(s for s in answer["signers"]
                                 if s["counterpart_id"] == counterpart_id)
    return jsonify(answer), 201 if new else 200


@bp.delete("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/upload")
def undo_upload(letter_id: int, counterpart_id: int) -> Response:
    """Undo the paper upload that counted a counterpart as signed (409 once the letter is
    executed or its executed PDF is being assembled); the scan stays stored."""
    with get_db().transaction() as session:
        undo_paper_counterpart(session, letter_id, counterpart_id, staff_actor())
    answer = _envelope_answer(letter_id)
    answer["counterpart"] = next(s for s in answer["signers"]
                                 if s["counterpart_id"] == counterpart_id)
    return jsonify(answer)


@bp.post("/letters/<int:letter_id>/assembly/retry")
def retry(letter_id: int) -> tuple[Response, int]:
    """Assemble a failed executed PDF again: 202 with the envelope while its job runs, 200
    once the executed PDF is made, 503 if it failed again; 409 when nothing failed."""
    outcome = retry_letter_assembly(letter_id)
    answer = _envelope_answer(letter_id)
    if outcome == "failed":
        raise ServiceUnavailable(f"The executed PDF could not be assembled again: "
                                 f"{answer['assembly']['error']}")
    return jsonify(answer), 200 if outcome == "done" else 202


@bp.route("/letters/<int:letter_id>/executed.pdf", methods=["GET", "POST"])
def executed_pdf(letter_id: int) -> Response:
    """The executed PDF: 409 until every counterpart is signed, then the sealed file."""
    require_post()
    return send_executed_pdf(letter_id)


@bp.route("/letters/<int:letter_id>/counterparts.zip", methods=["GET", "POST"])
def counterparts_zip(letter_id: int) -> Response:
    """The executed PDF, every signed counterpart and audit.json, in one zip."""
    require_post()
    return send_counterparts_zip(letter_id)


@bp.get("/letters/<int:letter_id>/audit")
def audit(letter_id: int) -> Response:
    """The audit record: the letter, the envelope and its signers, the chain check, events."""
    return jsonify(audit_json(letter_id))
