"""Helpers for tests that email through a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import email
import email.message
from typing import Any

from flask import Flask

from web.jobs import get_runtime, smtp_settings_from


def use_mail(app: Flask, port: int, **config: Any) -> None:
    """Point an app made already at the SMTP server on ``port`` (its config, and the runtime
    its jobs read the mail settings from)."""
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_STARTTLS=False, **config)
    get_runtime(app).smtp = smtp_settings_from(app.config)


def text_of(message: email.message.Message) -> str:
    """The plain-text part of a message."""
    part = message.get_body(("plain",)) if hasattr(message, "get_body") else None
    if part is None:
        part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


def html_of(message: email.message.Message) -> str | None:
    """The HTML part of a message, if it has one."""
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode()
    return None


def attachments_of(message: email.message.Message) -> list[tuple[str, bytes]]:
    """The attached files of a message: (filename, bytes)."""
    return [(part.get_filename(), part.get_payload(decode=True)) for part in message.walk()
            if part.get_filename()]


def recipient(message: email.message.Message) -> str:
    """The address a message was sent to."""
    return email.utils.parseaddr(message["To"])[1]


class RefusingInbox:
    """An SMTP handler that refuses some mailboxes, as a server does for an unknown user, and
    keeps every message it takes."""

    def __init__(self, *refused: str) -> None:
        self.refused = set(refused)
        self.messages: list[email.message.Message] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address in self.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 2.0.0 Ok: queued as 4F1A"
