"""Execution in counterparts as the app runs it: the seal, who is acting, signing links, the
emails to signers, following and retrying the assembly after the last signature (a background
job: :func:`workflow.envelopes.assemble_envelope_job`), envelopes as plain values, and the
downloads of signed and executed documents.

The staff pages (:mod:`web.letters.execution`), the JSON API (:mod:`web.api.execution`) and the
signers' pages (:mod:`web.signing`) share these, so each of their views stays a few lines:
parse the request, call one function here or in :mod:`workflow.envelopes`, answer.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.wrappers import Response

from workflow.audit import record_event
from workflow.envelopes import (
    DEFAULT_LINK_DAYS,
    MAX_UPLOAD_BYTES,
    Actor,
    SignedCopy,
    SignerSpec,
    assembly_state,
    audit_record,
    counterpart_of,
    current_envelope,
    letter_pdf_for,
    prepare_signature,
    reissue_link,
    retry_assembly,
    send_envelope,
)
from workflow.errors import ConversionError, StateError
from workflow.letters import blob_bytes, get_letter, get_version, latest_document
from workflow.mail import SmtpSettings
from workflow.models import Counterpart, Document, Envelope, Event, Letter, Notice
from workflow.notices import (
    DEFAULT_REMINDERS,
    ReminderSettings,
    keep_link,
    letter_notices,
    remind_allowed_at,
    remind_now,
    reminder_record,
    reminders_accepted,
    set_up_notices,
)
from workflow.representations import describe_envelope, signature_progress
from workflow.seal import Sealer, load_or_create_sealer
from workflow.states import (
    OPEN_COUNTERPART_STATUSES,
    CounterpartStatus,
    EnvelopeStatus,
    LetterStatus,
)
from workflow.text import file_slug

from .database import get_db
from .documents import get_documents
from .downloads import require_post, send_document
from .jobs import smtp_settings_from

__all__ = [
    "get_sealer", "staff_actor", "signer_actor", "signing_link", "letter_title",
    "SentEnvelope", "send_for_signature", "smtp_settings", "assembly_outcome",
    "retry_letter_assembly",
    "remind_signer",
    "prepare_signed_copy",
    "envelope_record", "signature_progress", "executed_document", "send_executed_pdf",
    "send_signed_counterpart", "send_blank_counterpart", "send_counterparts_zip",
    "audit_json", "upload_limit", "file_slug", "OPEN_STATUSES",
]

log = logging.getLogger(__name__)
SEALER = "counterpart.sealer"
_SEALER_LOCK = threading.Lock()
OPEN_STATUSES = OPEN_COUNTERPART_STATUSES
PDF_TYPE = "application/pdf"


# --- the seal, the actor, the link ---------------------------------------------------------------

def get_sealer() -> Sealer:
    """Return the app's seal, loading it (or making the self-signed one) on first use."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _SEALER_LOCK:
        sealer = app.extensions.get(SEALER)
        if sealer is None:
            config = app.config
            password = config.get("SEAL_PKCS12_PASSWORD")
            sealer = load_or_create_sealer(
                config["DATA_DIR"], pkcs12_path=config.get("SEAL_PKCS12"),
                pkcs12_password=password.encode("utf-8") if password else None,
                timestamp_url=config.get("TIMESTAMP_URL"))
            app.extensions[SEALER] = sealer
        return sealer


def _actor(name: str) -> Actor:
    return Actor(name, request.remote_addr, request.user_agent.string or None)


def staff_actor() -> Actor:
    """The signed-in member of staff making this request, with its IP address and browser."""
    return _actor(g.user.email)


def signer_actor() -> Actor:
    """The holder of a signing link making this request (the domain names the signer)."""
    return _actor("signer")


def signing_link(token: str) -> str:
    """Return the full address of a signing link."""
    return url_for("signing.sign", token=token, _external=True)


def letter_title(letter: Letter) -> str:
    """Name a letter as its signers and the certificate of completion see it: its title,
    from its template's ``document_title``."""
    return letter.title


