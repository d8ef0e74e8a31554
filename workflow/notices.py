"""Notices by email: the invitation to sign, reminders, the warning that links expire soon, and
the news that a letter was declined, fully executed or voided.

Every notice is a row of :class:`workflow.models.Notice`, made once (its ``key`` is unique:
one per cause and recipient) and sent by the job :func:`deliver_notice`, which claims the row
(a conditional UPDATE) before handing the message to the mail server, so no notice goes twice
however many workers run. A notice is ``sent`` only when the mail server accepted it (it took
the recipient and the message); otherwise it is ``failed`` with the server's answer, and tried
again with a growing delay (a passing failure: the server was unreachable or answered 4xx) or
not (a 5xx refusal; the last attempt). ``cancelled`` says it was not sent because it was no
longer needed (the signer signed meanwhile).

Where notices come from:

- the committed audit events, through :func:`notices_for_event` (an outbox subscriber, so once
  per event after its transaction commits): ``sent`` and ``new_link`` make the invitation of
  a signer with an email address, ``declined`` tells the sender and the signers who already
  signed, ``executed`` sends the executed PDF to every signer with an email and the sender,
  ``voided`` tells every signer holding a link (those who signed too: their signature will
  not be used);
- the periodic :func:`sweep_notices`: reminders that are due (:func:`queue_due_reminders`)
  and warnings two days before the links expire (:func:`queue_expiry_warnings`);
- staff: "Remind now" (:func:`remind_now`), at most once an hour per signer.

Reminders repeat the link of the invitation. Signing tokens are stored as SHA-256 hashes so the
database alone cannot open a counterpart; to repeat a link, each counterpart also keeps its
current token encrypted (:func:`seal_link`: AES-GCM under a key derived with HKDF from the app's
secret key, bound to the counterpart's id). We chose this over issuing a fresh link with each
reminder because a signer's earlier emails (the invitation, an earlier reminder) then keep
working: the link a signer finds first is the one that opens their counterpart, and nothing
has to explain that an older link was replaced. The cost is that the database together with the
secret key can recover open links; the key is kept outside the database (``SECRET_KEY``), and
"New link" replaces both the hash and the kept copy.

Messages are plain text with an HTML alternative, from the Jinja templates in
``workflow/mail_templates`` (autoescaped for HTML). Each names the letter by its title and says
what to do; none carries a secret other than the recipient's own link.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, object_session

from . import jobs, outbox
from .audit import record_event
from .db import Database, rowcount
from .envelopes import IssuedLink, counterpart_of, record_delivery, token_hash
from .errors import CounterpartError, StateError
from .formatting import join_and, long_date
from .letters import blob_bytes
from .mail import Attachment, Mail, MailResult, SmtpSettings, send_mail
from .models import Counterpart, Document, Envelope, Event, Letter, Notice, User, utcnow
from .states import CounterpartStatus, EnvelopeStatus

__all__ = [
    "ReminderSettings", "DEFAULT_REMINDERS", "NO_REMINDERS", "parse_reminders",
    "ReminderTooSoon", "NoticeNotAccepted", "seal_link", "unseal_link", "keep_link",
    "kept_link", "schedule_reminders", "set_up_notices", "signing_url", "letter_url", "sender_of",
    "queue_notice", "notices_for_event", "send_notice", "deliver_notice",
    "queue_due_reminders", "queue_expiry_warnings", "sweep_notices", "remind_now",
    "remind_allowed_at", "reminders_accepted", "compose_notice", "letter_notices",
    "reminder_record", "NOTICE_KINDS",
    "ATTACHMENT_LIMIT", "MAX_ATTEMPTS", "REMIND_NOW_GAP", "EXPIRY_WARNING_BEFORE",
]

log = logging.getLogger(__name__)

NOTICE_KINDS = ("invitation", "reminder", "expiry_warning", "declined", "completed", "voided")
KIND_LABELS = {"invitation": "Invitation to sign", "reminder": "Reminder",
               "expiry_warning": "Links expire soon", "declined": "Declined",
               "completed": "Fully executed", "voided": "Voided"}
MAX_REMINDERS = 10
REMIND_NOW_GAP = dt.timedelta(hours=1)
EXPIRY_WARNING_BEFORE = dt.timedelta(days=2)
ATTACHMENT_LIMIT = 10 * 1024 * 1024
"""The largest executed PDF attached to the completion notice (setting
``NOTICE_ATTACHMENT_MAX_BYTES``); a larger one is offered as a download link."""
MAX_ATTEMPTS = 6
RETRY_DELAY_SECONDS = 60
RETRY_BACKOFF = 2.0
STALE_SENDING = dt.timedelta(minutes=10)
"""A notice claimed this long ago by a worker that never recorded the outcome (it died) may be
claimed again; the mail server may then get it twice, never zero times."""
_REMINDABLE = (CounterpartStatus.READY.value, CounterpartStatus.SENT.value,
               CounterpartStatus.VIEWED.value)
_HOLDING_A_LINK = (*_REMINDABLE, CounterpartStatus.CREATED.value)
_TEMPLATES = Path(__file__).parent / "mail_templates"
_LINK_INFO = b"counterpart signing link v1"


class ReminderTooSoon(StateError):
    """"Remind now" asked within an hour of the signer's last reminder; ``allowed_at`` says
    when it may be asked again."""

    code = "too_soon"

    def __init__(self, message: str, allowed_at: dt.datetime):
        self.allowed_at = allowed_at
        super().__init__(message)


class NoticeNotAccepted(CounterpartError):
    """The mail server did not accept a notice this time; the job raises it to be retried."""


# --- reminder settings ----------------------------------------------------------------------

@dataclass(frozen=True)
class ReminderSettings:
    """An envelope's reminders: at most ``count`` per signer, the first ``first_after_days``
    days after sending, then every ``every_days`` days (``count`` 0: none)."""

    count: int = 3
    first_after_days: int = 3
    every_days: int = 3

    def as_dict(self) -> dict[str, int]:
        """The settings as the API states them."""
        return {"count": self.count, "first_after_days": self.first_after_days,
                "every_days": self.every_days}


DEFAULT_REMINDERS = ReminderSettings()
NO_REMINDERS = ReminderSettings(count=0)


def _whole(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CounterpartError(f"{what}: give a whole number from {low} to {high}.")
    return value


def parse_reminders(raw: Any) -> ReminderSettings:
    """Read the reminders asked for when sending: None (the defaults: 3 reminders, the first
    3 days after sending, then every 3 days), a whole number of reminders with those days, or
    ``{"count", "first_after_days", "every_days"}`` (each optional). 0 turns them off.

    Raises CounterpartError naming ``reminders`` or the key at fault.
    """
    if raw is None:
        return DEFAULT_REMINDERS
    if isinstance(raw, Mapping):
        unknown = sorted(set(raw) - {"count", "first_after_days", "every_days"})
        if unknown:
            raise CounterpartError(f"reminders.{unknown[0]}: not a reminder setting; give "
                                   "count, first_after_days and every_days.")
        return ReminderSettings(
            _whole(raw.get("count", DEFAULT_REMINDERS.count), "reminders.count", 0,
                   MAX_REMINDERS),
            _whole(raw.get("first_after_days", DEFAULT_REMINDERS.first_after_days),
                   "reminders.first_after_days", 1, 365),
            _whole(raw.get("every_days", DEFAULT_REMINDERS.every_days),
                   "reminders.every_days", 1, 365))
    if isinstance(raw, int) and not isinstance(raw, bool):
        return ReminderSettings(_whole(raw, "reminders", 0, MAX_REMINDERS))
    raise CounterpartError("reminders: give a number of reminders (0 for none) or "
                           "{\"count\", \"first_after_days\", \"every_days\"}.")


def schedule_reminders(session: Session, envelope: Envelope, settings: ReminderSettings
                       ) -> None:
    """Record an envelope's reminder settings and the first reminder of each signer with an
    email address, counted from when it was sent."""
    envelope.reminder_count = settings.count
    envelope.reminder_first_after_days = settings.first_after_days
    envelope.reminder_every_days = settings.every_days
    first = envelope.created_at + dt.timedelta(days=settings.first_after_days)
    for counterpart in envelope.counterparts:
        counterpart.next_reminder_at = first if settings.count and counterpart.email else None
    session.flush()


def set_up_notices(session: Session, envelope: Envelope, issued: Sequence[IssuedLink], *,
                   secret_key: str | bytes, reminders: ReminderSettings = DEFAULT_REMINDERS,
                   sender_id: int | None = None) -> None:
    """Prepare a just-sent envelope's notices, in the sending transaction: name its sender
    (the account told of a decline or completion), keep each link for the reminders, and
    schedule them."""
    if sender_id is not None:
        envelope.created_by_id = sender_id
    for link in issued:
        keep_link(session, link.counterpart_id, link.token, secret_key)
    schedule_reminders(session, envelope, reminders)


# --- the kept links ---------------------------------------------------------------------------

def _link_key(secret_key: str | bytes) -> bytes:
    material = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_LINK_INFO).derive(material)


def seal_link(counterpart_id: int, token: str, secret_key: str | bytes) -> str:
    """Encrypt a counterpart's signing token for keeping (AES-GCM; the counterpart's id is
    authenticated with it, so a copy moved to another row does not open)."""
    nonce = os.urandom(12)
    sealed = AESGCM(_link_key(secret_key)).encrypt(
        nonce, token.encode("utf-8"), str(counterpart_id).encode("ascii"))
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal_link(counterpart_id: int, sealed: str, secret_key: str | bytes) -> str | None:
    """Return the token :func:`seal_link` kept, or None if it cannot be read (another secret
    key, another counterpart, damaged)."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
        token = AESGCM(_link_key(secret_key)).decrypt(
            raw[:12], raw[12:], str(counterpart_id).encode("ascii"))
    except (InvalidTag, ValueError, binascii.Error):
        return None
    return token.decode("utf-8")


