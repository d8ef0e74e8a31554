"""Signing links reach signers through a real SMTP server on loopback, and what the server did
with each address is reported: accepted with its answer, or refused with its reason."""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.utils

import pytest
from mailing import attachments_of, html_of, text_of
from serving import free_port

from workflow.mail import (
    Attachment,
    Mail,
    SigningInvitation,
    SmtpSettings,
    send_mail,
    send_signing_invitations,
)


def invitation(name: str, address: str, link: str) -> SigningInvitation:
    return SigningInvitation(name, address, "Separation letter", link, "August 23, 2006")


class RefusingInbox:
    """An SMTP handler that refuses one mailbox, as a server does for an unknown user."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.messages: list[email.message.Message] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address == self.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 2.0.0 Ok: queued as 4F1A"


@pytest.fixture()
def refusing_server():
    from aiosmtpd.controller import Controller

    inbox = RefusingInbox("nobody@acme.test")
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


def test_each_signer_gets_their_own_link(smtp_inbox):
    port, inbox = smtp_inbox
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="legal@acme.test")
    deliveries = send_signing_invitations(settings, [
        invitation("Eliot Protsch", "eliot@acme.test", "http://127.0.0.1:5000/sign/abc"),
        invitation("Zoë O'Brien", "zoe@acme.test", "http://127.0.0.1:5000/sign/def"),
    ])
    assert [(d.to, d.accepted, d.answer) for d in deliveries] == [
        ("eliot@acme.test", True, "250 OK"), ("zoe@acme.test", True, "250 OK")]
    assert [m["To"] for m in inbox.messages][0] == "Eliot Protsch <eliot@acme.test>"
    bodies = [m.get_payload(decode=True).decode() for m in inbox.messages]
    assert "http://127.0.0.1:5000/sign/abc" in bodies[0]
    assert "/sign/def" in bodies[1] and "/sign/abc" not in bodies[1]
    assert "the same link gives you a copy of what you signed" in " ".join(bodies[0].split())
    assert inbox.messages[1]["Subject"] == "Please sign: Separation letter"
    to = str(email.header.make_header(email.header.decode_header(inbox.messages[1]["To"])))
    assert to == "Zoë O'Brien <zoe@acme.test>"


def test_a_refused_address_fails_alone_with_the_servers_answer(refusing_server):
    port, inbox = refusing_server
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="legal@acme.test")
    deliveries = send_signing_invitations(settings, [
        invitation("Nobody", "nobody@acme.test", "http://x/sign/1"),
        invitation("Eliot Protsch", "eliot@acme.test", "http://x/sign/2"),
    ])
    refused, accepted = deliveries
    assert not refused.accepted
    assert refused.answer.startswith("550 5.1.1 <nobody@acme.test>")
    assert accepted.accepted and accepted.answer == "250 2.0.0 Ok: queued as 4F1A"
    assert [email.utils.parseaddr(m["To"])[1] for m in inbox.messages] == ["eliot@acme.test"]


def test_an_unreachable_server_fails_every_invitation_with_the_reason():
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2)
    deliveries = send_signing_invitations(settings, [
        invitation("A", "a@b.test", "http://x/sign/1"),
        invitation("B", "b@b.test", "http://x/sign/2")])
    assert [d.accepted for d in deliveries] == [False, False]
    assert all("could not be reached" in d.answer and "127.0.0.1" in d.answer
               for d in deliveries)
    assert send_signing_invitations(settings, []) == []


def test_a_mail_with_html_and_an_attachment_reaches_the_server_whole(smtp_inbox):
    port, inbox = smtp_inbox
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="legal@acme.test")
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40
    result = send_mail(settings, Mail(
        "zoe@acme.test", "Fully executed: Separation letter", "The letter is attached.\n",
        to_name="Zoë O'Brien", html="<p>The letter &amp; its certificate are attached.</p>",
        attachments=(Attachment("separation-executed.pdf", pdf),)))
    assert (result.accepted, result.answer, result.permanent) == (True, "250 OK", False)
    (message,) = inbox.messages
    assert message.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html",
        "application/pdf"]
    assert text_of(message).splitlines() == ["The letter is attached."]
    assert html_of(message).splitlines() == [
        "<p>The letter &amp; its certificate are attached.</p>"]
    assert attachments_of(message) == [("separation-executed.pdf", pdf)]


def test_a_refusal_is_for_good_and_an_unreachable_server_is_passing(refusing_server):
    port, _ = refusing_server
    refused = send_mail(SmtpSettings(host="127.0.0.1", port=port),
                        Mail("nobody@acme.test", "Reminder", "Please sign."))
    assert not refused.accepted and refused.permanent
    assert refused.answer.startswith("550 5.1.1")
    unreachable = send_mail(SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2),
                            Mail("eliot@acme.test", "Reminder", "Please sign."))
    assert not unreachable.accepted and not unreachable.permanent
    assert "could not be reached" in unreachable.answer


def test_a_long_subject_is_not_folded_before_its_first_word(smtp_inbox):
    port, inbox = smtp_inbox
    subject = "Declined: Separation letter of John R. Tucker, Capstone Turbine Corporation"
    send_mail(SmtpSettings(host="127.0.0.1", port=port), Mail("a@acme.test", subject, "x"))
    assert inbox.messages[0]["Subject"] == subject


def test_every_message_is_dated_in_utc(smtp_inbox):
    port, inbox = smtp_inbox
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="legal@acme.test")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    send_signing_invitations(settings, [
        invitation("Eliot Protsch", "eliot@acme.test", "http://127.0.0.1:5000/sign/abc")])
    send_mail(settings, Mail("zoe@acme.test", "Reminder: please sign", "Please sign.\n"))
    after = dt.datetime.now(dt.UTC)
    assert len(inbox.messages) == 2
    for message in inbox.messages:
        dated = email.utils.parsedate_to_datetime(message["Date"])
        assert dated.utcoffset() == dt.timedelta(0)
        assert before <= dated <= after