def upload_limit() -> int:
    """The largest scan accepted: the domain's limit, or the request limit if smaller."""
    request_limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return min(MAX_UPLOAD_BYTES, request_limit) if request_limit else MAX_UPLOAD_BYTES


# --- sending ----------------------------------------------------------------------------------

@dataclass
class SentEnvelope:
    """An envelope just sent (or a link renewed): each counterpart's one-time link, and what
    is known of each invitation when the answer is made.

    Invitations are emailed by a job (:mod:`workflow.notices`) once the envelope is committed:
    ``emailed`` names the signers whose invitation the mail server accepted, ``failed`` those
    it did not take, with the reason (``[{"name", "email", "error", "retrying"}]``), and
    ``queued`` those whose email is still on its way (a worker sends it shortly).
    """

    envelope_id: str
    links: dict[int, str]
    emailed: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)

    @property
    def email_error(self) -> str | None:
        """One sentence naming the invitations the mail server did not take, or None."""
        if not self.failed:
            return None
        parts = "; ".join(f"{f['name']} <{f['email']}>: {f['error']}" for f in self.failed)
        again = (" Each is tried again a few times; the letter's notices show how it goes."
                 if any(f.get("retrying") for f in self.failed) else "")
        return (f"The mail server did not take every signing email ({parts}).{again} Those "
                "links are ready to be handed over: copy them from this page.")


def smtp_settings() -> SmtpSettings | None:
    """Return the outgoing mail settings, or None when no SMTP host is configured."""
    settings: SmtpSettings | None = smtp_settings_from(current_app.config)
    return settings


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


def _wait_for_letter_pdf(letter_id: int) -> None:
    """Wait for the newest version's PDF if it is still being made, as a download would."""
    with get_db().transaction() as session:
        letter = get_letter(session, letter_id)
        if letter.status != LetterStatus.DRAFT.value:
            return
        document = latest_document(session, get_version(session, letter), "letter_pdf")
        if document.status not in ("pending", "generating"):
            return
        document_id = document.id
    get_documents().wait(document_id)


def _link_events(session: Session, envelope_id: str, counterpart_ids: list[int]
                 ) -> dict[int, int]:
    """The newest "sent"/"new_link" event of each counterpart: its invitation answers it."""
    rows = session.execute(select(Event.counterpart_id, Event.id).where(
        Event.envelope_id == envelope_id, Event.counterpart_id.in_(counterpart_ids),
        Event.type.in_(("sent", "new_link"))).order_by(Event.id))
    return {cid: event_id for cid, event_id in rows if cid is not None}


def _report_invitations(sent: SentEnvelope, invited: dict[int, tuple[str, str, int]]) -> None:
    """Say what is known now of each invitation (``invited``: counterpart id -> name, email
    and the id of the event it answers): sent, failed, or still queued."""
    if not invited:
        return
    with get_db().transaction() as session:
        notices = {n.event_id: n for n in session.scalars(select(Notice).where(
            Notice.kind == "invitation",
            Notice.event_id.in_([event_id for _, _, event_id in invited.values()])))}
    for name, email, event_id in invited.values():
        notice = notices.get(event_id)
        who = f"{name} <{email}>"
        if notice is not None and notice.status == "sent":
            sent.emailed.append(who)
        elif notice is not None and notice.status in ("failed", "cancelled"):
            log.warning("the signing email to %s was not accepted: %s", email, notice.answer)
            sent.failed.append({"name": name, "email": email, "error": notice.answer or "",
                                "retrying": notice.next_attempt_at is not None})
        else:
            sent.queued.append(who)