def keep_link(session: Session, counterpart_id: int, token: str, secret_key: str | bytes
              ) -> None:
    """Keep a counterpart's new signing token, encrypted, for its reminders."""
    session.execute(update(Counterpart).where(Counterpart.id == counterpart_id)
                    .values(link_sealed=seal_link(counterpart_id, token, secret_key)))


def kept_link(counterpart: Counterpart, secret_key: str | bytes) -> str | None:
    """The counterpart's current signing token, if it is kept and still current."""
    if not counterpart.link_sealed:
        return None
    token = unseal_link(counterpart.id, counterpart.link_sealed, secret_key)
    if token is None or token_hash(token) != counterpart.token_hash:
        return None
    return token


def signing_url(base_url: str, token: str) -> str:
    """The address of a signing link (as the signing pages route it)."""
    return f"{base_url.rstrip('/')}/sign/{token}"


def letter_url(base_url: str, letter_id: int) -> str:
    """The address of a letter's page, for staff."""
    return f"{base_url.rstrip('/')}/letters/{letter_id}"


# --- who gets what ------------------------------------------------------------------------------

def sender_of(session: Session, envelope: Envelope) -> tuple[str, str] | None:
    """The member of staff who sent an envelope, as (name, email): the account that sent it
    (None once that account is disabled), or, for an envelope sent before senders were
    recorded, the actor of its first "sent" event when that is an address."""
    if envelope.created_by_id is not None:
        user = session.get(User, envelope.created_by_id)
        if user is None or user.disabled_at is not None:
            return None
        return user.email, user.email
    actor = session.scalar(select(Event.actor).where(
        Event.envelope_id == envelope.id, Event.type == "sent").order_by(Event.id).limit(1))
    if actor and "@" in actor:
        return actor, actor
    return None


