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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = ["Base", "User", "ApiToken", "StaffSession", "SessionNote", "Blob", "Letter",
           "LetterVersion", "Document", "Envelope", "Counterpart", "Event", "utcnow"]


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


class Letter(Base):
    __tablename__ = "letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    template: Mapped[str] = mapped_column(String(64))
    executive_name: Mapped[str] = mapped_column(String(200), default="")
    company_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(32), index=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    """Names to search by (executive, company, signers), case- and accent-folded."""

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
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    letter: Mapped[Letter] = relationship(back_populates="versions")
    documents: Mapped[list[Document]] = relationship(
        back_populates="version", order_by="Document.id")


class Document(Base):
    """A file of a letter: its generated .docx or PDF, a signed counterpart, the executed PDF.

    ``status`` is ``pending`` until the bytes exist, ``generating`` while a worker that
    claimed it makes them, then ``ready`` or ``failed``.
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

    envelope: Mapped[Envelope] = relationship(back_populates="counterparts")


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
