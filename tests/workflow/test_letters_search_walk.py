"""A search with many matches walks the list in its order instead of sorting every match:
it must show exactly what sorting them would, page by page and cursor by cursor, ties too."""

from __future__ import annotations

import datetime as dt

import pytest

from workflow import letters
from workflow.letters import list_letters
from workflow.models import Letter
from workflow.states import LetterStatus
from workflow.text import search_text

WHEN = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
NAMES = ["Anna Protsch", "Zoë Müller", "Anna Ortega", "Bruno Protsch", "Søren Ortega"]
STATUSES = [LetterStatus.DRAFT.value, LetterStatus.GENERATED.value, LetterStatus.VOIDED.value]


@pytest.fixture()
def many(database):
    with database.transaction() as session:
        for n in range(90):
            name = NAMES[n % len(NAMES)]
            title = f"Letter of {name} {n}"
            # Four letters per moment: the list order ties on updated_at and the id decides.
            session.add(Letter(template="separation_letter", title=title,
                               status=STATUSES[n % len(STATUSES)],
                               updated_at=WHEN - dt.timedelta(hours=(n * 7) % 23),
                               search_text=search_text([title, name])))
    return database


def _walk_every_page(database, **options) -> tuple[list[int], list[int], int, bool]:
    """The ids of the first two numbered pages, every id reached by cursors, and the count."""
    with database.read() as session:
        numbered = [letter.id for number in (1, 2)
                    for letter in list_letters(session, per_page=7, page=number,
                                               **options).letters]
    seen: list[int] = []
    after = None
    while True:
        with database.read() as session:
            page = list_letters(session, per_page=7, after=after, **options)
        seen += [letter.id for letter in page.letters]
        if page.next_cursor is None:
            return numbered, seen, page.total, page.more
        after = page.next_cursor


SEARCHES = [{"q": "protsch"}, {"q": "anna"}, {"q": "zoe muller"}, {"q": "ortega"},
            {"q": "anna", "status": "draft"}, {"q": "letter", "status": "voided"},
            {"q": "nobody"}]


@pytest.mark.parametrize("options", SEARCHES, ids=lambda o: " ".join(o.values()))
@pytest.mark.parametrize("window", [1, 3, 1000], ids=["tiny window", "small", "wide"])
def test_walking_the_list_finds_what_sorting_every_match_finds(many, monkeypatch, options,
                                                               window):
    sorted_answer = _walk_every_page(many, **options)
    monkeypatch.setattr(letters, "SORT_AT_MOST", 0)  # always walk first
    monkeypatch.setattr(letters, "SEARCH_WALK", window)  # a tiny one falls back to sorting
    assert _walk_every_page(many, **options) == sorted_answer
    numbered, seen, _, _ = sorted_answer
    assert len(seen) == len(set(seen)) and numbered == seen[:len(numbered)]


def test_the_pages_keep_the_list_order_with_ties(many, monkeypatch):
    monkeypatch.setattr(letters, "SORT_AT_MOST", 0)
    monkeypatch.setattr(letters, "SEARCH_WALK", 1000)
    _, seen, total, more = _walk_every_page(many, q="protsch")
    with many.read() as session:
        rows = session.query(Letter).filter(Letter.title.like("%Protsch%")).all()
    expected = [letter.id for letter in sorted(rows, key=lambda x: (x.updated_at, x.id),
                                               reverse=True)]
    assert seen == expected and (total, more) == (len(expected), False) == (36, False)


def _statements(session, **options) -> list[tuple[str, object]]:
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        list_letters(session, **options)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return statements


def test_a_search_with_many_matches_walks_the_list_index(many, monkeypatch):
    monkeypatch.setattr(letters, "SORT_AT_MOST", 5)
    with many.read() as session:
        statements = _statements(session, q="protsch", per_page=3)
        if not many.is_sqlite:  # PostgreSQL's planner chooses between its indexes itself
            assert not any("letter_search" in s for s, _ in statements)
            return
        connection = session.connection()
        plans = ["\n".join(str(row[-1]) for row in connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {s}", tuple(p)).all())
            for s, p in statements if s.lstrip().upper().startswith("SELECT")]
    count, walk = plans  # two statements: the count, then the page's letters
    # A search alone is counted in the text index, without reading the letters.
    assert "letters" not in count.replace("letter_search", "")
    # The page walks the list-order index, bounded by its window, and stops; no sort of every
    # match.
    assert "USING INDEX ix_letters_updated_at (updated_at>?)" in walk
    assert "TEMP B-TREE" not in walk