def queue_notice(session: Session, *, key: str, envelope: Envelope, kind: str, audience: str,
                 to_email: str, to_name: str = "", counterpart_id: int | None = None,
                 event_id: int | None = None, detail: dict[str, Any] | None = None,
                 now: dt.datetime | None = None) -> Notice | None:
    """Make a notice, unless one with this ``key`` exists, and send it once the caller's
    transaction commits. Returns the new notice, or None if it was made before."""
    if kind not in NOTICE_KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    if session.scalar(select(Notice.id).where(Notice.key == key)) is not None:
        return None
    # Another worker may make the same notice meanwhile: the insert then does nothing.
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    notice_id = session.scalar(
        insert(Notice).values(
            key=key[:200], letter_id=envelope.letter_id, envelope_id=envelope.id,
            counterpart_id=counterpart_id, event_id=event_id, kind=kind, audience=audience,
            to_email=to_email, to_name=to_name[:200], status="queued", attempts=0,
            detail=detail or {}, created_at=now or utcnow())
        .on_conflict_do_nothing(index_elements=["key"]).returning(Notice.id))
    if notice_id is None:
        return None
    notice = session.get(Notice, notice_id)
    assert notice is not None
    jobs.enqueue_after_commit(session, deliver_notice, notice.id)
    return notice


def _mail_on() -> bool:
    try:
        return jobs.runtime().smtp is not None
    except RuntimeError:
        return False


@outbox.subscriber
def notices_for_event(session: Session, event: Event) -> None:
    """Make the notices an audit event calls for (see the module's docstring)."""
    handler = _HANDLERS.get(event.type)
    if handler is None or event.envelope_id is None or not _mail_on():
        return
    envelope = session.get(Envelope, event.envelope_id)
    if envelope is not None:
        handler(session, event, envelope)


def _on_link(session: Session, event: Event, envelope: Envelope) -> None:
    """A link was issued ("sent", "new_link"): the invitation, if it goes by email and this
    is still the counterpart's newest link."""
    if (event.detail or {}).get("delivery") != "email" or event.counterpart_id is None:
        return
    counterpart = session.get(Counterpart, event.counterpart_id)
    if counterpart is None or not counterpart.email:
        return
    newest = session.scalar(select(Event.id).where(
        Event.counterpart_id == counterpart.id, Event.envelope_id == envelope.id,
        Event.type.in_(("sent", "new_link"))).order_by(Event.id.desc()).limit(1))
    if newest != event.id:
        return  # replaced since: the newer link's own invitation goes instead
    queue_notice(session, key=f"invitation:{event.id}", envelope=envelope, kind="invitation",
                 audience="signer", to_email=counterpart.email, to_name=counterpart.name,
                 counterpart_id=counterpart.id, event_id=event.id)


def _to_sender(session: Session, event: Event, envelope: Envelope, kind: str) -> None:
    sender = sender_of(session, envelope)
    if sender is not None:
        name, email = sender
        queue_notice(session, key=f"{kind}:{envelope.id}:sender:{email}", envelope=envelope,
                     kind=kind, audience="sender", to_email=email, to_name=name,
                     event_id=event.id)


def _on_declined(session: Session, event: Event, envelope: Envelope) -> None:
    """Tell the sender and every signer who already signed, with the reason."""
    _to_sender(session, event, envelope, "declined")
    for c in envelope.counterparts:
        if c.email and c.status == CounterpartStatus.SIGNED.value:
            queue_notice(session, key=f"declined:{envelope.id}:{c.id}", envelope=envelope,
                         kind="declined", audience="signer", to_email=c.email, to_name=c.name,
                         counterpart_id=c.id, event_id=event.id)


def _on_executed(session: Session, event: Event, envelope: Envelope) -> None:
    """Send the executed PDF to every signer with an email address and to the sender."""
    for c in envelope.counterparts:
        if c.email:
            queue_notice(session, key=f"completed:{envelope.id}:{c.id}", envelope=envelope,
                         kind="completed", audience="signer", to_email=c.email,
                         to_name=c.name, counterpart_id=c.id, event_id=event.id)
    _to_sender(session, event, envelope, "completed")


def _on_voided(session: Session, event: Event, envelope: Envelope) -> None:
    """Tell each signer with an email who holds a link: those whose link stopped working
    (not declined), and those who signed (their copy will not be executed)."""
    for c in envelope.counterparts:
        stopped = c.status == CounterpartStatus.VOIDED.value and c.declined_at is None \
            and c.signed_at is None
        if c.email and (stopped or c.status == CounterpartStatus.SIGNED.value):
            queue_notice(session, key=f"voided:{envelope.id}:{c.id}", envelope=envelope,
                         kind="voided", audience="signer", to_email=c.email, to_name=c.name,
                         counterpart_id=c.id, event_id=event.id)


