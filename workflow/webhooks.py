"""Webhooks: administrators register endpoints; each event of a letter they asked for is POSTed
to them as JSON, signed, retried with backoff for 24 hours, and every attempt is logged.

**Events.** Audit events (:mod:`workflow.audit`) become webhook events (:data:`AUDIT_TYPES`):
``created`` is ``letter.created``, ``edited`` ``letter.version_created``, the first ``sent`` of
an envelope ``envelope.sent``, ``viewed`` ``counterpart.viewed``, ``signed`` (online, or a
paper scan once it counts) ``counterpart.signed``, ``declined`` ``counterpart.declined``,
``voided`` ``envelope.voided``, the first ``expired`` of an expiry sweep ``envelope.expired``,
and ``executed`` ``letter.executed``. A scan staged on the letter page (an ``uploaded`` event
with ``pending``) is not a signature: it sends nothing until staff confirm it, which records
``signed``.

**Deliveries.** The outbox subscriber :func:`queue_webhook_deliveries` runs in the dispatch
transaction of each committed event: it writes one delivery per endpoint that wants the event
(unique per event and endpoint) holding the exact body, built then from
:mod:`workflow.representations` (the letter, envelope and counterpart as the API shows them,
with addresses under ``BASE_URL``), and enqueues :func:`deliver_webhook` after commit. The body
is ``{"id", "type", "created_at", "letter", "envelope", "counterpart"}``; ``id`` is the event's
and stays the same across retries and redeliveries, so a receiver can drop duplicates.

**Signature.** Each attempt carries ``Counterpart-Signature: t=<unix seconds>,v1=<hex>``, the
HMAC-SHA256 of ``"<t>.<body>"`` with the endpoint's secret. Receivers recompute it over the raw
body and refuse a ``t`` more than 5 minutes away from their clock (:func:`verify_signature`,
written to be copied).

**Attempts.** A job claims an attempt with a conditional UPDATE (the delivery is ``pending``
and has had exactly the attempts the job was scheduled after), so a job run twice attempts
once. A 2xx answer within ``WEBHOOK_TIMEOUT_SECONDS`` (10) is delivered; anything else (another
status, a timeout, a refused address, no connection; redirects are not followed) is retried
after 30 seconds, then 1, 2, 4, ... minutes, at most 2 hours apart, while the next attempt
falls within 24 hours of the first (:func:`retry_schedule`); then the delivery is ``failed``.
The job schedules its own next run (``deliver_webhook.schedule(delay=...)`` after commit), and
a periodic sweep restarts deliveries whose job was lost. An administrator may redeliver any
delivery not in flight: a new 24-hour window, the same event ``id``.

**Addresses.** Endpoints must be public: a URL whose host is, or resolves to, a loopback,
private, link-local, unspecified, multicast or reserved address (an IPv4-mapped or 6to4 IPv6
address counts as the IPv4 address inside) is refused when registered, and again at every
attempt: the connection is made to the very address that was checked, so a DNS answer that
changes between the check and the connection (DNS rebinding) gains nothing.
``COUNTERPART_WEBHOOK_ALLOW_PRIVATE=true`` lifts this (for tests and private networks).

**Secrets.** The app must sign with the secret, so it is kept, encrypted (Fernet, with a key
derived from the app's ``SECRET_KEY``): a copy of the database alone does not give it away.
Only its last four characters are ever shown again.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import jobs, outbox
from .db import Database, rowcount
from .errors import CounterpartError, NotFoundError, StateError
from .models import Base, Envelope, Event, utcnow
from .representations import describe_envelope, envelope_json, letter_json, signer_json
from .schema import DEFAULT_TEMPLATE_DIR

__all__ = [
    "WEBHOOK_EVENTS", "AUDIT_TYPES", "SIGNATURE_HEADER", "SIGNATURE_TOLERANCE_SECONDS",
    "TIMEOUT_SECONDS", "RETRY_WINDOW", "FIRST_RETRY_SECONDS", "MAX_RETRY_SECONDS",
    "ALLOW_PRIVATE_SETTING", "TIMEOUT_SETTING",
    "WebhookError", "WebhookEndpoint", "WebhookDelivery", "WebhookAttempt",
    "sign", "signature_header", "verify_signature",
    "check_url", "public_addresses", "address_refusal", "AddressRefused",
    "seal_secret", "unseal_secret", "secret_hint",
    "create_endpoint", "list_endpoints", "get_endpoint", "delete_endpoint",
    "endpoint_record", "delivery_record", "recent_deliveries", "get_delivery",
    "webhook_type", "build_payload", "queue_webhook_deliveries",
    "retry_delay", "retry_schedule", "next_attempt_at",
    "Attempt", "attempt_delivery", "deliver_webhook", "redeliver", "resume_deliveries",
    "resume_webhook_deliveries", "DeliverySettings", "delivery_settings",
]

log = logging.getLogger(__name__)

WEBHOOK_EVENTS = ("letter.created", "letter.version_created", "envelope.sent",
                  "counterpart.viewed", "counterpart.signed", "counterpart.declined",
                  "envelope.voided", "envelope.expired", "letter.executed")
ALL_EVENTS = "*"
AUDIT_TYPES = {
    "created": "letter.created",
    "edited": "letter.version_created",
    "sent": "envelope.sent",
    "viewed": "counterpart.viewed",
    "signed": "counterpart.signed",
    "declined": "counterpart.declined",
    "voided": "envelope.voided",
    "expired": "envelope.expired",
    "executed": "letter.executed",
}
# Events about one counterpart carry it; those about the envelope or the letter carry none.
_COUNTERPART_EVENTS = frozenset({"counterpart.viewed", "counterpart.signed",
                                 "counterpart.declined"})

SIGNATURE_HEADER = "Counterpart-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
TIMEOUT_SECONDS = 10.0
RETRY_WINDOW = dt.timedelta(hours=24)
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 2 * 60 * 60
# An attempt claimed this long ago without its outcome recorded was cut short (its worker
# stopped): far beyond the HTTP timeout.
STALE_CLAIM = dt.timedelta(minutes=2)
# A pending delivery this late for its attempt lost its job; the sweep starts it again.
LOST_JOB_GRACE = dt.timedelta(minutes=2)
ALLOW_PRIVATE_SETTING = "WEBHOOK_ALLOW_PRIVATE"
TIMEOUT_SETTING = "WEBHOOK_TIMEOUT_SECONDS"
MAX_URL_LENGTH = 2000
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 200
ANSWER_EXCERPT = 300  # characters of a receiver's answer kept in the log
USER_AGENT = "Counterpart-Webhooks/1"

Resolver = Callable[[str, int], Sequence[str]]


class WebhookError(CounterpartError):
    """A webhook cannot be registered as given; ``field`` names the value (``url``,
    ``events``, ``secret``, ``description``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.errors = {field: message}
        super().__init__(f"{field}: {message}")


# --- the tables (migration 0008) -------------------------------------------------------------

class WebhookEndpoint(Base):
    """An address that receives the events it names, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(MAX_URL_LENGTH))
    events: Mapped[list[str]] = mapped_column(JSON)
    """Webhook event names, or ``["*"]`` for every event."""
    secret_sealed: Mapped[str] = mapped_column(Text)
    """The signing secret, encrypted with a key derived from the app's secret key."""
    secret_hint: Mapped[str] = mapped_column(String(8))
    """The secret's last four characters, to tell secrets apart."""
    description: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(254))
    deleted_at: Mapped[dt.datetime | None]
    """Set when deleted: it receives nothing more; its deliveries stay in the log."""
    deleted_by: Mapped[str | None] = mapped_column(String(254))

    def wants(self, webhook_event: str) -> bool:
        """Say whether this endpoint receives ``webhook_event``."""
        return ALL_EVENTS in self.events or webhook_event in self.events


