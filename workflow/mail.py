"""Email the signing links when SMTP settings are given."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from .errors import CounterpartError

__all__ = ["SmtpSettings", "SigningInvitation", "send_signing_invitations"]


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send mail: ``security`` is ``none``, ``starttls`` or ``ssl``."""

    host: str
    port: int = 25
    sender: str = "counterpart@localhost"
    username: str | None = None
    password: str | None = None
    security: str = "none"
    timeout: float = 20.0


@dataclass(frozen=True)
class SigningInvitation:
    """One signer's email: to whom, the letter's title and the private link."""

    name: str
    email: str
    title: str
    link: str
    expires_on: str
    sender_name: str = "Counterpart"


def _message(settings: SmtpSettings, invitation: SigningInvitation) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((invitation.sender_name, settings.sender))
    message["To"] = formataddr((invitation.name, invitation.email))
    message["Subject"] = f"Please sign: {invitation.title}"
    message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    message.set_content(
        f"Dear {invitation.name},\n\n"
        f"You are asked to sign your counterpart of \"{invitation.title}\".\n\n"
        f"Open this private link to read the letter and sign it electronically:\n\n"
        f"    {invitation.link}\n\n"
        f"The link is for you alone and works until {invitation.expires_on}. You may also "
        "decline to sign from the same page.\n"
    )
    return message


def send_signing_invitations(settings: SmtpSettings,
                             invitations: Sequence[SigningInvitation]) -> int:
    """Send each invitation; return how many were sent. Raise CounterpartError on failure."""
    if not invitations:
        return 0
    try:
        if settings.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port,
                                                    timeout=settings.timeout,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with client:
            if settings.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if settings.username:
                client.login(settings.username, settings.password or "")
            for invitation in invitations:
                client.send_message(_message(settings, invitation))
    except (OSError, smtplib.SMTPException) as exc:
        raise CounterpartError(f"The signing emails could not be sent through "
                               f"{settings.host}:{settings.port} ({exc}); copy the links "
                               "from the letter page instead.") from exc
    return len(invitations)
