"""The audit chain verifies, and names the first row that was changed, removed or reordered."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from workflow.audit import GENESIS_HASH, events_of, record_event, verify_chain
from workflow.cli import cli
from workflow.errors import NotFoundError
from workflow.models import Letter


@pytest.fixture()
def letter_id(database):
    with database.transaction() as session:
        letter = Letter(template="separation_letter", status="draft")
        session.add(letter)
        session.flush()
        for kind in ("created", "generated", "sent", "viewed", "signed"):
            record_event(session, letter.id, kind, actor="ann@example.com", ip="127.0.0.1",
                         user_agent="pytest", detail={"kind": kind, "name": "Zoë & <Co>"})
        return letter.id


def _without_guard(database, statement: str) -> None:
    with database.engine.begin() as connection:
        if database.is_sqlite:
            connection.exec_driver_sql("DROP TRIGGER events_no_update")
            connection.exec_driver_sql("DROP TRIGGER events_no_delete")
        else:
            connection.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
        connection.execute(text(statement))


def test_chain_links_every_event(database, letter_id):
    with database.transaction() as session:
        events = events_of(session, letter_id)
        assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
        check = verify_chain(session, letter_id)
    assert check.ok and check.events == 5 and check.first_broken_sequence is None


def test_events_are_append_only_in_the_database(database, letter_id):
    for statement in ("UPDATE events SET actor = 'mallory'", "DELETE FROM events"):
        with pytest.raises(Exception, match="append-only"), database.engine.begin() as c:
            c.execute(text(statement))
    with database.transaction() as session:
        assert verify_chain(session, letter_id).ok


def test_a_changed_row_is_named(database, letter_id):
    _without_guard(database, "UPDATE events SET actor = 'mallory' WHERE sequence = 3")
    with database.transaction() as session:
        check = verify_chain(session, letter_id)
    assert not check.ok
    assert check.first_broken_sequence == 3
    assert "changed after it was recorded" in check.message


def test_a_removed_row_is_named(database, letter_id):
    # Whoever removes an event removes what refers to it too: the outbox's marks of having
    # handed it to the notices and webhooks (there are some once its jobs have run).
    with database.engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox_dispatches WHERE event_id IN "
                                "(SELECT id FROM events WHERE sequence = 2)"))
    _without_guard(database, "DELETE FROM events WHERE sequence = 2")
    with database.transaction() as session:
        check = verify_chain(session, letter_id)
    assert not check.ok and check.first_broken_sequence == 3
    assert "event 2 is missing" in check.message


def test_unknown_letter(database):
    with database.transaction() as session, pytest.raises(NotFoundError):
        verify_chain(session, 999)


def test_command_line_verify(database, letter_id, tmp_path, monkeypatch, database_url):
    monkeypatch.setenv("COUNTERPART_DATA_DIR", str(tmp_path))
    if database_url:
        monkeypatch.setenv("COUNTERPART_DATABASE_URL", database_url)
    result = CliRunner().invoke(cli, ["audit", "verify", str(letter_id)])
    assert result.exit_code == 0, result.output
    assert "audit chain intact; all 5 events verify" in result.output
    _without_guard(database, "UPDATE events SET detail = '{}' WHERE sequence = 4")
    result = CliRunner().invoke(cli, ["audit", "verify", str(letter_id)])
    assert result.exit_code == 1
    assert "BROKEN at event 4" in result.output
    result = CliRunner().invoke(cli, ["audit", "verify", "4242"])
    assert result.exit_code == 2 and "no letter 4242" in result.output