class WebhookDelivery(Base):
    """One event for one endpoint: its exact body and where its delivery stands.

    ``status``: ``pending`` (an attempt is due at ``next_attempt_at``), ``delivering`` (an
    attempt is under way since ``claimed_at``), ``delivered``, ``failed`` (24 hours of
    attempts failed), ``cancelled`` (the endpoint was deleted before it was delivered).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "endpoint_id"),
                      Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    event_uid: Mapped[str] = mapped_column(String(36))
    """The ``id`` in the body: the same for every endpoint, attempt and redelivery."""
    type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    window_attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Attempts since the current 24-hour window opened (the backoff counts these)."""
    window_started_at: Mapped[dt.datetime]
    next_attempt_at: Mapped[dt.datetime | None]
    claimed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    """When it was delivered, failed for good or cancelled."""
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    redeliveries: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[str | None] = mapped_column(String(254))
    """Who asked for the redelivery whose first attempt is still to come."""


class WebhookAttempt(Base):
    """One POST of a delivery: when, how long, the HTTP status or the error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    """The start of the receiver's answer body."""
    outcome: Mapped[str] = mapped_column(String(16))
    """``delivered``, ``failed`` or ``interrupted`` (the worker stopped during it)."""
    retry_at: Mapped[dt.datetime | None]
    """When the next attempt was scheduled (None: delivered, or no attempt left)."""
    requested_by: Mapped[str | None] = mapped_column(String(254))
    """The administrator whose redelivery this attempt is, if it is the first after one."""


