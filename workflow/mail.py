"""Email the signing links when SMTP settings are given, and say what the mail server did with
each one.

An invitation counts as delivered to the mail server only when the server accepted it: it took
the recipient (``RCPT``) and the message (``DATA``). Each invitation is its own message, so one
refused address does not stop the others; the server's answer is kept either way, for the
audit record.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

__all__ = ["SmtpSettings", "SigningInvitation", "Delivery", "send_signing_invitations"]


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
    counterpart_id: int | None = None


@dataclass(frozen=True)
class Delivery:
    """What the mail server did with one invitation.

    ``accepted`` is True only when the server took the recipient and the message; ``answer``
    is its reply (``"250 2.0.0 Ok: queued as 4F1A"``) or, when no server answered, why.
    """

    invitation: SigningInvitation
    accepted: bool
    answer: str
    at: dt.datetime

    @property
    def to(self) -> str:
        return self.invitation.email


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
        "decline to sign from the same page. After you sign, the same link gives you a copy of "
        "what you signed, and the executed letter once everyone has signed.\n"
    )
    return message


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(f"{code} {text}".split())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.security == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port,
                                                timeout=settings.timeout,
                                                context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        if settings.security == "starttls":
            client.starttls(context=ssl.create_default_context())
        if settings.username:
            client.login(settings.username, settings.password or "")
    except BaseException:
        client.close()
        raise
    return client


def _send_one(client: smtplib.SMTP, settings: SmtpSettings,
              invitation: SigningInvitation) -> tuple[bool, str]:
    """Hand one message to the server step by step, to keep its answer to each step."""
    message = _message(settings, invitation)
    international = not (settings.sender.isascii() and invitation.email.isascii())
    client.ehlo_or_helo_if_needed()
    options: list[str] = []
    if international:
        if not client.has_extn("smtputf8"):
            return False, (f"the mail server cannot take the address {invitation.email} "
                           "(it does not support SMTPUTF8)")
        options = ["SMTPUTF8", "BODY=8BITMIME"]
    data = message.as_bytes(policy=policy.SMTPUTF8 if international else policy.SMTP)
    code, text = client.mail(settings.sender, options)
    if code != 250:
        client.rset()
        return False, _answer(code, text)
    code, text = client.rcpt(invitation.email)
    if code not in (250, 251):
        client.rset()
        return False, _answer(code, text)
    code, text = client.data(data)
    if code != 250:
        client.rset()
        return False, _answer(code, text)
    return True, _answer(code, text)


def send_signing_invitations(settings: SmtpSettings,
                             invitations: Sequence[SigningInvitation]) -> list[Delivery]:
    """Send each invitation; return, in order, what the mail server did with each.

    Never raises for a delivery problem: a server that cannot be reached, refuses the login,
    refuses an address or a message, or drops the connection fails the invitations concerned,
    each with the reason.
    """
    results: list[Delivery] = []
    if not invitations:
        return results
    where = f"{settings.host}:{settings.port}"
    try:
        client = _connect(settings)
    except (OSError, smtplib.SMTPException) as exc:
        reason = f"the mail server {where} could not be reached or refused the login ({exc})"
        return [Delivery(i, False, reason, _now()) for i in invitations]
    try:
        for index, invitation in enumerate(invitations):
            try:
                accepted, answer = _send_one(client, settings, invitation)
            except smtplib.SMTPServerDisconnected as exc:
                reason = f"the mail server {where} closed the connection ({exc})"
                results.extend(Delivery(i, False, reason, _now())
                               for i in invitations[index:])
                break
            except smtplib.SMTPResponseException as exc:
                accepted, answer = False, _answer(exc.smtp_code, exc.smtp_error)
            except (OSError, smtplib.SMTPException) as exc:
                reason = f"the connection to the mail server {where} failed ({exc})"
                results.extend(Delivery(i, False, reason, _now())
                               for i in invitations[index:])
                break
            results.append(Delivery(invitation, accepted, answer, _now()))
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return results