_HANDLERS = {"sent": _on_link, "new_link": _on_link, "declined": _on_declined,
             "executed": _on_executed, "voided": _on_voided}


# --- reminders and expiry warnings --------------------------------------------------------------

def _due_reminders(session: Session, now: dt.datetime) -> list[tuple[int, int]]:
    rows = session.execute(
        select(Counterpart.id, Counterpart.reminders_sent).join(Envelope).where(
            Envelope.status == EnvelopeStatus.OUT.value, Envelope.expires_at > now,
            Counterpart.next_reminder_at <= now, Counterpart.status.in_(_REMINDABLE),
            Counterpart.email.is_not(None), Counterpart.link_sealed.is_not(None),
            Counterpart.reminders_sent < Envelope.reminder_count)
        .order_by(Counterpart.next_reminder_at))
    return [(cid, sent) for cid, sent in rows]


def _claim_reminder(session: Session, counterpart: Counterpart, seen: int, now: dt.datetime,
                    *, due: bool) -> bool:
    """Take the counterpart's next reminder for this caller: a conditional UPDATE on its
    reminder count (and, for an automatic one, its due time), so it is taken once."""
    envelope = counterpart.envelope
    sent = seen + 1
    if counterpart.next_reminder_at is None:
        following = None
    elif due:
        following = (now + dt.timedelta(days=envelope.reminder_every_days)
                     if sent < envelope.reminder_count else None)
    else:  # by hand: the next automatic one keeps its distance from this one
        following = max(counterpart.next_reminder_at,
                        now + dt.timedelta(days=envelope.reminder_every_days))
    # The count is the claim: of two callers that saw the same count, one takes it. (By hand,
    # the caller checked the hour first, from the reminders that went or may still go.)
    condition = [Counterpart.id == counterpart.id, Counterpart.reminders_sent == seen]
    if due:
        condition.append(Counterpart.next_reminder_at <= now)
    return rowcount(session.execute(
        update(Counterpart).where(*condition).values(
            reminders_sent=sent, last_reminded_at=now, next_reminder_at=following))) == 1


def queue_due_reminders(db: Database, *, now: dt.datetime | None = None) -> list[int]:
    """Claim and queue every reminder that is due; return the new notices' ids.

    A signer gets reminders while their link is open (not signed, declined, voided or
    expired) and their turn has come, up to the envelope's ``reminder_count``.
    """
    now = now or utcnow()
    with db.transaction() as session:
        due = _due_reminders(session, now)
    made = []
    for counterpart_id, seen in due:
        with db.transaction() as session:
            counterpart = session.get(Counterpart, counterpart_id)
            if counterpart is None or not _claim_reminder(session, counterpart, seen, now,
                                                          due=True):
                continue  # another worker took it
            notice = _queue_reminder(session, counterpart, seen + 1, now, by=None)
            if notice is not None:
                made.append(notice.id)
    return made


def _queue_reminder(session: Session, counterpart: Counterpart, number: int,
                    now: dt.datetime, *, by: str | None) -> Notice | None:
    assert counterpart.email is not None
    detail: dict[str, Any] = {"number": number}
    if by:
        detail["by"] = by
    return queue_notice(session, key=f"reminder:{counterpart.id}:{number}",
                        envelope=counterpart.envelope, kind="reminder", audience="signer",
                        to_email=counterpart.email, to_name=counterpart.name,
                        counterpart_id=counterpart.id, detail=detail, now=now)


def queue_expiry_warnings(db: Database, *, now: dt.datetime | None = None) -> list[int]:
    """Warn each signer whose open link expires within two days, and the sender, once per
    expiry (a renewed link is warned about again); return the new notices' ids."""
    now = now or utcnow()
    with db.transaction() as session:
        rows = list(session.execute(
            select(Counterpart.id, Envelope.expires_at).join(Envelope).where(
                Envelope.status == EnvelopeStatus.OUT.value, Envelope.expires_at > now,
                Envelope.expires_at <= now + EXPIRY_WARNING_BEFORE,
                Counterpart.status.in_(_REMINDABLE),
                or_(Counterpart.expiry_warned_for.is_(None),
                    Counterpart.expiry_warned_for != Envelope.expires_at))))
    made = []
    for counterpart_id, expires_at in rows:
        with db.transaction() as session:
            claimed = rowcount(session.execute(
                update(Counterpart).where(
                    Counterpart.id == counterpart_id,
                    or_(Counterpart.expiry_warned_for.is_(None),
                        Counterpart.expiry_warned_for != expires_at))
                .values(expiry_warned_for=expires_at))) == 1
            if not claimed:
                continue
            counterpart = session.get(Counterpart, counterpart_id)
            assert counterpart is not None
            envelope = counterpart.envelope
            stamp = expires_at.isoformat()
            detail = {"expires_at": stamp}
            if counterpart.email:
                notice = queue_notice(
                    session, key=f"expiry_warning:{counterpart.id}:{stamp}", envelope=envelope,
                    kind="expiry_warning", audience="signer", to_email=counterpart.email,
                    to_name=counterpart.name, counterpart_id=counterpart.id, detail=detail,
                    now=now)
                made.extend([notice.id] if notice else [])
            sender = sender_of(session, envelope)
            if sender is not None:
                notice = queue_notice(
                    session, key=f"expiry_warning:{envelope.id}:{stamp}:sender:{sender[1]}",
                    envelope=envelope, kind="expiry_warning", audience="sender",
                    to_email=sender[1], to_name=sender[0], detail=detail, now=now)
                made.extend([notice.id] if notice else [])
    return made


