"""Email the signing links when SMTP settings are given, and say what the mail server did with
each one; likewise the one-time codes signers confirm their address with and the set-password
links of invited or reset accounts, and the notices of :mod:`workflow.notices` (:func:`send_mail`:
plain text, with an HTML alternative and attachments when given).

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
from email.utils import format_datetime, formataddr, make_msgid

__all__ = ["SmtpSettings", "SigningInvitation", "Delivery", "send_signing_invitations",
           "Mail", "MailResult", "Attachment", "send_mail", "build_message",
           "signer_code_mail", "account_link_mail"]


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


@dataclass(frozen=True)
class Attachment:
    """A file sent with a :class:`Mail`: its name, bytes and media type."""

    filename: str
    content: bytes
    media_type: str = "application/pdf"


@dataclass(frozen=True)
class Mail:
    """One message of the app's own: to whom, the subject and the plain-text body; ``html``
    adds an HTML alternative of the same words, ``attachments`` files."""

    to: str
    subject: str
    body: str
    to_name: str = ""
    sender_name: str = "Counterpart"
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class MailResult:
    """What the mail server did with one :class:`Mail`: ``accepted`` only when it took the
    recipient and the message; ``answer`` is its reply or why there was none.

    ``permanent`` is True when trying again cannot help: the server refused the sender, the
    address or the message for good (a 5xx reply), or cannot take the address at all. An
    unreachable server, a dropped connection or a 4xx reply is passing.
    """

    accepted: bool
    answer: str
    at: dt.datetime
    permanent: bool = False


def signer_code_mail(*, name: str, email: str, title: str, code: str, minutes: int) -> Mail:
    """The message that gives a signer the one-time code that opens their signing page."""
    return Mail(email, f"Your code to open \"{title}\"",
                f"Dear {name},\n\n"
                f"Your one-time code to open your signing page for \"{title}\" is:\n\n"
                f"    {code}\n\n"
                f"Type it on the signing page. It works for {minutes} minutes, once. If you did "
                "not ask for it, someone may have your signing link: do not share this code, "
                "and tell the sender.\n", to_name=name)


def account_link_mail(*, email: str, link: str, purpose: str, hours: int) -> Mail:
    """The message with an invited or reset account's one-time set-password link."""
    if purpose == "invite":
        subject = "Your Counterpart account"
        opening = ("An administrator made you an account on Counterpart. Choose your password "
                   "through this private link:")
    else:
        subject = "Choose a new Counterpart password"
        opening = ("An administrator reset the password of your Counterpart account. Choose a "
                   "new one through this private link:")
    return Mail(email, subject,
                f"Hello,\n\n{opening}\n\n    {link}\n\n"
                f"The link works once, for {hours} hours. If you did not expect this message, "
                "tell your administrator.\n")


def _message(settings: SmtpSettings, invitation: SigningInvitation) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((invitation.sender_name, settings.sender))
    message["To"] = formataddr((invitation.name, invitation.email))
    message["Subject"] = f"Please sign: {invitation.title}"
    message["Date"] = format_datetime(_now())
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


# Headers are folded at 998 characters, the limit of RFC 5322, not 78: the email package folds
# some long subjects ("Declined: <a long title>") before their first word, which a reader then
# sees with a leading space.
_SMTP = policy.SMTP.clone(max_line_length=998)
_SMTPUTF8 = policy.SMTPUTF8.clone(max_line_length=998)


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
    """Hand one invitation to the server."""
    return _hand_over(client, settings, _message(settings, invitation), invitation.email)


def _hand_over(client: smtplib.SMTP, settings: SmtpSettings, message: EmailMessage,
               recipient: str) -> tuple[bool, str]:
    """Hand one message to the server step by step, to keep its answer to each step."""
    international = not (settings.sender.isascii() and recipient.isascii())
    client.ehlo_or_helo_if_needed()
    options: list[str] = []
    if international:
        if not client.has_extn("smtputf8"):
            return False, (f"the mail server cannot take the address {recipient} "
                           "(it does not support SMTPUTF8)")
        options = ["SMTPUTF8", "BODY=8BITMIME"]
    data = message.as_bytes(policy=_SMTPUTF8 if international else _SMTP)
    code, text = client.mail(settings.sender, options)
    if code != 250:
        client.rset()
        return False, _answer(code, text)
    code, text = client.rcpt(recipient)
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


def build_message(settings: SmtpSettings, mail: Mail) -> EmailMessage:
    """Make the message of a :class:`Mail`: its text, then (multipart/alternative) its HTML,
    then (multipart/mixed) its attachments."""
    message = EmailMessage()
    message["From"] = formataddr((mail.sender_name, settings.sender))
    message["To"] = formataddr((mail.to_name, mail.to)) if mail.to_name else mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(_now())
    message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    message.set_content(mail.body)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    for attachment in mail.attachments:
        maintype, _, subtype = attachment.media_type.partition("/")
        message.add_attachment(attachment.content, maintype=maintype,
                               subtype=subtype or "octet-stream",
                               filename=attachment.filename)
    return message


def _refused_for_good(answer: str) -> bool:
    """A 5xx reply refuses for good; so does a server that cannot take the address."""
    return answer[:1] == "5" and answer[:3].isdigit() or "cannot take the address" in answer


def send_mail(settings: SmtpSettings, mail: Mail) -> MailResult:
    """Send one message of the app's own; return what the mail server did with it.

    Never raises for a delivery problem: an unreachable server, a refused login, address or
    message, or a dropped connection is a result that was not accepted, with the reason.
    """
    message = build_message(settings, mail)
    where = f"{settings.host}:{settings.port}"
    try:
        client = _connect(settings)
    except (OSError, smtplib.SMTPException) as exc:
        return MailResult(False, f"the mail server {where} could not be reached or refused "
                                 f"the login ({exc})", _now())
    try:
        accepted, answer = _hand_over(client, settings, message, mail.to)
    except smtplib.SMTPResponseException as exc:
        accepted, answer = False, _answer(exc.smtp_code, exc.smtp_error)
    except (OSError, smtplib.SMTPException) as exc:
        accepted, answer = False, f"the connection to the mail server {where} failed ({exc})"
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return MailResult(accepted, answer, _now(),
                      permanent=not accepted and _refused_for_good(answer))