# --- signatures ------------------------------------------------------------------------------

def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def sign(secret: str | bytes, timestamp: int, body: str | bytes) -> str:
    """Return the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with ``secret``."""
    message = str(int(timestamp)).encode("ascii") + b"." + _bytes(body)
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, timestamp: int, body: str | bytes) -> str:
    """Return the value of the ``Counterpart-Signature`` header: ``t=<unix>,v1=<hex>``."""
    return f"t={int(timestamp)},v1={sign(secret, timestamp, body)}"


def verify_signature(secret: str | bytes, header: str, body: str | bytes, now: float,
                     tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """Check a webhook's ``Counterpart-Signature`` header against the raw request body.

    ``secret`` is the endpoint's secret, ``header`` the header's value (``t=<unix
    seconds>,v1=<hex>``; several ``v1`` are accepted), ``body`` the request body exactly as
    received (not re-encoded JSON), ``now`` the receiver's clock in UNIX seconds (e.g.
    ``time.time()``). True only if a ``v1`` is the HMAC-SHA256 of ``"<t>.<body>"`` with the
    secret and ``t`` is within ``tolerance`` seconds (5 minutes) of ``now``, either side, so
    that a captured request cannot be replayed later. Receivers may copy this function: it
    needs only ``hmac`` and ``hashlib``.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in str(header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value.strip())
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    message = str(timestamp).encode("ascii") + b"." + (
        body.encode("utf-8") if isinstance(body, str) else bytes(body))
    key_bytes = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    expected = hmac.new(key_bytes, message, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# --- addresses ---------------------------------------------------------------------------------

class AddressRefused(Exception):
    """A webhook's host is, or resolves to, an address webhooks may not reach."""


def address_refusal(address: str) -> str | None:
    """Say why webhooks may not reach an IP address ("a loopback address"), or None if it is
    public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = None
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in ipaddress.IPv6Network("64:ff9b::/96"):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # NAT64 of an IPv4 address
    if inner is not None:
        refusal = address_refusal(str(inner))
        return f"{refusal} inside an IPv6 address" if refusal else None
    checks = (("is_unspecified", "an unspecified address"), ("is_loopback", "a loopback address"),
              ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
              ("is_reserved", "a reserved address"), ("is_private", "a private address"))
    for attribute, words in checks:
        if getattr(ip, attribute):
            return words
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if not ip.is_global:
        return "not a public address"
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def public_addresses(host: str, port: int, *, allow_private: bool = False,
                     resolve: Resolver | None = None) -> list[str]:
    """Resolve ``host`` and return its addresses, every one checked public.

    Raises :class:`AddressRefused` naming the host and the address when one is not (unless
    ``allow_private``), or when the name does not resolve. ``resolve(host, port)`` returns the
    addresses (the system resolver by default).
    """
    try:
        addresses = list((resolve or _system_resolver)(host, port))
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"the host name {host} could not be resolved ({exc})") from None
    if not addresses:
        raise AddressRefused(f"the host name {host} has no address")
    if allow_private:
        return addresses
    for address in addresses:
        refusal = address_refusal(address)
        if refusal:
            shown = host if host == address else f"{host} resolves to {address}, which"
            raise AddressRefused(
                f"{shown} is {refusal}; webhooks go only to public addresses "
                "(COUNTERPART_WEBHOOK_ALLOW_PRIVATE=true allows private ones)")
    return addresses


def _split(url: str) -> tuple[str, str, int]:
    """Check a URL's form; return its scheme, host and port, or raise WebhookError."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookError("url", "is required: the address that receives the events, such "
                                  "as https://example.com/counterpart-events")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise WebhookError("url", f"is {len(url)} characters long; the limit is "
                                  f"{MAX_URL_LENGTH}")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise WebhookError("url", "contains a space or a control character")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookError("url", "must start with https:// or http://")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("url", "must not hold a user name or password; receivers check "
                                  "the signature made with the secret instead")
    if parts.fragment:
        raise WebhookError("url", "must not have a #fragment")
    host = parts.hostname
    if not host:
        raise WebhookError("url", "has no host name")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise WebhookError("url", "has a port that is not a number from 1 to 65535") from None
    return scheme, host, port


