"""The letters list at scale: search through the database's text index (accents, case, word
starts, every word), keyset pages that neither repeat nor skip a letter, a count that stops at
1,000, read-only transactions, and the indexes the list's queries use.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import DBAPIError

from workflow.accounts import TOKEN_USE_RECORDED_EVERY, create_api_token, user_for_token
from workflow.letters import (
    COUNT_LIMIT,
    PageCursorError,
    create_letter,
    decode_cursor,
    list_letters,
    revise_terms,
)
from workflow.models import ApiToken, Letter, User
from workflow.states import LetterStatus
from workflow.text import search_text

WHEN = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _add(session, *names: str, status: str = "draft", updated_at: dt.datetime = WHEN,
         template: str = "separation_letter") -> int:
    letter = Letter(template=template, title=f"Letter of {names[0]}", status=status,
                    updated_at=updated_at, search_text=search_text([f"Letter of {names[0]}",
                                                                    *names]))
    session.add(letter)
    session.flush()
    return letter.id


def _found(database, q: str, **filters) -> set[str]:
    with database.read() as session:
        page = list_letters(session, q=q, per_page=100, **filters)
        return {letter.title.removeprefix("Letter of ") for letter in page.letters}


@pytest.fixture()
def people(database):
    with database.transaction() as session:
        for names in [("Zoë Dupré", "Société Générale"), ("Zoe Dupre", "Plain Ltd"),
                      ("Søren Ærø", "Đông Á Bank"), ("Maria Ortega", "Northwind Energy"),
                      ("Hans Protsch", "Capstone Holdings"), ("Anna Near", "Minus-Plus AG")]:
            _add(session, *names)
    return database


def test_search_ignores_accents_and_case(people):
    assert _found(people, "zoe") == {"Zoë Dupré", "Zoe Dupre"}
    assert _found(people, "ZOË") == {"Zoë Dupré", "Zoe Dupre"}
    assert _found(people, "DUPRÉ") == {"Zoë Dupré", "Zoe Dupre"}
    assert _found(people, "societe") == {"Zoë Dupré"}
    assert _found(people, "Đông") == {"Søren Ærø"}
    assert _found(people, "soren aero") == {"Søren Ærø"}


def test_search_matches_words_from_their_start(people):
    assert _found(people, "prots") == {"Hans Protsch"}
    assert _found(people, "capst") == {"Hans Protsch"}
    # The middle of a word is not a word start (search engines match words the same way).
    if people.is_sqlite:
        assert _found(people, "otsch") == set()


def test_every_word_must_match(people):
    assert _found(people, "maria northwind") == {"Maria Ortega"}
    assert _found(people, "maria plain") == set()
    assert _found(people, "zoe plain") == {"Zoe Dupre"}


@pytest.mark.parametrize("query", ['"', '""', "*", "zoe*", '"zoe', "NEAR", "near(", "-",
                                   "-zoe", "zoe OR", "AND", "NOT zoe", "^zoe", "col:zoe",
                                   "(", ")", "'", "%_", "\\", "+", "{x}", "a:b"])
def test_search_syntax_in_a_query_is_plain_text(people, query):
    found = _found(people, query)  # never an error
    if query in ("NEAR", "near("):
        assert found == {"Anna Near"}
    if query == "-":
        assert len(found) == 6  # punctuation alone filters nothing


def test_a_letter_renamed_by_a_new_version_is_found_by_its_new_name(database, reference_terms):
    renamed = {**reference_terms, "executive_full_name": "Ottilie Brandauer",
               "executive_first_name": "Ottilie"}
    with database.transaction() as session:
        letter_id = create_letter(session, "separation_letter", reference_terms, None).id
    assert letter_id in {letter.id for letter in _letters(database, "tucker")}
    with database.transaction() as session:
        revise_terms(session, letter_id, renamed, None)
    assert [letter.id for letter in _letters(database, "brandauer")] == [letter_id]
    assert _letters(database, "tucker") == []


def test_a_deleted_letter_is_no_longer_found(people):
    with people.transaction() as session:
        letter = session.query(Letter).filter(Letter.title == "Letter of Maria Ortega").one()
        session.delete(letter)
    assert _found(people, "ortega") == set()
    assert _found(people, "zoe") == {"Zoë Dupré", "Zoe Dupre"}


def _letters(database, q: str = "", **options) -> list[Letter]:
    with database.read() as session:
        return list_letters(session, q=q, **options).letters


def test_keyset_pages_neither_repeat_nor_skip_letters_that_tie(database):
    with database.transaction() as session:
        # Three letters per moment: the order key ties on updated_at, the id decides.
        ids = [_add(session, f"Person {n}", updated_at=WHEN - dt.timedelta(hours=n // 3))
               for n in range(23)]
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        with database.read() as session:
            page = list_letters(session, per_page=4, after=after)
        seen += [letter.id for letter in page.letters]
        pages += 1
        if page.next_cursor is None:
            break
        after = page.next_cursor
        assert page.page is None or pages == 1
    assert pages == 6
    expected = sorted(ids, key=lambda i: (ids.index(i) // 3, -i))  # newest moment first
    assert seen == expected and len(set(seen)) == 23


def test_a_numbered_page_and_the_cursor_after_it_agree(database):
    with database.transaction() as session:
        for n in range(10):
            _add(session, f"Person {n}", updated_at=WHEN + dt.timedelta(minutes=n % 4))
    with database.read() as session:
        first = list_letters(session, per_page=3)
        second_by_number = list_letters(session, per_page=3, page=2)
        second_by_cursor = list_letters(session, per_page=3, after=first.next_cursor)
    assert [x.id for x in second_by_number.letters] == [x.id for x in second_by_cursor.letters]
    assert (first.total, first.pages, first.more) == (10, 4, False)


@pytest.mark.parametrize("cursor", ["x", "bm9wZQ", "!!", "MjAyNi0wNS0wMXwx",
                                    "MjAyNi0wNS0wMVQxMjowMDowMCswMDowMHwtMQ", "A" * 300])
def test_a_bad_cursor_names_after(database, cursor):
    with database.read() as session, pytest.raises(PageCursorError, match="^after "):
        list_letters(session, after=cursor)


def test_a_cursor_decodes_to_the_last_letter_shown(database):
    with database.transaction() as session:
        for n in range(3):
            _add(session, f"Person {n}", updated_at=WHEN + dt.timedelta(seconds=n))
    with database.read() as session:
        page = list_letters(session, per_page=2)
    assert decode_cursor(page.next_cursor) == (WHEN + dt.timedelta(seconds=1),
                                               page.letters[-1].id)


def test_the_count_stops_after_a_thousand(database):
    with database.transaction() as session:
        session.execute(Letter.__table__.insert(), [
            {"template": "separation_letter", "title": f"Letter {n}", "status": "draft",
             "search_text": f"letter {n}\nacme", "updated_at": WHEN, "created_at": WHEN,
             "current_version": 1, "file_stem": "letter", "list_values": []}
            for n in range(COUNT_LIMIT + 5)])
        _add(session, "Lone Figure", status="generated")
    with database.read() as session:
        every = list_letters(session)
        acme = list_letters(session, q="acme")
        few = list_letters(session, status="generated")
    assert (every.total, every.more, every.pages) == (COUNT_LIMIT, True, COUNT_LIMIT // 25)
    assert (acme.total, acme.more) == (COUNT_LIMIT, True)
    assert (few.total, few.more) == (1, False)


def test_a_read_transaction_refuses_writes(database):
    with pytest.raises(DBAPIError), database.read() as session:
        _add(session, "Never Stored")
    assert _letters(database, "never") == []


def test_reading_does_not_wait_for_a_writer(database):
    with database.transaction() as writer:
        _add(writer, "Held Open")
        writer.flush()
        # The write lock is held: a reader still reads, and sees the last committed state.
        started = dt.datetime.now()
        assert _letters(database, "held") == []
        assert (dt.datetime.now() - started).total_seconds() < 5
    assert len(_letters(database, "held")) == 1


def test_a_token_records_its_use_at_most_every_few_minutes(database):
    with database.transaction() as session:
        session.add(User(email="api@example.com", password_hash="x", role="staff"))
        session.flush()
        token = create_api_token(session, "api@example.com", "test")
    with database.transaction() as session:
        assert user_for_token(session, token) is not None
        first = session.query(ApiToken).one().last_used_at
    assert first is not None
    with database.transaction() as session:
        assert user_for_token(session, token) is not None
        assert not session.dirty  # nothing to write
    with database.transaction() as session:
        row = session.query(ApiToken).one()
        row.last_used_at = first - TOKEN_USE_RECORDED_EVERY - dt.timedelta(seconds=1)
    with database.transaction() as session:
        user_for_token(session, token)
        assert session.query(ApiToken).one().last_used_at > first


def _plan(session, statement, params) -> str:
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}",
                                          tuple(params)).all()
    else:
        # A few rows make a sequential scan cheapest; forbid it to see which index serves.
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", params).all()
    return "\n".join(str(row[-1]) for row in rows)


def _compiled(session, **options) -> tuple[str, dict]:
    """The SQL list_letters runs for the rows of a page, captured from the engine."""
    from sqlalchemy import event

    statements: list[tuple[str, dict]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        list_letters(session, **options)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    # The last statement that reads the matches (a page may then read its letters by id).
    searching = [s for s in statements if "LIKE" in s[0] or "letter_search" in s[0]]
    return (searching or statements)[-1]


def test_search_and_status_filter_use_indexes(database):
    with database.transaction() as session:
        for n in range(50):
            _add(session, f"Person {n}", status=LetterStatus.DRAFT.value)
    with database.read() as session:
        statement, params = _compiled(session, q="person")
        search_plan = _plan(session, statement, params)
        statement, params = _compiled(session, status="generated")
        status_plan = _plan(session, statement, params)
    assert "ix_letters_status_updated_at_id" in status_plan
    if not database.is_sqlite:
        assert "ix_letters_search_text_trgm" in search_plan
        return
    assert "letter_search VIRTUAL TABLE INDEX" in search_plan
    assert "SCAN letters" not in search_plan.replace("SCAN letters USING", "")
    assert "TEMP B-TREE" not in status_plan  # the index gives the order too
