"""Notices by email, in the domain, through a real SMTP server on loopback (aiosmtpd) with the
job queue in immediate mode: who gets each notice, once; reminders and expiry warnings on a
fake clock; the executed PDF attached (or a link when too large); refusals recorded with the
server's answer; links kept encrypted and never another signer's in a message."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time

import pytest
from held_jobs import held_jobs
from mailing import RefusingInbox, attachments_of, html_of, recipient, text_of
from serving import free_port
from sqlalchemy import func, select, text
from support import server_database_url

from workflow import audit, convert, jobs, notices, outbox
from workflow import envelopes as env
from workflow.accounts import create_user
from workflow.errors import CounterpartError, StateError
from workflow.letters import blob_bytes, create_letter, generate_document, pending_documents
from workflow.mail import SmtpSettings
from workflow.models import (
    Counterpart,
    Document,
    Envelope,
    Event,
    Letter,
    Notice,
    User,
    utcnow,
)
from workflow.notices import DEFAULT_REMINDERS, ReminderSettings
from workflow.seal import load_or_create_sealer

SECRET = "a secret key of the app, long enough to derive keys from"
BASE = "https://sign.example.test"
SENDER = "ann@example.com"
STAFF = env.Actor(SENDER, "10.0.0.1", "pytest staff browser")
SIGNER = env.Actor("signer", "203.0.113.7", "pytest signer browser")
ELIOT = env.SignerSpec("company", "Eliot Protsch", "eliot@capstone.test")
JOHN = env.SignerSpec("executive", "John R. Tucker", "jt@home.test")
TITLE = "Separation letter of John R. Tucker, Capstone Turbine Corporation"


@pytest.fixture(autouse=True)
def _one_libreoffice(converter, monkeypatch):
    monkeypatch.setattr(convert, "_default", converter)


@pytest.fixture()
def server():
    """A real SMTP server on loopback that refuses nobody@capstone.test."""
    from aiosmtpd.controller import Controller

    inbox = RefusingInbox("nobody@capstone.test")
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


@pytest.fixture()
def runtime(database, server):
    port, _ = server
    rt = jobs.Runtime(database, smtp=SmtpSettings("127.0.0.1", port, sender="legal@acme.test"),
                      base_url=BASE, settings={"SECRET_KEY": SECRET})
    with jobs.immediate(rt):
        yield rt


@pytest.fixture()
def inbox(server):
    return server[1]


@pytest.fixture(scope="module")
def sealer(tmp_path_factory):
    return load_or_create_sealer(tmp_path_factory.mktemp("seal"))


@pytest.fixture()
def letter_id(database, converter, reference_terms, runtime):
    with database.transaction() as session:
        user = create_user(session, SENDER, "a long password")
        letter_id = create_letter(session, "separation_letter", reference_terms, user).id
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)
    return letter_id


def send(database, letter_id, signers=(ELIOT, JOHN), *, reminders=DEFAULT_REMINDERS,
         **options):
    """Send as the web app does: the envelope, then its notices set up in the same
    transaction; the invitations go by a job after the commit."""
    with database.transaction() as session:
        envelope, issued = env.send_envelope(session, letter_id, list(signers), STAFF,
                                             email_invitations=True, **options)
        sender_id = session.scalar(select(User.id).where(User.email == SENDER))
        notices.set_up_notices(session, envelope, issued, secret_key=SECRET,
                               reminders=reminders, sender_id=sender_id)
        return envelope.id, {link.counterpart_id: link.token for link in issued}


def rows(database, **where):
    with database.transaction() as session:
        query = select(Notice).order_by(Notice.id)
        for key, value in where.items():
            query = query.where(getattr(Notice, key) == value)
        return [(n.kind, n.audience, n.to_email, n.status, n.attempts)
                for n in session.scalars(query)]


def token_of(tokens, database, name):
    with database.transaction() as session:
        cid = session.scalar(select(Counterpart.id).where(Counterpart.name == name))
    return tokens[cid]


def no_foreign_link(inbox, tokens_by_email):
    """No message carries a token other than its recipient's own."""
    for message in inbox.messages:
        whole = text_of(message) + (html_of(message) or "")
        for address, token in tokens_by_email.items():
            if address != recipient(message):
                assert token not in whole, f"{address}'s link reached {recipient(message)}"


