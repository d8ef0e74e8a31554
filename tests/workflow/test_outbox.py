"""The event outbox: each committed audit event reaches each subscriber once, with what the
subscriber writes; a rolled-back event reaches no one; a failing subscriber is retried alone;
events whose dispatch was lost are caught up."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from workflow import jobs, outbox
from workflow.audit import record_event
from workflow.models import AppSetting, Letter, utcnow
from workflow.outbox import OutboxDispatch

CALLS: list[tuple[str, int, str]] = []


@pytest.fixture(autouse=True)
def _only_these_subscribers(database, monkeypatch):
    """Immediate mode on the test's database, and only this module's subscribers."""
    CALLS.clear()
    monkeypatch.setattr(outbox, "_SUBSCRIBERS", {})
    with jobs.immediate(jobs.Runtime(database)):
        yield


@pytest.fixture()
def letter_id(database) -> int:
    with database.transaction() as session:
        letter = Letter(template="separation_letter", status="draft")
        session.add(letter)
        session.flush()
        return letter.id


def notes(session, event) -> None:
    """Write a row beside each event, as a notice subscriber writes its notice."""
    CALLS.append(("notes", event.id, event.type))
    session.add(AppSetting(key=f"note-{event.id}", value=event.type))


def hooks(session, event) -> None:
    """Record the call, as a webhook subscriber would."""
    CALLS.append(("hooks", event.id, event.type))


def _record(database, letter_id: int, type: str = "created") -> int:
    with database.transaction() as session:
        return record_event(session, letter_id, type, actor="ann@example.com").id


def _marks(database) -> set[tuple[int, str]]:
    with database.transaction() as session:
        return {(m.event_id, m.subscriber.rsplit(".", 1)[1])
                for m in session.scalars(select(OutboxDispatch))}


def _notes(database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(AppSetting)
                              .where(AppSetting.key.like("note-%")))


def test_a_committed_event_reaches_each_subscriber_once(database, letter_id):
    outbox.subscriber(notes)
    outbox.subscriber(hooks)
    event_id = _record(database, letter_id)
    assert sorted(CALLS) == [("hooks", event_id, "created"), ("notes", event_id, "created")]
    assert _marks(database) == {(event_id, "notes"), (event_id, "hooks")}
    assert _notes(database) == 1
    # Dispatched again (a retry, or a second worker): no one is called twice.
    outbox.dispatch_event.call_local(event_id)
    outbox.dispatch_event(event_id)
    assert len(CALLS) == 2 and _notes(database) == 1


def test_a_rolled_back_event_reaches_no_one(database, letter_id):
    outbox.subscriber(notes)
    with pytest.raises(RuntimeError), database.transaction() as session:
        record_event(session, letter_id, "edited", actor="ann@example.com")
        raise RuntimeError("the edit failed")
    assert CALLS == [] and _marks(database) == set()


def test_a_failing_subscriber_is_rolled_back_and_retried_alone(database, letter_id):
    broken = {"now": True}

    def fragile(session, event) -> None:
        session.add(AppSetting(key=f"fragile-{event.id}", value="half done"))
        if broken["now"]:
            raise ConnectionError("the webhook receiver is down")
        CALLS.append(("fragile", event.id, event.type))

    outbox.subscriber(notes)
    outbox.subscriber(fragile)
    event_id = _record(database, letter_id, "sent")
    assert CALLS == [("notes", event_id, "sent")]
    assert _marks(database) == {(event_id, "notes")}
    assert isinstance(jobs.recent_errors()[-1][1], outbox.OutboxError)
    with database.transaction() as session:  # its half-done write was rolled back with it
        assert session.get(AppSetting, f"fragile-{event_id}") is None
    broken["now"] = False
    assert jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)) == 1  # the retry
    assert CALLS == [("notes", event_id, "sent"), ("fragile", event_id, "sent")]
    assert _marks(database) == {(event_id, "notes"), (event_id, "fragile")}


def test_two_dispatches_at_once_call_each_subscriber_once(database, letter_id):
    outbox.subscriber(notes)
    outbox.subscriber(hooks)
    with database.transaction() as session:  # recorded without its after-commit dispatch
        event_id = record_event(session, letter_id, "signed", actor="signer").id
        session.info.pop("counterpart.jobs.after_commit")
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        outbox.dispatch(database, event_id)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(CALLS) == [("hooks", event_id, "signed"), ("notes", event_id, "signed")]
    assert _notes(database) == 1


def test_the_catch_up_dispatches_events_whose_enqueue_was_lost(database, letter_id):
    outbox.subscriber(notes)
    assert outbox.catch_up(database) == 0  # registers the subscriber as seen now
    with database.transaction() as session:
        lost = record_event(session, letter_id, "viewed", actor="signer").id
        session.info.pop("counterpart.jobs.after_commit")  # the process stopped here
    assert CALLS == []
    assert outbox.catch_up(database) == 0  # too young: its own dispatch may be on its way
    later = utcnow() + outbox.CATCH_UP_GRACE + dt.timedelta(seconds=1)
    assert outbox.catch_up(database, now=later) == 1
    assert CALLS == [("notes", lost, "viewed")]
    assert outbox.catch_up(database, now=later) == 0  # once
    # Once a day has passed, an event is no longer caught up.
    with database.transaction() as session:
        old = record_event(session, letter_id, "viewed", actor="signer").id
        session.info.pop("counterpart.jobs.after_commit")
    assert outbox.catch_up(database, now=utcnow() + dt.timedelta(hours=25)) == 0
    assert old not in {event_id for _, event_id, _ in CALLS}


def test_a_new_subscriber_is_not_handed_the_past(database, letter_id):
    outbox.subscriber(notes)
    outbox.catch_up(database)
    first = _record(database, letter_id)
    later = utcnow() + dt.timedelta(minutes=5)
    outbox.subscriber(hooks)  # added after the first event (a new module of a later release)
    with database.transaction() as session:
        outbox.catch_up_events(session, now=later)  # the catch-up sees it for the first time
    second = _record(database, letter_id, "edited")
    assert outbox.catch_up(database, now=later + dt.timedelta(minutes=1)) == 0
    assert ("hooks", first, "created") not in CALLS
    assert ("hooks", second, "edited") in CALLS


def test_the_catch_up_runs_every_minute_once(database, letter_id, monkeypatch):
    monkeypatch.setattr(jobs, "periodic_clock", lambda: 1_800_000_030.0)
    outbox.subscriber(notes)
    assert outbox.catch_up_outbox.call_local() == 0
    assert outbox.catch_up_outbox.call_local() is None  # this minute's slot is taken