def check_url(url: str, *, allow_private: bool = False, resolve: Resolver | None = None) -> str:
    """Check a webhook's address and return it (trimmed), or raise WebhookError on ``url``.

    http and https are allowed; the host must be a public address or resolve only to public
    ones (see :func:`public_addresses`), unless ``allow_private``.
    """
    _scheme, host, port = _split(url)
    if not allow_private:
        try:
            public_addresses(host, port, resolve=resolve)
        except AddressRefused as exc:
            raise WebhookError("url", str(exc)) from None
    return url.strip()


# --- secrets -----------------------------------------------------------------------------------

def _fernet(key: bytes) -> Fernet:
    derived = hmac.new(key, b"webhook-secret", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def seal_secret(secret: str, key: bytes) -> str:
    """Encrypt a webhook's secret with a key derived from the app's secret key ``key``."""
    return _fernet(key).encrypt(secret.encode("utf-8")).decode("ascii")


def unseal_secret(sealed: str, key: bytes) -> str:
    """Decrypt a webhook's secret; raises StateError if ``key`` is not the one it was sealed
    with."""
    try:
        return _fernet(key).decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise StateError("The secret of this webhook cannot be read with this server's secret "
                         "key (was COUNTERPART_SECRET_KEY changed?); delete the webhook and "
                         "register it again.") from None


def secret_hint(secret: str) -> str:
    """The part of a secret shown again: its last four characters."""
    return secret[-4:]


# --- endpoints ---------------------------------------------------------------------------------

def _events(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise WebhookError("events", 'is required: a list of event names, or ["*"] for all '
                                     f"of them ({', '.join(WEBHOOK_EVENTS)})")
    chosen: list[str] = []
    for name in raw:
        if not isinstance(name, str) or (name != ALL_EVENTS and name not in WEBHOOK_EVENTS):
            raise WebhookError("events", f"{str(name)[:60]!r} is not an event; use "
                                         f"{', '.join(WEBHOOK_EVENTS)} or *")
        if name not in chosen:
            chosen.append(name)
    return [ALL_EVENTS] if ALL_EVENTS in chosen else chosen


def _secret(raw: Any) -> tuple[str, bool]:
    """Return the secret to keep and whether it was made here (then shown once)."""
    if raw is None or raw == "":
        return "whsec_" + secrets.token_urlsafe(32), True
    if not isinstance(raw, str):
        raise WebhookError("secret", "must be text")
    if len(raw) < MIN_SECRET_LENGTH:
        raise WebhookError("secret", f"is {len(raw)} characters long; use at least "
                                     f"{MIN_SECRET_LENGTH} random characters (or leave it "
                                     "out and one is made)")
    if len(raw) > MAX_SECRET_LENGTH:
        raise WebhookError("secret", f"is {len(raw)} characters long; the limit is "
                                     f"{MAX_SECRET_LENGTH}")
    if any(ord(c) < 33 or ord(c) == 127 for c in raw):
        raise WebhookError("secret", "contains a space or a control character")
    return raw, False


def create_endpoint(session: Session, url: Any, events: Any, secret: Any, *, key: bytes,
                    by: str | None, description: Any = "", allow_private: bool = False,
                    resolve: Resolver | None = None) -> tuple[WebhookEndpoint, str | None]:
    """Register a webhook endpoint.

    ``events`` is a list of names from :data:`WEBHOOK_EVENTS` or ``["*"]``; ``secret`` is
    at least 16 characters, or empty to have one made. Returns the endpoint and the secret if
    it was made here (to show once), else None. Raises WebhookError naming the field.
    """
    checked_url = check_url(url, allow_private=allow_private, resolve=resolve)
    chosen = _events(events)
    kept, made = _secret(secret)
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > 200:
        raise WebhookError("description", "must be text of at most 200 characters")
    endpoint = WebhookEndpoint(url=checked_url, events=chosen, secret_sealed=seal_secret(kept, key),
                               secret_hint=secret_hint(kept), description=description.strip(),
                               created_by=by)
    session.add(endpoint)
    session.flush()
    return endpoint, kept if made else None


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    """The registered endpoints (not deleted), oldest first."""
    return list(session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.deleted_at.is_(None)).order_by(WebhookEndpoint.id)))


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    """Return a registered endpoint, or raise NotFoundError."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        raise NotFoundError(f"There is no webhook {endpoint_id}.")
    return endpoint


def delete_endpoint(session: Session, endpoint_id: int, *, by: str | None,
                    now: dt.datetime | None = None) -> None:
    """Delete an endpoint: it receives nothing more and its waiting deliveries are cancelled
    (attempts under way finish); its deliveries stay in the log."""
    now = now or utcnow()
    endpoint = get_endpoint(session, endpoint_id)
    endpoint.deleted_at, endpoint.deleted_by = now, by
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(status="cancelled", finished_at=now, next_attempt_at=None,
                last_error="The webhook was deleted before this was delivered."))


# --- records for pages and the API -------------------------------------------------------------

def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else None


def endpoint_record(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as JSON values, without its secret (``secret_hint``: its last four
    characters)."""
    return {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events),
            "description": endpoint.description, "secret_hint": endpoint.secret_hint,
            "created_at": _iso(endpoint.created_at), "created_by": endpoint.created_by}