def sign(database, token):
    with database.transaction() as session:
        return env.sign_counterpart(session, token, consent=True, actor=SIGNER,
                                    signature={"type": "typed", "text": "Signed"})[1]


def dispatch_again(database, types):
    """Hand the envelope's events of these types to the subscribers once more."""
    with database.transaction() as session:
        ids = list(session.scalars(select(Event.id).where(Event.type.in_(types))))
    for event_id in ids:
        outbox.dispatch(database, event_id)
    return ids


# --- invitations -------------------------------------------------------------------------------

def test_each_signer_gets_one_invitation_with_their_own_link(database, letter_id, inbox):
    envelope_id, tokens = send(database, letter_id)
    assert sorted(recipient(m) for m in inbox.messages) == ["eliot@capstone.test",
                                                             "jt@home.test"]
    assert rows(database) == [
        ("invitation", "signer", "eliot@capstone.test", "sent", 1),
        ("invitation", "signer", "jt@home.test", "sent", 1)]
    # "Sent" only now that the mail server accepted them, with its answer in the record.
    with database.transaction() as session:
        assert [c.status for c in session.scalars(
            select(Counterpart).order_by(Counterpart.position))] == ["sent", "sent"]
        answers = [n.answer for n in session.scalars(select(Notice))]
    assert answers == ["250 2.0.0 Ok: queued as 4F1A"] * 2
    by_email = {"eliot@capstone.test": token_of(tokens, database, "Eliot Protsch"),
                "jt@home.test": token_of(tokens, database, "John R. Tucker")}
    for message in inbox.messages:
        own = f"{BASE}/sign/{by_email[recipient(message)]}"
        assert message["Subject"] == f"Please sign: {TITLE}"
        text, html = text_of(message), html_of(message)
        assert message.get_content_type() == "multipart/alternative"
        assert TITLE in text and "“" + TITLE.replace("&", "&amp;") + "”" in html
        assert own in text and f'href="{own}"' in html
        assert "decline" in text and "works until" in text
    no_foreign_link(inbox, by_email)
    # The events are handed over again (a retried dispatch): nothing goes twice.
    assert dispatch_again(database, ("sent",))
    assert len(inbox.messages) == 2 and len(rows(database)) == 2


def test_an_invitation_in_a_signing_order_names_who_signs_first(database, letter_id, inbox):
    send(database, letter_id, [ELIOT, JOHN], signing_order=True)
    by_recipient = {recipient(m): m for m in inbox.messages}
    first = " ".join(text_of(by_recipient["eliot@capstone.test"]).split())
    assert "not your turn" not in first and "signed in order" not in first
    for words in (" ".join(text_of(by_recipient["jt@home.test"]).split()),
                  " ".join(html_of(by_recipient["jt@home.test"]).split())):
        assert "signed in order, and it is not your turn yet" in words
        assert "Eliot Protsch must sign before you" in words
        assert "lets you sign once they have signed" in words


def test_a_refused_address_is_recorded_failed_with_the_answer(database, letter_id, inbox):
    send(database, letter_id, [env.SignerSpec("company", "Nobody", "nobody@capstone.test"),
                               JOHN])
    with database.transaction() as session:
        refused = session.scalar(select(Notice).where(Notice.to_email == "nobody@capstone.test"))
        assert refused.status == "failed" and refused.attempts == 1
        assert refused.answer.startswith("550 5.1.1 <nobody@capstone.test>")
        assert refused.next_attempt_at is None  # refused for good: not tried again
        counterpart = session.get(Counterpart, refused.counterpart_id)
        assert counterpart.status == "ready" and counterpart.emailed_at is None
        failed = session.scalar(select(Event).where(Event.type == "email_failed"))
        assert failed.detail["error"].startswith("550 5.1.1")
    assert [recipient(m) for m in inbox.messages] == ["jt@home.test"]