def send_for_signature(letter_id: int, signers: list[SignerSpec] | None, *,
                       signing_order: bool, link_days: int,
                       reminders: ReminderSettings = DEFAULT_REMINDERS) -> SentEnvelope:
    """Send a letter for execution; the signers who have an address are emailed by a job.

    A letter whose PDF is still being generated is sent once it is ready. Counterparts start
    "ready"; each becomes "sent" only once the mail server accepts its invitation. A failure
    to email does not undo the envelope: the links stay valid and staff hand them over. Each
    link is kept encrypted for the reminders (``reminders``; see :mod:`workflow.notices`).
    """
    _wait_for_letter_pdf(letter_id)
    mail = smtp_settings() is not None
    with get_db().transaction() as session:
        envelope, issued = send_envelope(session, letter_id, signers, staff_actor(),
                                         signing_order=signing_order, link_days=link_days,
                                         email_invitations=mail)
        # The sender is told of a decline or completion; each link is kept for reminders.
        set_up_notices(session, envelope, issued, secret_key=_secret_key(),
                       reminders=reminders, sender_id=g.user.id)
        links = {link.counterpart_id: signing_link(link.token) for link in issued}
        counterparts = list(session.scalars(select(Counterpart).where(
            Counterpart.envelope_id == envelope.id).order_by(Counterpart.position)))
        events = _link_events(session, envelope.id, [c.id for c in counterparts])
        invited = {c.id: (c.name, c.email, events[c.id]) for c in counterparts
                   if c.email and mail and c.id in events}
        sent = SentEnvelope(envelope.id, links)
    _report_invitations(sent, invited)
    return sent


def renew_signing_link(letter_id: int, counterpart_id: int, *,
                       link_days: int = DEFAULT_LINK_DAYS) -> SentEnvelope:
    """Replace one counterpart's lost or expired link for ``link_days`` days; the new one is
    emailed by a job when mail is set up (and kept for the reminders)."""
    mail = smtp_settings() is not None
    with get_db().transaction() as session:
        issued = reissue_link(session, letter_id, counterpart_id, staff_actor(),
                              link_days=link_days, email_invitation=mail)
        keep_link(session, issued.counterpart_id, issued.token, _secret_key())
        counterpart = counterpart_of(session, letter_id, counterpart_id)
        envelope = counterpart.envelope
        events = _link_events(session, envelope.id, [counterpart.id])
        invited = ({counterpart.id: (counterpart.name, counterpart.email, events[counterpart.id])}
                   if counterpart.email and mail else {})
        sent = SentEnvelope(envelope.id, {counterpart_id: signing_link(issued.token)})
    _report_invitations(sent, invited)
    return sent


def remind_signer(letter_id: int, counterpart_id: int) -> dict[str, Any]:
    """Queue a reminder to one signer now ("Remind now"); return the notice as it stands
    when the answer is made (``status`` ``queued``, or already ``sent`` or ``failed``).

    Raises ReminderTooSoon within an hour of the signer's last reminder, StateError when the
    signer cannot be reminded.
    """
    with get_db().transaction() as session:
        notice = remind_now(session, letter_id, counterpart_id, g.user.email,
                            mail_configured=smtp_settings() is not None,
                            secret_key=_secret_key())
        notice_id = notice.id
    with get_db().transaction() as session:
        stored = session.get(Notice, notice_id)
        counterpart = session.get(Counterpart, counterpart_id)
        assert stored is not None and counterpart is not None
        return {"notice_id": stored.id, "counterpart_id": counterpart_id,
                "to": stored.to_email, "status": stored.status, "answer": stored.answer,
                "attempts": stored.attempts,
                "reminders_sent": reminders_accepted(session, [counterpart_id]).get(
                    counterpart_id, 0),
                "next_reminder_at": counterpart.next_reminder_at,
                "remind_allowed_at": remind_allowed_at(counterpart)}


# --- signing and assembly -------------------------------------------------------------------

def prepare_signed_copy(token: str, *, consent: Any, signature: Any,
                        time_zone: Any, identity: list[str] | None = None) -> SignedCopy:
    """Make the counterpart a link's holder signs, with the app's LibreOffice.

    Call it outside any transaction, then record the copy with
    :func:`workflow.envelopes.record_signature`: the conversion holds up no other request. If
    LibreOffice fails, nothing is signed and the answer is 503 (try again), not the signer's
    mistake.
    """
    try:
        return prepare_signature(get_db(), token, consent=consent, signature=signature,
                                 time_zone=time_zone, converter=get_documents().converter,
                                 identity=identity)
    except ConversionError as exc:
        raise ServiceUnavailable(f"Your signed copy could not be made just now ({exc}); "
                                 "nothing was signed. Please try again in a minute.") from exc