_GOING_OR_GONE = or_(Notice.status.in_(("queued", "sending", "sent")),
                     and_(Notice.status == "failed", Notice.next_attempt_at.is_not(None)))
"""A notice the mail server accepted, or that is still on its way (queued, being sent, or
failed this time and to be tried again): not one that failed for good or was cancelled."""


def remind_allowed_at(counterpart: Counterpart) -> dt.datetime | None:
    """When "Remind now" may next be used for a signer (None: now): an hour after their last
    reminder that the mail server accepted or that is still on its way; a reminder that
    failed for good or was cancelled does not hold staff back."""
    session = object_session(counterpart)
    assert session is not None
    last = session.scalar(select(Notice.created_at).where(
        Notice.kind == "reminder", Notice.counterpart_id == counterpart.id, _GOING_OR_GONE)
        .order_by(Notice.created_at.desc()).limit(1))
    return last + REMIND_NOW_GAP if last is not None else None


def reminders_accepted(session: Session, counterpart_ids: Sequence[int]) -> dict[int, int]:
    """How many reminders the mail server accepted for each of these counterparts (ids with
    none are left out). Reminders queued, retrying, failed or cancelled do not count."""
    if not counterpart_ids:
        return {}
    return {cid: count for cid, count in session.execute(
        select(Notice.counterpart_id, func.count()).where(
            Notice.kind == "reminder", Notice.status == "sent",
            Notice.counterpart_id.in_(list(counterpart_ids)))
        .group_by(Notice.counterpart_id)) if cid is not None}


def remind_now(session: Session, letter_id: int, counterpart_id: int, actor: str, *,
               mail_configured: bool, secret_key: str | bytes,
               now: dt.datetime | None = None) -> Notice:
    """Queue a reminder to one signer at once, for staff; it is sent after the caller's
    transaction commits.

    Raises ReminderTooSoon within an hour of the signer's last reminder, StateError when the
    signer cannot be reminded (no email, signed, declined, voided, expired, waiting for
    earlier signers, no link kept, or no outgoing mail), NotFoundError for an unknown
    counterpart.
    """
    now = now or utcnow()
    counterpart = counterpart_of(session, letter_id, counterpart_id)
    session.refresh(counterpart)
    envelope = counterpart.envelope
    name = counterpart.name
    if not mail_configured:
        raise StateError("Outgoing mail is not set up (COUNTERPART_SMTP_HOST), so no reminder "
                         "can be emailed.")
    if not counterpart.email:
        raise StateError(f"{name} has no email address, so no reminder can be emailed; hand "
                         "the link over yourself.")
    if envelope.status != EnvelopeStatus.OUT.value:
        raise StateError(f"The envelope is {envelope.status}; there is nothing to remind "
                         f"{name} of.")
    if now >= envelope.expires_at or counterpart.status == CounterpartStatus.EXPIRED.value:
        raise StateError(f"{name}'s link has expired; make a new link (\"New link\") instead "
                         "of a reminder.")
    if counterpart.status == CounterpartStatus.CREATED.value:
        raise StateError(f"{name} waits for the signers before them; a reminder goes once "
                         "their turn comes.")
    if counterpart.status not in _REMINDABLE:
        raise StateError(f"{name}'s counterpart is {counterpart.status}; only a signer still "
                         "to sign is reminded.")
    if kept_link(counterpart, secret_key) is None:
        raise StateError(f"{name}'s link was not kept for reminders (it was sent before "
                         "reminders existed); make a new link (\"New link\"), which is "
                         "emailed.")
    allowed_at = remind_allowed_at(counterpart)
    if allowed_at is not None and now < allowed_at:
        raise ReminderTooSoon(_too_soon(name, allowed_at), allowed_at)
    if not _claim_reminder(session, counterpart, counterpart.reminders_sent, now, due=False):
        session.refresh(counterpart)
        allowed_at = remind_allowed_at(counterpart) or now + REMIND_NOW_GAP
        raise ReminderTooSoon(_too_soon(name, allowed_at), allowed_at)
    session.refresh(counterpart)
    notice = _queue_reminder(session, counterpart, counterpart.reminders_sent, now, by=actor)
    assert notice is not None
    return notice


def _too_soon(name: str, allowed_at: dt.datetime) -> str:
    return (f"{name} was reminded less than an hour ago; remind them again after "
            f"{allowed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC.")


# --- composing and sending ------------------------------------------------------------------

_environment: Environment | None = None


def _templates() -> Environment:
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=FileSystemLoader(_TEMPLATES), undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html",),
                                         default_for_string=False),
            keep_trailing_newline=True)
    return _environment