def test_a_passing_failure_is_tried_again_and_sent_once_accepted(database, letter_id):
    from aiosmtpd.controller import Controller

    port = free_port()  # nothing listens there yet
    rt = jobs.runtime()
    rt.smtp = SmtpSettings("127.0.0.1", port, sender="legal@acme.test", timeout=2)
    send(database, letter_id, [ELIOT, env.SignerSpec("executive", "John R. Tucker")])
    with database.transaction() as session:
        notice = session.scalar(select(Notice))
        assert (notice.status, notice.attempts) == ("failed", 1)
        assert "could not be reached" in notice.answer
        retry_at = notice.next_attempt_at
        assert retry_at is not None
        assert session.get(Counterpart, notice.counterpart_id).status == "ready"
    inbox = RefusingInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)) == 1
    finally:
        controller.stop()
    assert rows(database) == [("invitation", "signer", "eliot@capstone.test", "sent", 2)]
    assert [recipient(m) for m in inbox.messages] == ["eliot@capstone.test"]
    with database.transaction() as session:
        assert session.scalar(select(Counterpart.status).where(
            Counterpart.name == "Eliot Protsch")) == "sent"


def test_a_notice_is_claimed_before_it_is_sent(database, letter_id, inbox, runtime):
    send(database, letter_id, [ELIOT, env.SignerSpec("executive", "John R. Tucker")])
    with database.transaction() as session:
        notice_id = session.scalar(select(Notice.id))
    # Sent already: a second run (a retry after a timeout, a second worker) sends nothing.
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(notices.send_notice(
        database, notice_id, smtp=runtime.smtp, base_url=BASE, secret_key=SECRET)))
        for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["skipped"] * 3
    assert len(inbox.messages) == 1


@pytest.mark.skipif(server_database_url() is None,
                    reason="row locks and their deadlocks are PostgreSQL's: SQLite lets one "
                           "transaction write at a time")
def test_claiming_a_notice_waits_for_a_delivery_being_recorded_without_deadlock(
        database, letter_id, inbox, runtime):
    # Recording an invitation's delivery locks the envelope, then the letter (for its audit
    # event). A worker claiming another notice of the same letter then must not hold a lock
    # on the letter while it waits for the envelope: two workers once deadlocked so.
    with held_jobs(runtime):  # the invitations are made, and wait in a queue of their own
        send(database, letter_id)
        with database.transaction() as session:
            sent_events = list(session.scalars(select(Event.id).where(Event.type == "sent")))
        for event_id in sent_events:
            outbox.dispatch(database, event_id)
    with database.transaction() as session:
        notice_id = session.scalar(select(Notice.id).order_by(Notice.id))
    outcomes: list[str | BaseException] = []

    def deliver() -> None:
        try:
            outcomes.append(notices.send_notice(database, notice_id, smtp=runtime.smtp,
                                                base_url=BASE, secret_key=SECRET))
        except Exception as exc:  # a deadlock's victim: kept to be shown below
            outcomes.append(exc)

    with database.engine.connect() as watcher, database.transaction() as recording:
        recording.execute(select(Envelope.id).with_for_update())
        worker = threading.Thread(target=deliver)
        worker.start()
        deadline = time.monotonic() + 10
        while worker.is_alive() and time.monotonic() < deadline and not watcher.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar():
            time.sleep(0.05)
        recording.execute(select(Letter.id).with_for_update())
    worker.join(30)
    assert outcomes == ["sent"]
    assert rows(database, id=notice_id) == [
        ("invitation", "signer", "eliot@capstone.test", "sent", 1)]
    assert [recipient(m) for m in inbox.messages] == ["eliot@capstone.test"]


# --- reminders ---------------------------------------------------------------------------------

def reminders_to(inbox):
    return sorted(recipient(m) for m in inbox.messages if m["Subject"].startswith("Reminder"))


