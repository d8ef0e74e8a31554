"""The audit record: append-only events per letter, each chained to the one before by SHA-256.

Each event's hash covers the previous event's hash and its own content, so changing, removing
or reordering any event breaks every hash after it; :func:`verify_chain` names the first row
that no longer fits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import NotFoundError
from .jobs import enqueue_after_commit
from .models import Event, Letter, utcnow
from .outbox import dispatch_event

__all__ = ["EVENT_TYPES", "record_event", "events_of", "verify_chain", "ChainCheck",
           "event_as_dict", "GENESIS_HASH"]

EVENT_TYPES = ("created", "generated", "edited", "sent", "viewed", "consented", "signed",
               "declined", "uploaded", "voided", "executed", "downloaded", "expired",
               "emailed", "email_failed", "link_ready", "new_link", "upload_discarded",
               "upload_undone", "code_sent", "code_not_sent", "code_failed", "code_verified")
GENESIS_HASH = "0" * 64


def _content(event: Event) -> dict[str, Any]:
    return {
        "letter_id": event.letter_id,
        "sequence": event.sequence,
        "envelope_id": event.envelope_id,
        "counterpart_id": event.counterpart_id,
        "type": event.type,
        "at": event.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "detail": event.detail or {},
    }


def _hash(prev_hash: str, event: Event) -> str:
    payload = json.dumps(_content(event), sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


def record_event(session: Session, letter_id: int, type: str, *, actor: str,
                 envelope_id: str | None = None, counterpart_id: int | None = None,
                 ip: str | None = None, user_agent: str | None = None,
                 detail: dict[str, Any] | None = None, at: dt.datetime | None = None) -> Event:
    """Append an event to a letter's audit record inside the caller's transaction.

    The letter row is locked first, so two transactions cannot both append after the same
    event; the unique (letter, sequence) constraint guards the same on any database.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    session.execute(select(Letter.id).where(Letter.id == letter_id).with_for_update())
    last = session.scalar(select(Event).where(Event.letter_id == letter_id)
                          .order_by(Event.sequence.desc()).limit(1))
    event = Event(
        letter_id=letter_id, sequence=(last.sequence + 1) if last else 1,
        envelope_id=envelope_id, counterpart_id=counterpart_id, type=type,
        at=(at or utcnow()), actor=actor[:300], ip=(ip or None) and ip[:64],
        user_agent=(user_agent or None) and user_agent[:512], detail=detail or {},
        prev_hash=last.hash if last else GENESIS_HASH,
    )
    event.hash = _hash(event.prev_hash, event)
    session.add(event)
    session.flush()
    # The outbox: once this transaction commits, the event goes to each subscriber.
    enqueue_after_commit(session, dispatch_event, event.id)
    return event


def events_of(session: Session, letter_id: int) -> list[Event]:
    """Return a letter's events in order."""
    return list(session.scalars(select(Event).where(Event.letter_id == letter_id)
                                .order_by(Event.sequence)))


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of recomputing a letter's audit chain."""

    ok: bool
    events: int
    first_broken_sequence: int | None = None
    message: str = ""


def verify_chain(session: Session, letter_id: int) -> ChainCheck:
    """Recompute a letter's audit chain and name the first row that does not fit."""
    if session.get(Letter, letter_id) is None:
        raise NotFoundError(f"There is no letter {letter_id}.")
    events = events_of(session, letter_id)
    prev = GENESIS_HASH
    for expected_sequence, event in enumerate(events, start=1):
        if event.sequence != expected_sequence:
            return ChainCheck(False, len(events), event.sequence,
                              f"event {expected_sequence} is missing before event "
                              f"{event.sequence} (row id {event.id})")
        if event.prev_hash != prev:
            return ChainCheck(False, len(events), event.sequence,
                              f"event {event.sequence} (row id {event.id}, {event.type}) does "
                              "not point at the event before it")
        if _hash(prev, event) != event.hash:
            return ChainCheck(False, len(events), event.sequence,
                              f"event {event.sequence} (row id {event.id}, {event.type}) was "
                              "changed after it was recorded")
        prev = event.hash
    return ChainCheck(True, len(events), None, f"all {len(events)} events verify")


def event_as_dict(event: Event) -> dict[str, Any]:
    """Describe an event as JSON values."""
    return {**_content(event), "id": event.id, "prev_hash": event.prev_hash, "hash": event.hash}