def assembly_outcome(envelope_id: str) -> str | None:
    """Say where an envelope's executed PDF stands now: None (not every counterpart is
    signed), ``running`` (queued or being assembled), ``failed`` or ``done``.

    Right after the last signature's request commits, a queue in immediate mode has already
    run the assembly; with workers it is usually still ``running``.
    """
    with get_db().transaction() as session:
        return assembly_state(session, envelope_id)


def retry_letter_assembly(letter_id: int) -> str | None:
    """Assemble a letter's failed executed PDF again (a new job); return where it stands then.

    Raises StateError (409) when there is no failed assembly to retry: not every counterpart
    is signed, or the executed PDF is made or being made.
    """
    with get_db().transaction() as session:
        envelope = _ready_envelope(session, letter_id)
        envelope_id = envelope.id
        if not retry_assembly(session, envelope_id):
            state = assembly_state(session, envelope_id)
            raise StateError("The executed PDF is already made; there is nothing to retry."
                             if state == "done" else
                             "The executed PDF is being assembled; there is nothing to retry.")
    return assembly_outcome(envelope_id)


def _ready_envelope(session: Session, letter_id: int) -> Envelope:
    """Return the letter's envelope if it is (or is about to be) executed, else raise."""
    envelope = current_envelope(session, letter_id)
    if envelope is None:
        get_letter(session, letter_id)  # NotFoundError for an unknown letter
        raise StateError("This letter has not been sent for signature, so there is no "
                         "executed PDF.")
    if envelope.executed_document_id is not None:
        return envelope
    if envelope.status != EnvelopeStatus.OUT.value:
        raise StateError(f"This letter's envelope is {envelope.status}; it will not be "
                         "executed. Send the letter again to start over.")
    signed = sum(c.status == CounterpartStatus.SIGNED.value for c in envelope.counterparts)
    total = len(envelope.counterparts)
    if signed < total:
        raise StateError(f"{signed} of {total} counterparts are signed; the executed PDF is "
                         "made when every counterpart is signed.")
    return envelope


def executed_document(letter_id: int) -> Document:
    """Return the executed PDF of a letter, waiting for its assembly (a background job).

    Reads the database until the executed PDF is there; never assembles it here. Raises
    StateError (409) until every counterpart is signed, and ServiceUnavailable (503) when the
    assembly failed (staff retry it from the letter page) or is still under way after
    ``DOWNLOAD_WAIT_SECONDS``.
    """
    deadline = time.monotonic() + current_app.config["DOWNLOAD_WAIT_SECONDS"]
    delay = 0.1
    while True:
        with get_db().transaction() as session:
            envelope = _ready_envelope(session, letter_id)
            if envelope.executed_document_id is not None:
                document = session.get(Document, envelope.executed_document_id)
                assert document is not None
                return document
            failed, error = envelope.assembly_state == "failed", envelope.assembly_error
        if failed:
            raise ServiceUnavailable(f"The executed PDF could not be assembled: {error} "
                                     "Staff can retry it from the letter page.")
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServiceUnavailable("The executed PDF is still being assembled; try again in "
                                     "a minute.")
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, 1.0)


# --- reading envelopes ---------------------------------------------------------------------------

def envelope_record(session: Session, letter_id: int) -> dict[str, Any] | None:
    """Describe a letter's newest envelope and its counterparts, or None if never sent (see
    :func:`workflow.representations.describe_envelope`)."""
    envelope = current_envelope(session, letter_id)
    if envelope is None:
        return None
    record = describe_envelope(session, envelope)
    # Reminders and notices (workflow.notices): the settings, each signer's, every email.
    reminders = reminder_record(envelope)
    record["reminders"] = reminders["settings"]
    for signer in record["signers"]:
        signer.update(reminders["signers"][signer["counterpart_id"]])
    record["notices"] = letter_notices(session, envelope.id)
    record["mail_configured"] = smtp_settings() is not None
    return record


# --- downloads ---------------------------------------------------------------------------------

