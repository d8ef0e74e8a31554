"""The letter page's execution in counterparts: send for signature, follow each counterpart,
paper copies, void, retry an assembly, and the downloads of signed and executed documents.

The signing links are shown once, on the page staff see right after sending: only their
SHA-256 is stored, so they travel from the sending request to that page on the server, kept
for the signed-in session only, encrypted, for a few minutes at most, and deleted once shown
(see :func:`web.auth.keep_shown_once`); the session cookie never holds them. A lost or
expired link is replaced with "New link".
"""

from __future__ import annotations

import json
from typing import Any

from flask import flash, redirect, request, url_for
from werkzeug.wrappers import Response

from workflow.envelopes import DEFAULT_LINK_DAYS, void_envelope
from workflow.errors import CounterpartError, NotFoundError
from workflow.letters import get_letter
from workflow.notices import ReminderTooSoon
from workflow.states import LetterStatus

from ..auth import keep_shown_once, take_shown_once
from ..database import get_db
from ..downloads import require_post, send_document
from ..execution import (
    SentEnvelope,
    audit_json,
    remind_signer,
    renew_signing_link,
    retry_letter_assembly,
    send_blank_counterpart,
    send_counterparts_zip,
    send_executed_pdf,
    send_for_signature,
    send_signed_counterpart,
    smtp_settings,
    staff_actor,
)
from . import bp
from .forms import SendForm

__all__ = ["issued_links", "can_send", "ISSUED_LINKS"]

ISSUED_LINKS = "issued_links"
SENDABLE = (LetterStatus.GENERATED.value, LetterStatus.VOIDED.value)


def can_send(letter: dict[str, Any], version: dict[str, Any]) -> bool:
    """Say whether the letter page offers "Send for signature" for the version shown."""
    pdf = version["documents"].get("letter_pdf")
    return (letter["status"] in SENDABLE and version["current"]
            and pdf is not None and pdf["status"] == "ready")


def issued_links(letter_id: int) -> dict[str, Any] | None:
    """Take the links just issued for this letter off the server, to show them once."""
    issued = take_shown_once(f"{ISSUED_LINKS}:{letter_id}")
    if not isinstance(issued, dict) or issued.get("letter_id") != letter_id:
        return None
    return {**issued, "links": {int(cid): url for cid, url in issued["links"].items()}}


def _to_letter(letter_id: int, anchor: str = "signatures") -> Response:
    return redirect(url_for(".show", letter_id=letter_id, _anchor=anchor), code=303)


@bp.post("/letters/<int:letter_id>/envelope")
def send(letter_id: int) -> Response | tuple[str, int]:
    """Send the letter for signature with the signers of the form."""
    from .views import render_letter

    form = SendForm.from_request(request.form)
    try:
        sent = send_for_signature(letter_id, form.signer_specs(),
                                  signing_order=form.signing_order,
                                  link_days=form.link_days_value(),
                                  reminders=form.reminders_value())
    except NotFoundError:
        raise
    except CounterpartError as exc:
        form.fail(exc)
        return render_letter(letter_id, send_form=form, status=422)
    _keep_links(letter_id, sent)
    flash("Sent for signature. Copy each signer's link below: it is shown only now.",
          "success")
    return _to_letter(letter_id)


def _keep_links(letter_id: int, sent: SentEnvelope) -> None:
    """Keep the links just issued, with what the mail server did, to show them once."""
    keep_shown_once(f"{ISSUED_LINKS}:{letter_id}", {
        "letter_id": letter_id, "envelope_id": sent.envelope_id,
        "links": {str(cid): url for cid, url in sent.links.items()},
        "emailed": sent.emailed, "failed": sent.failed, "email_error": sent.email_error,
        "queued": sent.queued,
        "mail_configured": smtp_settings() is not None})


def _link_days(raw: str | None) -> int:
    """Read the lifetime of a new link from the form: whole days, 1 to 365 (30 if blank)."""
    if raw is None or not raw.strip():
        return DEFAULT_LINK_DAYS
    try:
        days = int(raw.strip())
    except ValueError:
        raise CounterpartError(f"link_days: {raw.strip()[:20]!r} is not a whole number of "
                               "days; links last between 1 and 365 days.") from None
    return days


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/link")
def new_link(letter_id: int, counterpart_id: int) -> Response:
    """Replace a signer's lost or expired link (for ``link_days`` days) and show it once."""
    try:
        sent = renew_signing_link(letter_id, counterpart_id,
                                  link_days=_link_days(request.form.get("link_days")))
    except NotFoundError:
        raise
    except CounterpartError as exc:
        flash(f"No new link was made: {exc}", "error")
        return _to_letter(letter_id)
    _keep_links(letter_id, sent)
    flash("A new link was made; the earlier one no longer works. Copy it below: it is shown "
          "only now.", "success")
    return _to_letter(letter_id)


