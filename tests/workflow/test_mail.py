"""Signing links reach signers through a real SMTP server on loopback."""

from __future__ import annotations

import pytest
from serving import free_port

from workflow.errors import CounterpartError
from workflow.mail import SigningInvitation, SmtpSettings, send_signing_invitations


def test_each_signer_gets_their_own_link(smtp_inbox):
    port, inbox = smtp_inbox
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="legal@acme.test")
    sent = send_signing_invitations(settings, [
        SigningInvitation("Eliot Protsch", "eliot@acme.test", "Separation letter",
                          "http://127.0.0.1:5000/sign/abc", "August 23, 2006"),
        SigningInvitation("Zoë O'Brien", "zoe@acme.test", "Separation letter",
                          "http://127.0.0.1:5000/sign/def", "August 23, 2006"),
    ])
    assert sent == 2
    assert [m["To"] for m in inbox.messages][0] == "Eliot Protsch <eliot@acme.test>"
    bodies = [m.get_payload(decode=True).decode() for m in inbox.messages]
    assert "http://127.0.0.1:5000/sign/abc" in bodies[0]
    assert "/sign/def" in bodies[1] and "/sign/abc" not in bodies[1]
    assert inbox.messages[1]["Subject"] == "Please sign: Separation letter"


def test_unreachable_server_is_a_clear_error():
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(CounterpartError, match="could not be sent through 127.0.0.1"):
        send_signing_invitations(settings, [SigningInvitation(
            "A", "a@b.test", "T", "http://x/sign/1", "soon")])