def _record_download(session: Session, letter_id: int, filename: str, *,
                     envelope_id: str | None, counterpart_id: int | None = None) -> None:
    require_post()  # a GET never writes to the audit record; these downloads are POSTs
    actor = staff_actor()
    record_event(session, letter_id, "downloaded", actor=actor.name, ip=actor.ip,
                 user_agent=actor.user_agent, envelope_id=envelope_id,
                 counterpart_id=counterpart_id, detail={"document": filename})


def send_executed_pdf(letter_id: int) -> Response:
    """Answer with the executed PDF (waiting for its assembly), recording the download."""
    document = executed_document(letter_id)
    assert document.blob_sha256 is not None
    with get_db().transaction() as session:
        data = blob_bytes(session, document.blob_sha256)
        envelope = current_envelope(session, letter_id)
        _record_download(session, letter_id, document.filename,
                         envelope_id=envelope.id if envelope else None)
    return send_document(data, filename=document.filename, media_type=PDF_TYPE,
                         sha256=document.blob_sha256)


def send_signed_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """Answer with a signed counterpart (stamped, or the scan as uploaded), recording it."""
    with get_db().transaction() as session:
        counterpart = counterpart_of(session, letter_id, counterpart_id)
        if counterpart.signed_document_id is None:
            raise StateError(f"Counterpart {counterpart.id} ({counterpart.name}) is not "
                             "signed yet.")
        document = session.get(Document, counterpart.signed_document_id)
        assert document is not None and document.blob_sha256 is not None
        data = blob_bytes(session, document.blob_sha256)
        _record_download(session, letter_id, document.filename,
                         envelope_id=counterpart.envelope_id, counterpart_id=counterpart.id)
        filename, sha256 = document.filename, document.blob_sha256
    return send_document(data, filename=filename, media_type=PDF_TYPE, sha256=sha256)


def send_blank_counterpart(letter_id: int, counterpart_id: int) -> Response:
    """Answer with a signer's counterpart to print and sign on paper: the letter as sent.

    The download is recorded. A scan of these pages with nothing written on them is refused
    as a signed counterpart (:mod:`workflow.paper`).
    """
    with get_db().transaction() as session:
        counterpart = counterpart_of(session, letter_id, counterpart_id)
        letter = get_letter(session, letter_id)
        data = letter_pdf_for(session, counterpart.envelope)
        filename = (f"{letter.file_stem}-counterpart-{counterpart.position}-"
                    f"{file_slug(counterpart.name)}-to-sign.pdf")
        _record_download(session, letter_id, filename, envelope_id=counterpart.envelope_id,
                         counterpart_id=counterpart.id)
    return send_document(data, filename=filename, media_type=PDF_TYPE, sha256=None)


def audit_json(letter_id: int) -> dict[str, Any]:
    """Return a letter's audit record as JSON values."""
    with get_db().transaction() as session:
        # Read only: links past their date read "expired" (computed, as on the page); the
        # expiry sweep (workflow.jobs.expire_signing_links) records it.
        return audit_record(session, letter_id)


def send_counterparts_zip(letter_id: int) -> Response:
    """Answer with a zip of the executed PDF, every signed counterpart and the audit record."""
    executed = executed_document(letter_id)
    with get_db().transaction() as session:
        letter = get_letter(session, letter_id)
        envelope = current_envelope(session, letter_id)
        assert envelope is not None and executed.blob_sha256 is not None
        files = [(executed.filename, blob_bytes(session, executed.blob_sha256))]
        for c in envelope.counterparts:
            signed = session.get(Document, c.signed_document_id)
            assert signed is not None and signed.blob_sha256 is not None
            files.append((signed.filename, blob_bytes(session, signed.blob_sha256)))
        filename = f"{letter.file_stem}-counterparts.zip"
        _record_download(session, letter_id, filename, envelope_id=envelope.id)
        # After the download is recorded, so the record in the zip includes it.
        record = audit_record(session, letter_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
        archive.writestr("audit.json", json.dumps(record, indent=2, ensure_ascii=False))
    return send_document(buffer.getvalue(), filename=filename, media_type="application/zip",
                         sha256=None)
