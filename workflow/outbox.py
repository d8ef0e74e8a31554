"""The event outbox: every committed audit event reaches each subscriber once.

:func:`workflow.audit.record_event` enqueues :func:`dispatch_event` to run after the event's
transaction commits. The dispatch calls each :func:`subscriber` in a transaction of its own that
also writes the mark (event, subscriber) in ``outbox_dispatches``, whose primary key makes a
second mark impossible: what a subscriber writes (notice or webhook delivery rows) commits with
its mark or not at all, so running a dispatch again, or two at once, calls no one twice. A
subscriber that fails is rolled back alone and the dispatch is retried for it later.

An enqueue can be lost (the process stops between the commit and the enqueue, or the queue is
unreachable): :func:`catch_up`, a periodic job, dispatches every event of the last 24 hours
that a subscriber has not had, counting only events recorded since that subscriber was first
seen (``outbox_subscribers``), so a subscriber added later is not handed the past.

Subscribers are plain functions ``(session, event) -> None`` registered at import; the module
that defines them must be listed in :data:`workflow.jobs.TASK_MODULES`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import ForeignKey, String, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import jobs
from .db import Database
from .errors import CounterpartError
from .models import Base, Event, utcnow

__all__ = ["subscriber", "subscribers", "dispatch_event", "dispatch", "catch_up", "catch_up_outbox",
           "catch_up_events", "OutboxDispatch", "OutboxSubscriber", "OutboxError",
           "CATCH_UP_HOURS", "CATCH_UP_GRACE"]

log = logging.getLogger(__name__)

Subscriber = Callable[[Session, Event], None]
CATCH_UP_HOURS = 24
# An event younger than this is left to its own dispatch job, which is usually on its way.
CATCH_UP_GRACE = dt.timedelta(seconds=30)
_SUBSCRIBERS: dict[str, Subscriber] = {}


class OutboxError(CounterpartError):
    """A subscriber failed on an event; the dispatch is retried for it."""


# --- outbox tables (migration 0006) -------------------------------------------------------------

class OutboxDispatch(Base):
    """The mark that an event was handed to a subscriber (in the subscriber's transaction)."""

    __tablename__ = "outbox_dispatches"

    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(200), primary_key=True)
    dispatched_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OutboxSubscriber(Base):
    """A subscriber's name and when the catch-up first saw it."""

    __tablename__ = "outbox_subscribers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- subscribing --------------------------------------------------------------------------------

def subscriber(func: Subscriber) -> Subscriber:
    """Register ``func(session, event)`` to be called once for every committed audit event,
    inside a transaction that commits with its "dispatched" mark. Named ``module.function``."""
    name = f"{func.__module__}.{func.__qualname__}"
    if len(name) > 200:
        raise ValueError(f"subscriber name {name!r} is longer than 200 characters")
    _SUBSCRIBERS[name] = func
    return func


def subscribers() -> dict[str, Subscriber]:
    """The registered subscribers, by name."""
    return dict(_SUBSCRIBERS)


# --- dispatching --------------------------------------------------------------------------------

def dispatch(db: Database, event_id: int) -> list[str]:
    """Hand one event to each subscriber that has not had it; return those called now.

    Raises :class:`OutboxError` naming the subscribers that failed (they are retried; the
    others keep their marks)."""
    called: list[str] = []
    failed: list[str] = []
    for name, func in subscribers().items():
        try:
            with db.transaction() as session:
                if session.get(OutboxDispatch, (event_id, name)) is not None:
                    continue
                event = session.get(Event, event_id)
                if event is None:
                    log.warning("outbox: event %s does not exist; nothing to dispatch", event_id)
                    return called
                # The mark first: a concurrent dispatch of the same event waits on its key
                # (PostgreSQL) or on the write lock (SQLite), then finds it.
                session.add(OutboxDispatch(event_id=event_id, subscriber=name))
                session.flush()
                func(session, event)
            called.append(name)
        except IntegrityError:
            continue  # another dispatch marked it first: it was handed over there
        except Exception as exc:
            log.exception("outbox: subscriber %s failed on event %s", name, event_id)
            failed.append(f"{name} ({exc})")
    if failed:
        raise OutboxError(f"Event {event_id} did not reach every subscriber: "
                          f"{'; '.join(failed)}. It is tried again later.")
    return called


@jobs.job(retries=10, retry_delay=5, retry_backoff=2.0)
def dispatch_event(event_id: int) -> None:
    """The job that hands a committed audit event to every subscriber (see :func:`dispatch`)."""
    if not _SUBSCRIBERS:
        return
    dispatch(jobs.runtime().db, event_id)


def catch_up_events(session: Session, *, now: dt.datetime | None = None) -> list[int]:
    """Return the ids of recent events (the last ``CATCH_UP_HOURS``, older than
    ``CATCH_UP_GRACE``) that some subscriber has not had, oldest first. Registers subscribers
    seen for the first time."""
    now = now or utcnow()
    known = {s.name: s.first_seen_at for s in session.scalars(select(OutboxSubscriber))}
    for name in subscribers():
        if name not in known:
            session.add(OutboxSubscriber(name=name, first_seen_at=now))
            known[name] = now
    session.flush()
    window_start = now - dt.timedelta(hours=CATCH_UP_HOURS)
    ids: set[int] = set()
    for name in subscribers():
        since = max(window_start, known[name])
        ids.update(session.scalars(select(Event.id).where(
            Event.at >= since, Event.at <= now - CATCH_UP_GRACE,
            ~exists().where(OutboxDispatch.event_id == Event.id,
                            OutboxDispatch.subscriber == name))))
    return sorted(ids)


def catch_up(db: Database, *, now: dt.datetime | None = None) -> int:
    """Dispatch every recent event a subscriber missed; return how many events were handed
    to someone. Raises :class:`OutboxError` if a subscriber failed (after trying the rest)."""
    if not _SUBSCRIBERS:
        return 0
    with db.transaction() as session:
        missed = catch_up_events(session, now=now)
    handed = 0
    failures: list[str] = []
    for event_id in missed:
        try:
            handed += bool(dispatch(db, event_id))
        except OutboxError as exc:
            failures.append(str(exc))
    if failures:
        raise OutboxError(" ".join(failures))
    if missed:
        log.info("outbox: caught up %d events", handed)
    return handed


@jobs.periodic(minutes=1)
def catch_up_outbox() -> int:
    """Every minute, once across all workers: dispatch the events whose enqueue was lost."""
    return catch_up(jobs.runtime().db)