def test_reminders_come_when_due_once_each_and_stop_after_signing(database, letter_id, inbox):
    envelope_id, tokens = send(database, letter_id)
    with database.transaction() as session:
        sent_at = session.get(Envelope, envelope_id).created_at
    day = dt.timedelta(days=1)
    assert notices.queue_due_reminders(database, now=sent_at + 2 * day) == []
    # Due after 3 days; a second sweep at the same time (another worker) finds it claimed.
    first = notices.queue_due_reminders(database, now=sent_at + 3 * day + dt.timedelta(
        minutes=1))
    assert len(first) == 2
    assert notices.queue_due_reminders(database, now=sent_at + 3 * day + dt.timedelta(
        minutes=2)) == []
    assert reminders_to(inbox) == ["eliot@capstone.test", "jt@home.test"]
    # The reminder repeats the invitation's link: both work.
    eliot = token_of(tokens, database, "Eliot Protsch")
    reminder = next(m for m in inbox.messages if m["Subject"].startswith("Reminder")
                    and recipient(m) == "eliot@capstone.test")
    assert f"{BASE}/sign/{eliot}" in text_of(reminder) and TITLE in text_of(reminder)
    assert TITLE in html_of(reminder)
    no_foreign_link(inbox, {"eliot@capstone.test": eliot,
                            "jt@home.test": token_of(tokens, database, "John R. Tucker")})
    # Eliot signs: only John is reminded from now on, every 3 days, 3 times in all.
    sign(database, eliot)
    assert len(notices.queue_due_reminders(database, now=sent_at + 6 * day + dt.timedelta(
        minutes=2))) == 1
    assert len(notices.queue_due_reminders(database, now=sent_at + 9 * day + dt.timedelta(
        minutes=3))) == 1
    assert notices.queue_due_reminders(database, now=sent_at + 20 * day) == []
    assert reminders_to(inbox) == ["eliot@capstone.test"] + ["jt@home.test"] * 3
    with database.transaction() as session:
        counts = {c.name: (c.reminders_sent, c.next_reminder_at) for c in session.scalars(
            select(Counterpart))}
    assert counts == {"Eliot Protsch": (1, sent_at + 6 * day + dt.timedelta(minutes=1)),
                      "John R. Tucker": (3, None)}


