"""The stored records: accounts, letters and their versions, documents, envelopes, events.

Document bytes live in the database itself, content-addressed by SHA-256 (:class:`Blob`):
a document and the row that names it commit together, and a backup is one database copy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = ["Base", "User", "ApiToken", "StaffSession", "SessionNote", "Blob", "Letter",
           "LetterVersion", "Document", "Envelope", "Counterpart", "Event", "utcnow",
           "AccountLink", "RecoveryCode", "AppSetting", "SignerCode", "Notice"]


def utcnow() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and read back as an aware UTC datetime on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[dt.datetime | None]
    disabled_at: Mapped[dt.datetime | None]
    """Set while the account may not sign in or use its API tokens."""
    role: Mapped[str] = mapped_column(String(16), server_default="staff")
    """``admin``, ``staff`` or ``read_only``; ``is_admin`` is kept in step with it (see
    :func:`_role_and_admin_flag`), so code that sets only ``is_admin`` still works."""
    password_set_at: Mapped[dt.datetime | None]
    """When its owner last chose a password; None while an invitation or reset waits."""
    totp_secret: Mapped[str | None] = mapped_column(Text)
    """The two-factor secret, encrypted with a key derived from the app's secret key."""
    totp_enabled_at: Mapped[dt.datetime | None]
    """Set while two-factor sign-in is on for the account."""
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    """The 30-second step of the last code accepted: a code is never accepted twice."""


@event.listens_for(User, "before_insert")
@event.listens_for(User, "before_update")
def _role_and_admin_flag(_mapper: Any, _connection: Any, user: User) -> None:
    """Keep ``role`` and the older ``is_admin`` flag saying the same thing.

    A new account given only ``is_admin`` gets the role it means; a changed role sets the
    flag, and a changed flag alone changes the role between administrator and staff.
    """
    state = inspect(user)
    role_changed = state.attrs.role.history.has_changes()
    flag_changed = state.attrs.is_admin.history.has_changes()
    if user.role is None:
        user.role = "admin" if user.is_admin else "staff"
    elif flag_changed and not role_changed and state.persistent:
        user.role = "admin" if user.is_admin else ("staff" if user.role == "admin"
                                                   else user.role)
    user.is_admin = user.role == "admin"


class AccountLink(Base):
    """A one-time link to choose a password (an invitation or a reset); only its SHA-256 is
    kept."""

    __tablename__ = "account_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(254))

    user: Mapped[User] = relationship()


class RecoveryCode(Base):
    """One two-factor recovery code of an account, stored as its SHA-256; usable once."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None]


class AppSetting(Base):
    """A setting administrators change in the admin pages (a JSON value under a key)."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(254))


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime]

    user: Mapped[User] = relationship()


class StaffSession(Base):
    """One sign-in of a member of staff; the cookie holds the token whose SHA-256 is here.

    A session counts while ``ended_at`` is empty and ``expires_at`` is ahead; signing out,
    a new password and disabling the account end it at once.
    """

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    pending: Mapped[str | None] = mapped_column(String(32))
    """None for a full sign-in; ``two_factor`` while the second factor is awaited,
    ``setup_two_factor`` while an account that must have it sets it up."""

    user: Mapped[User] = relationship()