def _expires_on(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    return f"{long_date(moment.date())} at {moment:%H:%M} UTC"


def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


_SUBJECTS = {
    "invitation": "Please sign: {title}",
    "reminder": "Reminder: please sign {title}",
    "expiry_warning": "Your link to sign {title} expires on {date}",
    "expiry_warning:sender": "Signing links expire on {date}: {title}",
    "declined": "Declined: {title}",
    "completed": "Fully executed: {title}",
    "voided": "Withdrawn from signature: {title}",
}


class _NotSendable(Exception):
    """The notice cannot be made (``cancel``: it is no longer needed)."""

    def __init__(self, reason: str, *, cancel: bool = False):
        self.reason = reason
        self.cancel = cancel
        super().__init__(reason)


@dataclass(frozen=True)
class _Composed:
    mail: Mail
    token: str | None
    detail: dict[str, Any]


def _own_link(counterpart: Counterpart | None, secret_key: str | bytes) -> str | None:
    return kept_link(counterpart, secret_key) if counterpart is not None else None


def compose_notice(session: Session, notice: Notice, *, base_url: str,
                   secret_key: str | bytes, attachment_limit: int = ATTACHMENT_LIMIT,
                   now: dt.datetime | None = None) -> tuple[Mail, str | None, dict[str, Any]]:
    """Make the message of a notice; return it, the signing token it carries (if any) and
    what to note about it (an attachment or a download link).

    Raises _NotSendable when the notice is no longer needed or cannot be made.
    """
    now = now or utcnow()
    envelope = session.get(Envelope, notice.envelope_id)
    letter = session.get(Letter, notice.letter_id)
    assert envelope is not None and letter is not None
    counterpart = session.get(Counterpart, notice.counterpart_id) \
        if notice.counterpart_id else None
    sender = sender_of(session, envelope)
    title = letter.title or f"Letter {letter.id}"
    context: dict[str, Any] = {
        "title": title, "name": notice.to_name or notice.to_email,
        "sender_name": sender[0] if sender else "the sender",
        "expires_on": _expires_on(envelope.expires_at), "link": None, "waiting_for": ""}
    token: str | None = None
    extra: dict[str, Any] = {}
    kind = notice.kind
    if kind in ("invitation", "reminder") or (kind == "expiry_warning"
                                              and notice.audience == "signer"):
        assert counterpart is not None
        if envelope.status != EnvelopeStatus.OUT.value or now >= envelope.expires_at:
            raise _NotSendable(f"not sent: the envelope is {envelope.status} and its links no "
                               "longer work" if envelope.status != EnvelopeStatus.OUT.value
                               else "not sent: the link has expired", cancel=True)
        open_statuses = _HOLDING_A_LINK if kind == "invitation" else _REMINDABLE
        if counterpart.status not in open_statuses:
            raise _NotSendable(f"not sent: {counterpart.name}'s counterpart is "
                               f"{counterpart.status}", cancel=True)
        token = _own_link(counterpart, secret_key)
        if token is None and kind != "expiry_warning":
            raise _NotSendable("the signing link was not kept (or was replaced since), so it "
                               "cannot be emailed; make a new link")
        context["link"] = signing_url(base_url, token) if token else None
        if kind == "invitation" and envelope.signing_order:
            # As the signing page says it: the earlier signers who have not signed yet.
            context["waiting_for"] = join_and(
                c.name for c in envelope.counterparts if c.position < counterpart.position
                and c.status != CounterpartStatus.SIGNED.value)
    elif kind == "expiry_warning":  # to the sender
        if envelope.status != EnvelopeStatus.OUT.value:
            raise _NotSendable(f"not sent: the envelope is {envelope.status}", cancel=True)
        context["waiting"] = [c.name for c in envelope.counterparts
                              if c.status != CounterpartStatus.SIGNED.value]
        if not context["waiting"]:
            raise _NotSendable("not sent: every counterpart is signed", cancel=True)
        context["link"] = letter_url(base_url, letter.id)
    elif kind in ("declined", "voided"):
        event = session.get(Event, notice.event_id) if notice.event_id else None
        context["reason"] = (event.detail or {}).get("reason", "") if event else ""
        if kind == "declined":
            decliner = session.get(Counterpart, event.counterpart_id) \
                if event and event.counterpart_id else None
            context["declined_by"] = decliner.name if decliner else "A signer"
        else:
            context["reason"] = context["reason"] or envelope.void_reason or ""
            context["signed"] = counterpart is not None \
                and counterpart.status == CounterpartStatus.SIGNED.value
        context["link"] = letter_url(base_url, letter.id)
    elif kind == "completed":
        document = session.get(Document, envelope.executed_document_id) \
            if envelope.executed_document_id else None
        if document is None or document.blob_sha256 is None:
            raise _NotSendable("the executed PDF is not stored")
        size = document.size or 0
        context.update(filename=document.filename, size=_size(size),
                       attached=size <= attachment_limit)
        if notice.audience == "signer":
            # The signer's own link gives the executed PDF while it lasts.
            token = _own_link(counterpart, secret_key) if now < envelope.expires_at else None
            context["link"] = signing_url(base_url, token) if token else None
        else:
            context["link"] = letter_url(base_url, letter.id)
        if context["attached"]:
            attachment = Attachment(document.filename, blob_bytes(session, document.blob_sha256))
            extra = {"attachment": document.filename, "bytes": size}
        else:
            attachment = None
            extra = {"download": "link" if context["link"] else "none", "bytes": size}
    else:
        raise _NotSendable(f"unknown notice kind {kind!r}")
    template = kind if kind in ("invitation", "reminder", "voided") \
        else f"{kind}_{notice.audience}"
    subject_key = f"{kind}:sender" if f"{kind}:sender" in _SUBJECTS \
        and notice.audience == "sender" else kind
    subject = _SUBJECTS[subject_key].format(
        title=title, date=long_date(envelope.expires_at.astimezone(dt.UTC).date()))
    context["subject"] = subject
    environment = _templates()
    text = environment.get_template(f"{template}.txt").render(context)
    html = environment.get_template(f"{template}.html").render(context)
    attachments = (attachment,) if kind == "completed" and attachment is not None else ()
    return (Mail(notice.to_email, subject, text, to_name=notice.to_name, html=html,
                 attachments=attachments), token, extra)


def _retry_at(attempts: int, at: dt.datetime) -> dt.datetime:
    return at + dt.timedelta(seconds=RETRY_DELAY_SECONDS * RETRY_BACKOFF ** (attempts - 1))


def send_notice(db: Database, notice_id: int, *, smtp: SmtpSettings | None, base_url: str,
                secret_key: str | bytes, attachment_limit: int = ATTACHMENT_LIMIT,
                now: dt.datetime | None = None) -> str:
    """Claim a notice, hand it to the mail server and record what the server did.

    Returns the notice's status afterwards: ``sent``, ``failed`` (for good), ``retry`` (failed
    this time; to be tried again), ``cancelled`` (no longer needed), or ``skipped`` when it
    was not this caller's to send (sent already, or claimed by another worker).
    """
    now = now or utcnow()
    with db.transaction() as session:
        notice = session.get(Notice, notice_id)
        if notice is None or not _claimable(notice, now):
            return "skipped"
        seen = notice.attempts
        try:
            if smtp is None:
                raise _NotSendable("outgoing mail is not set up (COUNTERPART_SMTP_HOST)")
            mail, token, extra = compose_notice(session, notice, base_url=base_url,
                                                secret_key=secret_key,
                                                attachment_limit=attachment_limit, now=now)
        except _NotSendable as exc:
            outcome = "cancelled" if exc.cancel else "failed"
            if not _claim(session, notice_id, seen, now, status=outcome, answer=exc.reason,
                          next_attempt_at=None):
                return "skipped"
            if outcome == "failed":  # for good: no mail server was asked
                _record_outcome(session, notice, accepted=False, answer=exc.reason, at=now)
            return outcome
        detail = {**(notice.detail or {}), **extra}
        if token is not None:
            detail["link_hash"] = token_hash(token)  # which link it carried, not the link
        if not _claim(session, notice_id, seen, now, status="sending", detail=detail):
            return "skipped"
    result = send_mail(smtp, mail)
    return _record_result(db, notice_id, seen + 1, result, token)


def _claimable(notice: Notice, now: dt.datetime) -> bool:
    """Whether a notice may be claimed now (the condition of :func:`_claim`, read first)."""
    return (notice.status == "queued"
            or (notice.status == "failed" and notice.next_attempt_at is not None)
            or (notice.status == "sending" and notice.claimed_at is not None
                and notice.claimed_at < now - STALE_SENDING))


def _claim(session: Session, notice_id: int, seen: int, now: dt.datetime,
           **values: Any) -> bool:
    """Claim a notice that had ``seen`` attempts, writing ``values`` with the claim; False if
    another run claimed it first.

    One UPDATE writes everything the claiming transaction changes: on PostgreSQL a second
    UPDATE of the row would check its foreign keys again, locking the letter and then the
    envelope, the reverse of the order in which recording a delivery locks them (two
    workers deadlocked so).
    """
    return rowcount(session.execute(update(Notice).where(
        Notice.id == notice_id, Notice.attempts == seen,
        or_(Notice.status == "queued",
            and_(Notice.status == "failed", Notice.next_attempt_at.is_not(None)),
            and_(Notice.status == "sending", Notice.claimed_at < now - STALE_SENDING)))
        .values(claimed_at=now, attempts=seen + 1, last_attempt_at=now, **values))) == 1


def _record_result(db: Database, notice_id: int, attempts: int, result: MailResult,
                   token: str | None) -> str:
    with db.transaction() as session:
        notice = session.get(Notice, notice_id)
        assert notice is not None
        if notice.status != "sending" or notice.attempts != attempts:
            log.warning("notice %s was taken over while being sent", notice_id)
            return "skipped"
        notice.answer = result.answer[:2000]
        if result.accepted:
            notice.status, notice.sent_at, notice.next_attempt_at = "sent", result.at, None
        else:
            notice.status = "failed"
            again = not result.permanent and attempts < MAX_ATTEMPTS
            notice.next_attempt_at = _retry_at(attempts, result.at) if again else None
        if notice.kind == "invitation" and notice.counterpart_id is not None \
                and token is not None:
            record_delivery(session, notice.counterpart_id, to=notice.to_email,
                            accepted=result.accepted, answer=result.answer,
                            link_hash=token_hash(token), at=result.at)
        elif result.accepted or notice.next_attempt_at is None:  # the final outcome
            _record_outcome(session, notice, accepted=result.accepted, answer=result.answer,
                            at=result.at)
        if result.accepted:
            return "sent"
        return "retry" if notice.next_attempt_at is not None else "failed"


def _record_outcome(session: Session, notice: Notice, *, accepted: bool, answer: str,
                    at: dt.datetime) -> None:
    """Put a notice's final outcome in its letter's audit record, in the transaction that
    marks it sent or failed for good: "emailed" (the mail server accepted it) or
    "email_failed", with the notice's kind, the recipient and the server's answer (or why
    none was asked). An invitation's every try is recorded by
    :func:`workflow.envelopes.record_delivery` instead; a cancelled notice is not recorded.

    The envelope is locked before the letter (which :func:`workflow.audit.record_event`
    locks), the order in which recording an invitation's delivery locks them.
    """
    session.execute(select(Envelope.id).where(Envelope.id == notice.envelope_id)
                    .with_for_update())
    detail: dict[str, Any] = {"notice": notice.kind, "to": notice.to_email,
                              "name": notice.to_name, "audience": notice.audience,
                              "at": at.isoformat()}
    detail["answer" if accepted else "error"] = answer[:1000]
    record_event(session, notice.letter_id, "emailed" if accepted else "email_failed",
                 actor="system", envelope_id=notice.envelope_id,
                 counterpart_id=notice.counterpart_id, at=at, detail=detail)


@jobs.job(retries=MAX_ATTEMPTS - 1, retry_delay=RETRY_DELAY_SECONDS, retry_backoff=RETRY_BACKOFF)
def deliver_notice(notice_id: int) -> None:
    """Send one notice (a job); raise NoticeNotAccepted for a passing failure, so it is
    retried with backoff."""
    runtime = jobs.runtime()
    outcome = send_notice(runtime.db, notice_id, smtp=runtime.smtp, base_url=runtime.base_url,
                          secret_key=runtime.settings.get("SECRET_KEY") or "",
                          attachment_limit=int(runtime.settings.get(
                              "NOTICE_ATTACHMENT_MAX_BYTES") or ATTACHMENT_LIMIT))
    if outcome == "retry":
        raise NoticeNotAccepted(f"notice {notice_id}: the mail server did not accept it; "
                                "it is tried again")


def _requeue_stuck(db: Database, now: dt.datetime) -> list[int]:
    """The notices whose job was lost (queued long ago, or a retry long overdue)."""
    with db.transaction() as session:
        return list(session.scalars(select(Notice.id).where(or_(
            and_(Notice.status == "queued", Notice.created_at < now - STALE_SENDING),
            and_(Notice.status == "failed", Notice.next_attempt_at < now - STALE_SENDING),
            and_(Notice.status == "sending", Notice.claimed_at < now - STALE_SENDING)))))


@jobs.periodic(minutes=15)
def sweep_notices(now: dt.datetime | None = None) -> None:
    """Queue the reminders and expiry warnings that are due, and send again the notices
    whose job was lost (a periodic job, every 15 minutes; ``now`` for tests)."""
    runtime = jobs.runtime()
    if runtime.smtp is None:
        return
    now = now or utcnow()
    queue_due_reminders(runtime.db, now=now)
    queue_expiry_warnings(runtime.db, now=now)
    for notice_id in _requeue_stuck(runtime.db, now):
        deliver_notice(notice_id)


# --- reading ------------------------------------------------------------------------------------

def reminder_record(envelope: Envelope, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Describe an envelope's reminders: ``settings`` (count, first_after_days, every_days)
    and, per counterpart id, ``reminders_sent``, ``next_reminder_at`` (None when no more
    will go: signed, declined, voided, expired, all sent, or no email), ``last_reminded_at``,
    ``remind_allowed_at`` and ``can_remind`` (open, its turn come, an email, a kept link).

    ``reminders_sent`` counts the reminders the mail server accepted; the counter that
    schedules reminders (and stops them at the envelope's count) also counts those still on
    their way or failed, and is not shown."""
    now = now or utcnow()
    live = envelope.status == EnvelopeStatus.OUT.value and now < envelope.expires_at
    session = object_session(envelope)
    assert session is not None
    accepted = reminders_accepted(session, [c.id for c in envelope.counterparts])
    signers = {}
    for c in envelope.counterparts:
        remindable = live and c.status in _REMINDABLE and bool(c.email)
        allowed_at = remind_allowed_at(c)
        signers[c.id] = {
            "reminders_sent": accepted.get(c.id, 0),
            "next_reminder_at": c.next_reminder_at
            if remindable and c.link_sealed and c.reminders_sent < envelope.reminder_count
            else None,
            "last_reminded_at": c.last_reminded_at,
            "remind_allowed_at": allowed_at if allowed_at and allowed_at > now else None,
            "can_remind": remindable and bool(c.link_sealed)}
    return {"settings": ReminderSettings(envelope.reminder_count,
                                         envelope.reminder_first_after_days,
                                         envelope.reminder_every_days).as_dict(),
            "signers": signers}


def letter_notices(session: Session, envelope_id: str) -> list[dict[str, Any]]:
    """Describe an envelope's notices, newest first, as plain values (``retry_to_come``: a
    failed notice's next try is still in the future)."""
    now = utcnow()
    notices = session.scalars(select(Notice).where(Notice.envelope_id == envelope_id)
                              .order_by(Notice.created_at.desc(), Notice.id.desc()))
    return [{"id": n.id, "kind": n.kind, "kind_label": KIND_LABELS.get(n.kind, n.kind),
             "audience": n.audience, "to_name": n.to_name, "to_email": n.to_email,
             "counterpart_id": n.counterpart_id, "status": n.status, "attempts": n.attempts,
             "answer": n.answer, "created_at": n.created_at, "sent_at": n.sent_at,
             "last_attempt_at": n.last_attempt_at, "next_attempt_at": n.next_attempt_at,
             "retry_to_come": n.next_attempt_at is not None and n.next_attempt_at > now,
             "attachment": (n.detail or {}).get("attachment"),
             "download": (n.detail or {}).get("download"),
             "by": (n.detail or {}).get("by")}
            for n in notices]