def test_two_workers_sweeping_at_once_send_each_reminder_once(database, letter_id, inbox):
    envelope_id, _ = send(database, letter_id)
    with database.transaction() as session:
        due = session.get(Envelope, envelope_id).created_at + dt.timedelta(days=3, minutes=1)
    made: list[int] = []
    start = threading.Barrier(3)

    def sweep() -> None:
        start.wait()
        made.extend(notices.queue_due_reminders(database, now=due))

    workers = [threading.Thread(target=sweep) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(made) == 2
    assert reminders_to(inbox) == ["eliot@capstone.test", "jt@home.test"]
    assert sorted(r[2] for r in rows(database, kind="reminder")) == [
        "eliot@capstone.test", "jt@home.test"]


def test_the_periodic_sweep_runs_once_per_slot(database, letter_id, inbox):
    envelope_id, _ = send(database, letter_id, reminders=ReminderSettings(2, 1, 1))
    with database.transaction() as session:
        sent_at = session.get(Envelope, envelope_id).created_at
    later = sent_at + dt.timedelta(days=1, minutes=1)
    notices.sweep_notices.call_local(now=later)
    notices.sweep_notices.call_local(now=later)  # the same slot: another worker's copy
    assert reminders_to(inbox) == ["eliot@capstone.test", "jt@home.test"]
    assert len(rows(database, kind="reminder")) == 2


def test_no_reminders_when_turned_off_or_after_expiry(database, letter_id, inbox):
    envelope_id, _ = send(database, letter_id, reminders=ReminderSettings(0), link_days=5)
    with database.transaction() as session:
        sent_at = session.get(Envelope, envelope_id).created_at
        session.execute(Counterpart.__table__.update().values(
            next_reminder_at=sent_at + dt.timedelta(days=1)))
    # Reminders off: none even when one is (wrongly) scheduled; and none after expiry.
    assert notices.queue_due_reminders(database, now=sent_at + dt.timedelta(days=2)) == []
    with database.transaction() as session:
        session.get(Envelope, envelope_id).reminder_count = 3
    assert notices.queue_due_reminders(database, now=sent_at + dt.timedelta(days=6)) == []
    assert reminders_to(inbox) == []


def test_remind_now_waits_an_hour_between_reminders(database, letter_id, inbox):
    send(database, letter_id)
    with database.transaction() as session:
        eliot = session.scalar(select(Counterpart).where(Counterpart.name == "Eliot Protsch"))
        cid = eliot.id
    now = utcnow()
    with database.transaction() as session:
        notices.remind_now(session, letter_id, cid, SENDER, mail_configured=True,
                           secret_key=SECRET, now=now)
    assert reminders_to(inbox) == ["eliot@capstone.test"]
    with database.transaction() as session, pytest.raises(notices.ReminderTooSoon) as refused:
        notices.remind_now(session, letter_id, cid, SENDER, mail_configured=True,
                           secret_key=SECRET, now=now + dt.timedelta(minutes=59))
    assert refused.value.allowed_at == now + dt.timedelta(hours=1)
    with database.transaction() as session:
        notices.remind_now(session, letter_id, cid, SENDER, mail_configured=True,
                           secret_key=SECRET, now=now + dt.timedelta(minutes=61))
    assert reminders_to(inbox) == ["eliot@capstone.test"] * 2
    with database.transaction() as session:
        detail = session.scalars(select(Notice.detail).where(Notice.kind == "reminder")).all()
    assert [d["by"] for d in detail] == [SENDER, SENDER]


def test_only_reminders_the_server_accepted_count_and_a_failed_one_can_be_tried_again(
        database, letter_id, inbox, runtime):
    nobody = env.SignerSpec("executive", "John R. Tucker", "nobody@capstone.test")
    send(database, letter_id, [ELIOT, nobody], reminders=notices.NO_REMINDERS)
    with database.transaction() as session:
        ids = dict(session.execute(select(Counterpart.name, Counterpart.id)).all())
    now = utcnow()

    def remind(name, at):
        with database.transaction() as session:
            return notices.remind_now(session, letter_id, ids[name], SENDER,
                                      mail_configured=True, secret_key=SECRET, now=at).id

    def record():
        with database.transaction() as session:
            envelope = session.scalar(select(Envelope))
            return notices.reminder_record(envelope, now=now)["signers"]

    # Refused for good (550): not counted, and "Remind now" may be tried again at once.
    refused = remind("John R. Tucker", now)
    assert rows(database, id=refused) == [
        ("reminder", "signer", "nobody@capstone.test", "failed", 1)]
    john = record()[ids["John R. Tucker"]]
    assert (john["reminders_sent"], john["remind_allowed_at"]) == (0, None)
    remind("John R. Tucker", now + dt.timedelta(minutes=1))
    # The server unreachable: the reminder waits to be tried again, so none is counted and
    # the hour runs from it; once accepted, it counts.
    port = runtime.smtp.port
    runtime.smtp = SmtpSettings("127.0.0.1", free_port(), sender="legal@acme.test", timeout=2)
    retrying = remind("Eliot Protsch", now)
    assert rows(database, id=retrying)[0][3] == "failed"
    eliot = record()[ids["Eliot Protsch"]]
    assert (eliot["reminders_sent"], eliot["remind_allowed_at"]) == (
        0, now + notices.REMIND_NOW_GAP)
    with pytest.raises(notices.ReminderTooSoon):
        remind("Eliot Protsch", now + dt.timedelta(minutes=5))
    runtime.smtp = SmtpSettings("127.0.0.1", port, sender="legal@acme.test")
    assert notices.send_notice(database, retrying, smtp=runtime.smtp, base_url=BASE,
                               secret_key=SECRET) == "sent"
    assert record()[ids["Eliot Protsch"]]["reminders_sent"] == 1
    assert reminders_to(inbox) == ["eliot@capstone.test"]


def test_remind_now_refuses_a_signer_who_cannot_be_reminded(database, letter_id):
    _, tokens = send(database, letter_id, [ELIOT, env.SignerSpec("executive", "John")])
    with database.transaction() as session:
        ids = {c.name: c.id for c in session.scalars(select(Counterpart))}
    with database.transaction() as session, pytest.raises(StateError, match="no email"):
        notices.remind_now(session, letter_id, ids["John"], SENDER, mail_configured=True,
                           secret_key=SECRET)
    with database.transaction() as session, pytest.raises(StateError, match="not set up"):
        notices.remind_now(session, letter_id, ids["Eliot Protsch"], SENDER,
                           mail_configured=False, secret_key=SECRET)
    sign(database, tokens[ids["Eliot Protsch"]])
    with database.transaction() as session, pytest.raises(StateError, match="signed"):
        notices.remind_now(session, letter_id, ids["Eliot Protsch"], SENDER,
                           mail_configured=True, secret_key=SECRET)


# --- expiry warnings ----------------------------------------------------------------------------

def test_an_expiry_warning_goes_to_each_open_signer_and_the_sender_once(database, letter_id,
                                                                         inbox):
    envelope_id, tokens = send(database, letter_id, reminders=ReminderSettings(0))
    sign(database, token_of(tokens, database, "Eliot Protsch"))
    with database.transaction() as session:
        expires_at = session.get(Envelope, envelope_id).expires_at
    assert notices.queue_expiry_warnings(database, now=expires_at - dt.timedelta(days=3)) == []
    made = notices.queue_expiry_warnings(database, now=expires_at - dt.timedelta(days=2))
    again = notices.queue_expiry_warnings(database, now=expires_at - dt.timedelta(hours=1))
    assert len(made) == 2 and again == []
    warnings = [m for m in inbox.messages if "expire" in m["Subject"]]
    assert sorted(recipient(m) for m in warnings) == [SENDER, "jt@home.test"]
    to_john = next(m for m in warnings if recipient(m) == "jt@home.test")
    to_sender = next(m for m in warnings if recipient(m) == SENDER)
    john = token_of(tokens, database, "John R. Tucker")
    assert f"{BASE}/sign/{john}" in text_of(to_john) and f'href="{BASE}/sign/{john}"' in \
        html_of(to_john)
    for message in warnings:
        assert TITLE in text_of(message) and TITLE in html_of(message)
    assert "John R. Tucker has not signed yet" in " ".join(text_of(to_sender).split())
    assert f"{BASE}/letters/{letter_id}" in text_of(to_sender)
    assert "/sign/" not in text_of(to_sender) + html_of(to_sender)


# --- decline, completion, void ---------------------------------------------------------------

def test_a_decline_tells_the_sender_and_those_who_signed_with_the_reason(database, letter_id,
                                                                         inbox):
    _, tokens = send(database, letter_id)
    sign(database, token_of(tokens, database, "Eliot Protsch"))
    with database.transaction() as session:
        env.decline_counterpart(session, token_of(tokens, database, "John R. Tucker"),
                                reason="The consulting fee is wrong & too low", actor=SIGNER)
    dispatch_again(database, ("declined",))
    declined = [m for m in inbox.messages if m["Subject"] == f"Declined: {TITLE}"]
    assert sorted(recipient(m) for m in declined) == [SENDER, "eliot@capstone.test"]
    for message in declined:
        assert "John R. Tucker declined" in " ".join(text_of(message).split())
        assert "The consulting fee is wrong & too low" in text_of(message)
        assert "The consulting fee is wrong &amp; too low" in html_of(message)  # escaped
        assert TITLE in text_of(message) and TITLE in html_of(message)
        assert "/sign/" not in text_of(message) + html_of(message)
    assert len(rows(database, kind="declined")) == 2


@pytest.mark.parametrize("limit", [None, 1000], ids=["attached", "too-large-linked"])
def test_completion_sends_the_executed_pdf_once_to_signers_and_sender(
        database, letter_id, inbox, runtime, sealer, converter, limit):
    if limit is not None:
        runtime.settings = {**runtime.settings, "NOTICE_ATTACHMENT_MAX_BYTES": limit}
    envelope_id, tokens = send(database, letter_id)
    for token in tokens.values():
        sign(database, token)
    env.assemble_envelope(database, envelope_id, sealer, converter)
    dispatch_again(database, ("executed",))
    done = [m for m in inbox.messages if m["Subject"] == f"Fully executed: {TITLE}"]
    assert sorted(recipient(m) for m in done) == [SENDER, "eliot@capstone.test",
                                                  "jt@home.test"]
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        document = session.get(Document, envelope.executed_document_id)
        executed = blob_bytes(session, document.blob_sha256)
        filename = document.filename
    by_email = {"eliot@capstone.test": token_of(tokens, database, "Eliot Protsch"),
                "jt@home.test": token_of(tokens, database, "John R. Tucker")}
    for message in done:
        text = text_of(message)
        assert TITLE in text and TITLE in html_of(message)
        if limit is None:
            assert attachments_of(message) == [(filename, executed)]
        else:
            assert attachments_of(message) == []
            assert "too large to attach" in text
            own = (f"{BASE}/letters/{letter_id}" if recipient(message) == SENDER
                   else f"{BASE}/sign/{by_email[recipient(message)]}")
            assert own in text
    no_foreign_link(inbox, by_email)
    assert len(rows(database, kind="completed")) == 3


def test_a_void_tells_every_signer_holding_a_link_signed_or_not(database, letter_id, inbox):
    _, tokens = send(database, letter_id)
    sign(database, token_of(tokens, database, "Eliot Protsch"))
    with database.transaction() as session:
        env.void_envelope(session, letter_id, "Wrong <b>severance</b> terms", STAFF)
    dispatch_again(database, ("voided",))
    voided = [m for m in inbox.messages if m["Subject"].startswith("Withdrawn")]
    assert sorted(recipient(m) for m in voided) == ["eliot@capstone.test", "jt@home.test"]
    for message in voided:
        assert "Wrong <b>severance</b> terms" in text_of(message)
        assert "Wrong &lt;b&gt;severance&lt;/b&gt; terms" in html_of(message)
        assert TITLE in text_of(message) and TITLE in html_of(message)
        assert "/sign/" not in text_of(message) + html_of(message)
    by_recipient = {recipient(m): m for m in voided}
    # The one who signed: their signature will not be used; the other: nothing left to sign.
    signed_text = " ".join(text_of(by_recipient["eliot@capstone.test"]).split())
    signed_html = " ".join(html_of(by_recipient["eliot@capstone.test"]).split())
    for words in (signed_text, signed_html):
        assert "your signature will not be used" in words
        assert "nothing is left for you to sign" not in words
    open_text = " ".join(text_of(by_recipient["jt@home.test"]).split())
    assert "nothing is left for you to sign" in open_text
    assert "signature will not be used" not in open_text


def test_each_notice_s_final_outcome_is_in_the_audit_record(database, letter_id, inbox,
                                                              runtime):
    nobody = env.SignerSpec("executive", "John R. Tucker", "nobody@capstone.test")
    _, tokens = send(database, letter_id, [ELIOT, nobody], reminders=notices.NO_REMINDERS)
    with database.transaction() as session:
        ids = dict(session.execute(select(Counterpart.name, Counterpart.id)).all())

    def remind(name):
        with database.transaction() as session:
            return notices.remind_now(session, letter_id, ids[name], SENDER,
                                      mail_configured=True, secret_key=SECRET).id

    def notice_events():
        with database.transaction() as session:
            return [(e.type, e.detail["notice"], e.detail["to"],
                     e.detail.get("answer") or e.detail.get("error"))
                    for e in audit.events_of(session, letter_id) if "notice" in e.detail]

    remind("John R. Tucker")  # refused for good
    with held_jobs(runtime):  # a reminder waits; the signer signs; it is no longer needed
        cancelled = remind("Eliot Protsch")
        sign(database, token_of(tokens, database, "Eliot Protsch"))
        assert notices.send_notice(database, cancelled, smtp=runtime.smtp, base_url=BASE,
                                   secret_key=SECRET) == "cancelled"
    with database.transaction() as session:
        env.void_envelope(session, letter_id, "Wrong terms", STAFF)
    dispatch_again(database, ("voided",))
    refusal = "550 5.1.1 <nobody@capstone.test>: Recipient address rejected: User unknown"
    assert sorted(notice_events()) == [
        ("email_failed", "reminder", "nobody@capstone.test", refusal),
        ("email_failed", "voided", "nobody@capstone.test", refusal),
        ("emailed", "voided", "eliot@capstone.test", "250 2.0.0 Ok: queued as 4F1A")]
    with database.transaction() as session:
        assert audit.verify_chain(session, letter_id).ok


def test_no_notice_without_an_email_or_a_mail_server(database, letter_id, inbox):
    jobs.runtime().smtp = None
    send(database, letter_id)
    assert rows(database) == [] and inbox.messages == []


# --- links kept and settings ---------------------------------------------------------------

def test_a_kept_link_opens_only_with_the_key_and_row_it_was_sealed_for():
    sealed = notices.seal_link(7, "the-token", SECRET)
    assert "the-token" not in sealed
    assert notices.unseal_link(7, sealed, SECRET) == "the-token"
    assert notices.unseal_link(8, sealed, SECRET) is None
    assert notices.unseal_link(7, sealed, SECRET + "x") is None
    assert notices.unseal_link(7, "not base64!", SECRET) is None
    assert notices.seal_link(7, "the-token", SECRET) != sealed  # a fresh nonce each time


def test_a_new_link_is_kept_in_place_of_the_old(database, letter_id):
    _, tokens = send(database, letter_id)
    with database.transaction() as session:
        eliot = session.scalar(select(Counterpart).where(Counterpart.name == "Eliot Protsch"))
        assert notices.kept_link(eliot, SECRET) == tokens[eliot.id]
        issued = env.reissue_link(session, letter_id, eliot.id, STAFF)
        assert notices.kept_link(eliot, SECRET) is None  # the kept one is not current now
        notices.keep_link(session, eliot.id, issued.token, SECRET)
        session.refresh(eliot)
        assert notices.kept_link(eliot, SECRET) == issued.token


@pytest.mark.parametrize(("raw", "settings"), [
    (None, ReminderSettings(3, 3, 3)), (0, ReminderSettings(0, 3, 3)),
    (5, ReminderSettings(5, 3, 3)),
    ({"count": 2, "first_after_days": 1, "every_days": 7}, ReminderSettings(2, 1, 7)),
    ({"every_days": 2}, ReminderSettings(3, 3, 2))])
def test_reminder_settings(raw, settings):
    assert notices.parse_reminders(raw) == settings


@pytest.mark.parametrize(("raw", "field"), [
    (-1, "reminders"), (11, "reminders"), (True, "reminders"), ("3", "reminders"),
    ({"count": 1.5}, "reminders.count"), ({"first_after_days": 0},
                                          "reminders.first_after_days"),
    ({"every_days": 400}, "reminders.every_days"), ({"often": 1}, "reminders.often")])
def test_bad_reminder_settings_name_the_field(raw, field):
    with pytest.raises(CounterpartError, match=re.escape(field) + ":"):
        notices.parse_reminders(raw)


def test_notice_rows_are_made_once_per_key(database, letter_id):
    envelope_id, _ = send(database, letter_id, [ELIOT, env.SignerSpec("executive", "John")])
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        again = notices.queue_notice(session, key=session.scalar(select(Notice.key)),
                                     envelope=envelope, kind="invitation", audience="signer",
                                     to_email="eliot@capstone.test")
        assert again is None
        assert session.scalar(select(func.count()).select_from(Notice)) == 1