@bp.post("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/remind")
def remind(letter_id: int, counterpart_id: int) -> Response:
    """Email a signer a reminder with their link now ("Remind now"), at most once an hour."""
    try:
        reminder = remind_signer(letter_id, counterpart_id)
    except NotFoundError:
        raise
    except ReminderTooSoon as exc:
        flash(str(exc), "error")
        return _to_letter(letter_id, "notices")
    except CounterpartError as exc:
        flash(f"No reminder was sent: {exc}", "error")
        return _to_letter(letter_id, "notices")
    to = reminder["to"]
    if reminder["status"] == "sent":
        flash(f"A reminder was emailed to {to}: the mail server accepted it.", "success")
    elif reminder["status"] == "failed":
        flash(f"The reminder to {to} was not accepted by the mail server: "
              f"{reminder['answer']}", "error")
    else:
        flash(f"A reminder to {to} is on its way; its status is under Emails.", "success")
    return _to_letter(letter_id, "notices")


@bp.post("/letters/<int:letter_id>/envelope/void")
def void(letter_id: int) -> Response:
    """Void the envelope with a reason; its links stop working at once."""
    try:
        with get_db().transaction() as db_session:
            void_envelope(db_session, letter_id, request.form.get("reason", ""), staff_actor())
    except NotFoundError:
        raise
    except CounterpartError as exc:
        flash(f"The envelope was not voided: {exc}", "error")
    else:
        flash("Voided: the signing links no longer work. You may change the terms or send the "
              "letter again.", "success")
    return _to_letter(letter_id)


@bp.post("/letters/<int:letter_id>/assembly/retry")
def retry_assembly(letter_id: int) -> Response:
    """Assemble the executed PDF again after a failure (a new background job)."""
    try:
        outcome = retry_letter_assembly(letter_id)
    except NotFoundError:
        raise
    except CounterpartError as exc:
        flash(str(exc), "error")
    else:
        if outcome == "done":
            flash("The executed PDF is assembled and sealed.", "success")
        elif outcome == "failed":
            flash("The executed PDF could not be assembled again; the reason is below.",
                  "error")
        else:
            flash("Assembling the executed PDF again; this page shows it when it is ready.",
                  "info")
    return _to_letter(letter_id)


@bp.route("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/blank.pdf",
          methods=["GET", "POST"])
def blank_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """A signer's counterpart to print and sign on paper."""
    require_post()  # recorded: see web/downloads.py
    return send_blank_counterpart(letter_id, counterpart_id)


# Recorded downloads: the page's buttons POST (a GET answers 405 saying so), see downloads.py.
@bp.route("/letters/<int:letter_id>/counterparts/<int:counterpart_id>/signed.pdf",
          methods=["GET", "POST"])
def signed_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """A signed counterpart: stamped when signed online, the scan when signed on paper."""
    require_post()
    return send_signed_counterpart(letter_id, counterpart_id)


@bp.route("/letters/<int:letter_id>/executed.pdf", methods=["GET", "POST"])
def executed_pdf(letter_id: int) -> Response:
    """The sealed executed PDF (waiting for an assembly under way)."""
    require_post()
    return send_executed_pdf(letter_id)


@bp.route("/letters/<int:letter_id>/counterparts.zip", methods=["GET", "POST"])
def counterparts_zip(letter_id: int) -> Response:
    """The executed PDF, each signed counterpart and the audit record, in one zip."""
    require_post()
    return send_counterparts_zip(letter_id)


@bp.route("/letters/<int:letter_id>/audit.json")
def audit(letter_id: int) -> Response:
    """The audit record as a JSON file."""
    record = audit_json(letter_id)
    with get_db().transaction() as db_session:
        stem = get_letter(db_session, letter_id).file_stem
    data = json.dumps(record, indent=2, ensure_ascii=False).encode("utf-8")
    return send_document(data, filename=f"{stem}-audit.json",
                         media_type="application/json", sha256=None)