def _attempt_record(attempt: WebhookAttempt) -> dict[str, Any]:
    return {"number": attempt.number, "started_at": _iso(attempt.started_at),
            "duration_ms": attempt.duration_ms, "status_code": attempt.status_code,
            "error": attempt.error, "answer": attempt.answer, "outcome": attempt.outcome,
            "retry_at": _iso(attempt.retry_at), "requested_by": attempt.requested_by}


def delivery_record(session: Session, delivery: WebhookDelivery, *,
                    with_body: bool = False) -> dict[str, Any]:
    """A delivery and its attempts (oldest first) as JSON values; ``body`` is the JSON text
    sent, when asked for."""
    attempts = session.scalars(select(WebhookAttempt).where(
        WebhookAttempt.delivery_id == delivery.id).order_by(WebhookAttempt.id))
    record = {"id": delivery.id, "webhook_id": delivery.endpoint_id,
              "event_id": delivery.event_uid, "type": delivery.type, "status": delivery.status,
              "attempts": delivery.attempts, "created_at": _iso(delivery.created_at),
              "next_attempt_at": _iso(delivery.next_attempt_at),
              "delivered_at": _iso(delivery.delivered_at),
              "finished_at": _iso(delivery.finished_at),
              "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
              "redeliveries": delivery.redeliveries,
              "log": [_attempt_record(a) for a in attempts]}
    if with_body:
        record["body"] = delivery.body
    return record


def recent_deliveries(session: Session, endpoint_id: int, *, limit: int = 50
                      ) -> list[WebhookDelivery]:
    """An endpoint's newest deliveries, newest first."""
    return list(session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id).order_by(WebhookDelivery.id.desc())
        .limit(limit)))