class SessionNote(Base):
    """Something shown once to one session (signing links just issued), kept encrypted with
    a key derived from that session's cookie token, and deleted when shown."""

    __tablename__ = "session_notes"
    __table_args__ = (UniqueConstraint("session_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("staff_sessions.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class Blob(Base):
    """Bytes of a document, stored once per distinct content."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Template(Base):
    """A kind of agreement in the template library, named by its key; its versions make
    letters."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    """Loaded from the template folder that ships with the app (``DOCX_TEMPLATE_DIR``)."""
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[TemplateVersion]] = relationship(
        back_populates="template", order_by="TemplateVersion.number")


class TemplateVersion(Base):
    """One version of a template: its .docx (a blob) and its TOML schema.

    A version is a ``draft`` (its schema may still be edited) until it is ``published``; a
    published version never changes, and only published versions make letters. Each letter
    version names the template version it was made from.
    """

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    docx_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    schema_toml: Mapped[str] = mapped_column(Text)
    filename: Mapped[str] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(16))
    """``builtin`` (from the template folder) or ``upload`` (by an administrator)."""
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]
    published_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    test_pdf_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    """The PDF of the newest test render with the example terms (cleared by an edit)."""
    test_rendered_at: Mapped[dt.datetime | None]

    template: Mapped[Template] = relationship(back_populates="versions")


class Letter(Base):
    __tablename__ = "letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    template: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300), default="", server_default="")
    """What the letter is called: its template's ``document_title`` filled with its terms."""
    file_stem: Mapped[str] = mapped_column(String(80), default="letter",
                                           server_default="letter")
    """The start of its files' names: the template's ``file_stem``, filled and slugged."""
    list_values: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, default=list)
    """The terms the letters table shows: ``[{"term", "label", "value"}]``, values as the
    letter writes them (the template's ``list_columns``)."""
    status: Mapped[str] = mapped_column(String(32), index=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    """What the letter is found by (its title, listed terms and signers), case- and
    accent-folded."""

    versions: Mapped[list[LetterVersion]] = relationship(
        back_populates="letter", order_by="LetterVersion.number")
    created_by: Mapped[User | None] = relationship()


class LetterVersion(Base):
    __tablename__ = "letter_versions"
    __table_args__ = (UniqueConstraint("letter_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    template_name: Mapped[str] = mapped_column(String(64))
    template_sha256: Mapped[str] = mapped_column(String(64))
    template_version_id: Mapped[int | None] = mapped_column(ForeignKey("template_versions.id"))
    """The template version (schema and .docx) this version was made from."""
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    letter: Mapped[Letter] = relationship(back_populates="versions")
    documents: Mapped[list[Document]] = relationship(
        back_populates="version", order_by="Document.id")


class Document(Base):
    """A file of a letter: its generated .docx or PDF, a signed counterpart, the executed PDF.

    ``status`` is ``pending`` until the bytes exist, ``generating`` while a background job
    makes them, then ``ready`` or ``failed``; ``claimed_at`` is when its job was last queued or
    started (the sweep of :func:`workflow.letters.resume_pending_pdfs` reads it; nothing claims).
    """

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("letter_versions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    blob_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    size: Mapped[int | None] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    version: Mapped[LetterVersion | None] = relationship(back_populates="documents")


class Envelope(Base):
    """One round of execution in counterparts of one version of a letter."""

    __tablename__ = "envelopes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("letter_versions.id"))
    letter_pdf_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    status: Mapped[str] = mapped_column(String(32))
    signing_order: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[dt.datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[dt.datetime | None]
    voided_at: Mapped[dt.datetime | None]
    void_reason: Mapped[str | None] = mapped_column(Text)
    assembly_state: Mapped[str | None] = mapped_column(String(16))
    assembly_claimed_at: Mapped[dt.datetime | None]
    assembly_error: Mapped[str | None] = mapped_column(Text)
    executed_document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    reminder_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many reminders each signer gets at most (0: none); see :mod:`workflow.notices`."""
    reminder_first_after_days: Mapped[int] = mapped_column(Integer, default=3,
                                                           server_default="3")
    """Days after sending before a signer's first reminder."""
    reminder_every_days: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    """Days between one reminder and the next."""

    counterparts: Mapped[list[Counterpart]] = relationship(
        back_populates="envelope", order_by="Counterpart.position")


class Counterpart(Base):
    """One signer's copy of the letter and where its signing stands."""

    __tablename__ = "counterparts"

    id: Mapped[int] = mapped_column(primary_key=True)
    envelope_id: Mapped[str] = mapped_column(ForeignKey("envelopes.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    method: Mapped[str | None] = mapped_column(String(16))
    consent_at: Mapped[dt.datetime | None]
    first_viewed_at: Mapped[dt.datetime | None]
    signed_at: Mapped[dt.datetime | None]
    declined_at: Mapped[dt.datetime | None]
    decline_reason: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    signature_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    signed_document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    """The signer's IANA time zone when signing online (UTC when the browser gave none)."""
    signed_on: Mapped[dt.date | None] = mapped_column(Date)
    """The calendar date of signing: in the signer's zone online; as staff read it on paper."""
    emailed_at: Mapped[dt.datetime | None]
    """When the mail server last accepted this signer's invitation; None if never emailed."""
    uploaded_at: Mapped[dt.datetime | None]
    """When staff uploaded the scan of a counterpart signed on paper."""
    paper: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The checks of a paper upload: ink found or accepted without, signing order overridden."""
    pending_document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    """A scan uploaded on the page and awaiting staff confirmation; it does not count yet."""
    verify_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """The signing page opens only after a one-time code emailed to ``email`` is entered."""
    identity: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """How the signer was identified when signing: ``{"method": "link"}`` or
    ``{"method": "email_code", "email", "verified_at"}``."""
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Reminders claimed for this signer so far (automatic and "Remind now")."""
    next_reminder_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    """When the next automatic reminder is due; None when none is left to send."""
    last_reminded_at: Mapped[dt.datetime | None]
    """When the last reminder was claimed: "Remind now" waits an hour after it."""
    expiry_warned_for: Mapped[dt.datetime | None]
    """The link expiry this signer was warned about (once per expiry)."""
    link_sealed: Mapped[str | None] = mapped_column(Text)
    """The current signing token, encrypted (AES-GCM, key from the app's secret key), so a
    reminder repeats the link of the invitation; see :mod:`workflow.notices`."""

    envelope: Mapped[Envelope] = relationship(back_populates="counterparts")


class SignerCode(Base):
    """A one-time code emailed to a signer, stored as its SHA-256; once entered, the browser
    that entered it (``browser_hash``, the SHA-256 of its cookie's token) may open the link."""

    __tablename__ = "signer_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    counterpart_id: Mapped[int] = mapped_column(ForeignKey("counterparts.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    code_hash: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    verified_at: Mapped[dt.datetime | None]
    browser_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class Event(Base):
    """One entry of a letter's append-only audit record, chained by SHA-256."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("letter_id", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), index=True)
    sequence: Mapped[int] = mapped_column(Integer)
    envelope_id: Mapped[str | None] = mapped_column(String(36))
    counterpart_id: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


# --- notices and reminders ----------------------------------------------------------------------

class Notice(Base):
    """One email of :mod:`workflow.notices` to one recipient: an invitation, a reminder, an
    expiry warning, or the news that a letter was declined, executed or voided.

    ``key`` names the notice once (``completed:<envelope>:<email>``, ``reminder:<cid>:<n>``),
    so a notice is made once however often its cause is handled. ``status`` is ``queued``,
    ``sending`` (claimed by one worker), ``sent`` (the mail server accepted it) or ``failed``
    (with the server's ``answer``); a failed notice with ``next_attempt_at`` is tried again.
    """

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    letter_id: Mapped[int] = mapped_column(ForeignKey("letters.id"), index=True)
    envelope_id: Mapped[str] = mapped_column(ForeignKey("envelopes.id"), index=True)
    counterpart_id: Mapped[int | None] = mapped_column(ForeignKey("counterparts.id"))
    event_id: Mapped[int | None] = mapped_column(Integer)
    """The audit event the notice answers, if any."""
    kind: Mapped[str] = mapped_column(String(32))
    audience: Mapped[str] = mapped_column(String(16))
    """``signer`` or ``sender`` (the member of staff who sent the envelope)."""
    to_name: Mapped[str] = mapped_column(String(200), default="")
    to_email: Mapped[str] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    answer: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[dt.datetime | None]
    last_attempt_at: Mapped[dt.datetime | None]
    next_attempt_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