def get_delivery(session: Session, endpoint_id: int, delivery_id: int) -> WebhookDelivery:
    """Return one delivery of an endpoint, or raise NotFoundError."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        raise NotFoundError(f"Webhook {endpoint_id} has no delivery {delivery_id}.")
    return delivery


# --- from audit events to deliveries -----------------------------------------------------------

def webhook_type(session: Session, event: Event) -> str | None:
    """Name the webhook event an audit event is, or None if it is none.

    An envelope is sent and expires once, though each counterpart records it: only the
    envelope's first ``sent`` event, and the first ``expired`` event of one expiry sweep (same
    time), count.
    """
    kind = AUDIT_TYPES.get(event.type)
    if kind is None:
        return None
    if event.type in ("sent", "expired") and event.envelope_id is not None:
        earlier = select(Event.id).where(Event.envelope_id == event.envelope_id,
                                         Event.type == event.type, Event.id < event.id)
        if event.type == "expired":
            earlier = earlier.where(Event.at == event.at)
        if session.scalar(earlier.limit(1)) is not None:
            return None
    return kind


def build_payload(session: Session, event: Event, kind: str, *, event_uid: str, base_url: str,
                  template_dir: Path = DEFAULT_TEMPLATE_DIR) -> dict[str, Any]:
    """The body of a webhook: ``id``, ``type``, ``created_at`` (the event's time), and the
    ``letter``, ``envelope`` and ``counterpart`` (None where the event concerns none) as the API
    shows them now, with addresses under ``base_url``. Signing links are never included."""
    envelope = session.get(Envelope, event.envelope_id) if event.envelope_id else None
    envelope_answer = None
    counterpart = None
    if envelope is not None:
        record = describe_envelope(session, envelope)
        envelope_answer = envelope_json(record, base_url)
        if kind in _COUNTERPART_EVENTS and event.counterpart_id is not None:
            signer = next((s for s in record["signers"]
                           if s["counterpart_id"] == event.counterpart_id), None)
            counterpart = signer_json(envelope.letter_id, signer, base_url) if signer else None
    return {"id": event_uid, "type": kind, "created_at": _iso(event.at),
            "letter": letter_json(session, event.letter_id, base_url=base_url,
                                  template_dir=template_dir),
            "envelope": envelope_answer, "counterpart": counterpart}


@outbox.subscriber
def queue_webhook_deliveries(session: Session, event: Event) -> None:
    """For a committed audit event, write a delivery for each endpoint that wants it (with the
    body as things stand now) and enqueue its first attempt after this transaction commits."""
    kind = webhook_type(session, event)
    if kind is None:
        return
    endpoints = [e for e in list_endpoints(session) if e.wants(kind)]
    if not endpoints:
        return
    rt = jobs.runtime()
    event_uid = str(uuid.uuid4())
    payload = build_payload(session, event, kind, event_uid=event_uid, base_url=rt.base_url,
                            template_dir=Path(rt.settings.get("DOCX_TEMPLATE_DIR")
                                              or DEFAULT_TEMPLATE_DIR))
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    now = utcnow()
    for endpoint in endpoints:
        delivery = WebhookDelivery(endpoint_id=endpoint.id, event_id=event.id,
                                   event_uid=event_uid, type=kind, body=body, status="pending",
                                   attempts=0, window_attempts=0, window_started_at=now,
                                   next_attempt_at=now, created_at=now)
        session.add(delivery)
        session.flush()
        jobs.enqueue_after_commit(session, deliver_webhook, delivery.id, 0)


# --- the retry schedule -------------------------------------------------------------------------

def retry_delay(failed_attempts: int) -> int:
    """Seconds to wait after the ``failed_attempts``-th failed attempt of a window (1, 2, ...):
    30 s, then doubling (1, 2, 4, ... minutes), at most 2 hours."""
    if failed_attempts < 1:
        raise ValueError("failed_attempts counts from 1")
    return min(FIRST_RETRY_SECONDS * 2 ** min(failed_attempts - 1, 20), MAX_RETRY_SECONDS)


def next_attempt_at(window_started_at: dt.datetime, failed_at: dt.datetime,
                    failed_attempts: int) -> dt.datetime | None:
    """When to try again after a failure, or None when that would be past the 24 hours."""
    moment = failed_at + dt.timedelta(seconds=retry_delay(failed_attempts))
    return moment if moment <= window_started_at + RETRY_WINDOW else None


def retry_schedule() -> list[int]:
    """Seconds from the first attempt to each attempt, if each failed at once: ``[0, 30, 90,
    210, ...]`` up to 24 hours."""
    offsets = [0]
    start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    while True:
        moment = next_attempt_at(start, start + dt.timedelta(seconds=offsets[-1]), len(offsets))
        if moment is None:
            return offsets
        offsets.append(int((moment - start).total_seconds()))


# --- attempts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliverySettings:
    """How attempts are made: the key the secrets are sealed with, private addresses allowed
    or not, the timeout in seconds, and the resolver (tests give one)."""

    key: bytes
    allow_private: bool = False
    timeout: float = TIMEOUT_SECONDS
    resolve: Resolver | None = None


def delivery_settings(settings: Mapping[str, Any]) -> DeliverySettings:
    """The delivery settings of the app's configuration (``SECRET_KEY``,
    ``WEBHOOK_ALLOW_PRIVATE``, ``WEBHOOK_TIMEOUT_SECONDS``)."""
    key = settings.get("SECRET_KEY")
    if not key:
        raise StateError("Webhooks need the app's secret key (SECRET_KEY) to read their "
                         "secrets.")
    return DeliverySettings(key=_bytes(key), allow_private=bool(settings.get(
        ALLOW_PRIVATE_SETTING, False)), timeout=float(settings.get(TIMEOUT_SETTING)
                                                     or TIMEOUT_SECONDS))


@dataclass(frozen=True)
class Attempt:
    """What one attempt did: ``outcome`` is ``delivered``, ``failed`` (and ``retry_at`` is
    when the next is due, or None if none is left), or ``skipped`` (nothing to attempt: done
    already, or another run claimed it)."""

    outcome: str
    number: int | None = None
    status_code: int | None = None
    error: str | None = None
    retry_at: dt.datetime | None = None


@dataclass(frozen=True)
class _Claim:
    number: int
    window_attempts: int
    window_started_at: dt.datetime
    url: str
    secret: str
    body: str
    event_uid: str
    type: str
    requested_by: str | None


class _PublicNetwork(httpcore.NetworkBackend):
    """Connects only to addresses checked public, resolving the host itself at connect time:
    the address checked is the address connected to."""

    def __init__(self, allow_private: bool, resolve: Resolver | None) -> None:
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private
        self._resolve = resolve

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        addresses = public_addresses(host, port, allow_private=self._allow_private,
                                     resolve=self._resolve)
        error: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout,
                                               local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise AddressRefused("webhooks do not use Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _PublicTransport(httpx.HTTPTransport):
    """httpx's transport over :class:`_PublicNetwork`: no proxy, no retries, certificates
    checked against the host name in the URL."""

    def __init__(self, allow_private: bool, resolve: Resolver | None) -> None:
        context = ssl.create_default_context()
        super().__init__(verify=context, trust_env=False, retries=0)
        # httpx has no public way to give its connection pool a network backend; the pool is
        # made again here with ours. test_webhooks checks a delivery to a rebinding name fails.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context, max_connections=1, max_keepalive_connections=0,
            network_backend=_PublicNetwork(allow_private, resolve))


def _post(claim: _Claim, delivery_id: int, settings: DeliverySettings, moment: float
          ) -> tuple[int | None, str | None, str | None]:
    """POST the body once; return the HTTP status (or None), the error (or None) and the start
    of the answer."""
    timestamp = int(moment)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               SIGNATURE_HEADER: signature_header(claim.secret, timestamp, claim.body),
               "Counterpart-Event": claim.type, "Counterpart-Event-Id": claim.event_uid,
               "Counterpart-Delivery": str(delivery_id),
               "Counterpart-Attempt": str(claim.number)}
    transport = _PublicTransport(settings.allow_private, settings.resolve)
    try:
        with httpx.Client(transport=transport, timeout=httpx.Timeout(settings.timeout),
                          follow_redirects=False, trust_env=False) as client, \
                client.stream("POST", claim.url, content=claim.body.encode("utf-8"),
                              headers=headers) as response:
            answer = b""
            for chunk in response.iter_bytes():
                answer += chunk
                if len(answer) >= ANSWER_EXCERPT * 4:
                    break
            text = answer.decode("utf-8", "replace")[:ANSWER_EXCERPT] or None
            status = response.status_code
            if 200 <= status < 300:
                return status, None, text
            if 300 <= status < 400:
                where = response.headers.get("location", "")[:200]
                return status, f"HTTP {status}: redirects are not followed" + (
                    f" (to {where})" if where else ""), text
            return status, f"HTTP {status}", text
    except AddressRefused as exc:
        return None, f"refused: {exc}", None
    except httpx.TimeoutException:
        return None, f"no answer within {settings.timeout:g} seconds", None
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__, None


def _claim(db: Database, delivery_id: int, expected: int, settings: DeliverySettings,
           now: dt.datetime) -> _Claim | None:
    """Claim the attempt after ``expected`` attempts, in one transaction; None if it is not
    this run's to make (done, claimed by another run, or the endpoint deleted)."""
    with db.transaction() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return None
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        assert endpoint is not None
        interrupted = (delivery.status == "delivering" and delivery.attempts == expected + 1
                       and delivery.claimed_at is not None
                       and delivery.claimed_at < now - STALE_CLAIM)
        if not interrupted and not (delivery.status == "pending"
                                    and delivery.attempts == expected):
            return None
        if endpoint.deleted_at is not None:
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status.in_(("pending", "delivering")))
                .values(status="cancelled", finished_at=now, next_attempt_at=None,
                        last_error="The webhook was deleted before this was delivered."))
            return None
        status, attempts = delivery.status, delivery.attempts
        requested_by, claimed_before = delivery.requested_by, delivery.claimed_at
        # The interrupted attempt was counted when it was claimed; this is the next one.
        claimed = rowcount(session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == status,
            WebhookDelivery.attempts == attempts)
            .values(status="delivering", claimed_at=now, attempts=attempts + 1,
                    window_attempts=WebhookDelivery.window_attempts + 1,
                    requested_by=None)))
        if claimed != 1:
            return None
        if interrupted:
            session.add(WebhookAttempt(
                delivery_id=delivery_id, number=attempts, started_at=claimed_before,
                outcome="interrupted",
                error="The worker stopped during this attempt; whether it arrived is unknown."))
        session.refresh(delivery)
        return _Claim(number=delivery.attempts, window_attempts=delivery.window_attempts,
                      window_started_at=delivery.window_started_at, url=endpoint.url,
                      secret=unseal_secret(endpoint.secret_sealed, settings.key),
                      body=delivery.body, event_uid=delivery.event_uid, type=delivery.type,
                      requested_by=requested_by)


def attempt_delivery(db: Database, delivery_id: int, expected: int,
                     settings: DeliverySettings, *, now: dt.datetime | None = None
                     ) -> Attempt:
    """Make the attempt that follows ``expected`` attempts of a delivery, and record it.

    Claims it first (a second run with the same ``expected`` does nothing), POSTs the body
    signed with the endpoint's secret, then records the attempt (status or error, duration)
    and the delivery's new state: delivered, pending with the next attempt's time (the next
    run is enqueued after commit, with that delay), or failed once 24 hours are spent. ``now``
    fixes the clock for the claim, the signature's ``t`` and the schedule (tests).
    """
    clock = now or utcnow()
    claim = _claim(db, delivery_id, expected, settings, clock)
    if claim is None:
        return Attempt("skipped")
    started = time.monotonic()
    status_code, error, answer = _post(claim, delivery_id, settings, clock.timestamp())
    duration_ms = int((time.monotonic() - started) * 1000)
    finished = (now + dt.timedelta(milliseconds=duration_ms)) if now else utcnow()
    delivered = error is None
    retry_at = None if delivered else next_attempt_at(claim.window_started_at, finished,
                                                      claim.window_attempts)
    with db.transaction() as session:
        session.add(WebhookAttempt(
            delivery_id=delivery_id, number=claim.number, started_at=clock,
            duration_ms=duration_ms, status_code=status_code, error=error,
            answer=answer, outcome="delivered" if delivered else "failed",
            retry_at=retry_at, requested_by=claim.requested_by))
        values: dict[str, Any] = {"last_status_code": status_code, "last_error": error,
                                  "claimed_at": None}
        if delivered:
            values.update(status="delivered", delivered_at=finished, finished_at=finished,
                          next_attempt_at=None)
        elif retry_at is None:
            values.update(status="failed", finished_at=finished, next_attempt_at=None)
        else:
            values.update(status="pending", next_attempt_at=retry_at)
        mine = rowcount(session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == "delivering",
            WebhookDelivery.attempts == claim.number).values(**values)))
        if mine and retry_at is not None:
            delay = max(0.0, (retry_at - finished).total_seconds())
            jobs.enqueue_after_commit(session, deliver_webhook, delivery_id, claim.number,
                                      delay=delay)
    if delivered:
        return Attempt("delivered", claim.number, status_code)
    return Attempt("failed", claim.number, status_code, error, retry_at)


@jobs.job(retries=5, retry_delay=30, retry_backoff=2.0)
def deliver_webhook(delivery_id: int, expected: int) -> None:
    """The job that makes a delivery's attempt after ``expected`` attempts (see
    :func:`attempt_delivery`); a failed attempt schedules the next run itself."""
    rt = jobs.runtime()
    attempt_delivery(rt.db, delivery_id, expected, delivery_settings(rt.settings))


def redeliver(session: Session, endpoint_id: int, delivery_id: int, *, by: str | None,
              now: dt.datetime | None = None) -> WebhookDelivery:
    """Send a delivery again, with the same body and event ``id``: a new 24-hour window of
    attempts starts now (the first after this transaction commits). Raises StateError while
    an attempt is under way or when the endpoint was deleted."""
    now = now or utcnow()
    get_endpoint(session, endpoint_id)
    delivery = get_delivery(session, endpoint_id, delivery_id)
    if delivery.status == "delivering":
        raise StateError(f"Delivery {delivery_id} is being attempted right now; wait for its "
                         "outcome, then redeliver it if needed.")
    attempts = delivery.attempts
    changed = rowcount(session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempts,
        WebhookDelivery.status != "delivering").values(
        status="pending", window_started_at=now, window_attempts=0, next_attempt_at=now,
        finished_at=None, redeliveries=WebhookDelivery.redeliveries + 1,
        requested_by=(by or "an administrator")[:254])))
    if changed != 1:
        raise StateError(f"Delivery {delivery_id} changed meanwhile; reload and try again.")
    jobs.enqueue_after_commit(session, deliver_webhook, delivery_id, attempts)
    session.refresh(delivery)
    return delivery


def resume_deliveries(db: Database, *, now: dt.datetime | None = None) -> int:
    """Enqueue again the deliveries whose job was lost: pending ones well past their time, and
    attempts claimed long ago whose worker stopped. Returns how many."""
    now = now or utcnow()
    with db.transaction() as session:
        rows = session.execute(select(WebhookDelivery.id, WebhookDelivery.status,
                                      WebhookDelivery.attempts).where(or_(
            (WebhookDelivery.status == "pending")
            & (WebhookDelivery.next_attempt_at < now - LOST_JOB_GRACE),
            (WebhookDelivery.status == "delivering")
            & (WebhookDelivery.claimed_at < now - STALE_CLAIM))).limit(500)).all()
        for delivery_id, status, attempts in rows:
            expected = attempts if status == "pending" else attempts - 1
            jobs.enqueue_after_commit(session, deliver_webhook, delivery_id, expected)
    return len(rows)


@jobs.periodic(minutes=1)
def resume_webhook_deliveries() -> int:
    """Every minute, once across all workers: restart deliveries whose job was lost."""
    return resume_deliveries(jobs.runtime().db)
