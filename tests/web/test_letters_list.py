"""The letters list page and API at scale: cursor pages, a bad cursor, the capped count."""

from __future__ import annotations

import datetime as dt

import lxml.html

from web.database import get_db
from workflow.letters import COUNT_LIMIT
from workflow.models import Letter

WHEN = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _insert(app, count: int, *, name: str = "Person") -> None:
    with app.app_context(), get_db().transaction() as session:
        session.execute(Letter.__table__.insert(), [
            {"template": "separation_letter", "title": f"Letter of {name} {n}",
             "status": "draft", "search_text": f"letter of {name.lower()} {n}",
             "updated_at": WHEN - dt.timedelta(minutes=n // 2), "created_at": WHEN,
             "current_version": 1, "file_stem": "letter", "list_values": []}
            for n in range(count)])


def _titles(html: str) -> list[str]:
    return [a.text_content() for a in lxml.html.fromstring(html).xpath("//tbody/tr/th/a")]


def test_api_pages_follow_next_without_repeats(app, client, api):
    _insert(app, 7)
    seen: list[str] = []
    answer = client.get("/api/letters?per_page=3", headers=api).json
    assert (answer["total"], answer["total_is_estimate"], answer["page"]) == (7, False, 1)
    while True:
        seen += [letter["title"] for letter in answer["letters"]]
        if answer["next"] is None:
            break
        answer = client.get("/api/letters", query_string={"per_page": 3,
                                                          "after": answer["next"]},
                            headers=api).json
        assert answer["page"] is None
    assert sorted(seen) == sorted(f"Letter of Person {n}" for n in range(7))
    assert len(seen) == 7


def test_a_bad_cursor_is_a_400_naming_after(app, client, api, staff):
    response = client.get("/api/letters?after=not-a-cursor", headers=api)
    assert response.status_code == 400 and "after" in response.json["error"]
    page = staff.get("/letters?after=not-a-cursor")
    assert page.status_code == 400 and "after is not a cursor" in page.text


def test_a_page_number_beyond_the_counted_letters_is_refused(client, api):
    response = client.get("/api/letters?per_page=25&page=41", headers=api)
    assert response.status_code == 400 and "page" in response.json["error"]


def test_more_than_a_thousand_letters_are_counted_as_such(app, staff, client, api):
    _insert(app, COUNT_LIMIT + 3)
    page = staff.get("/letters")
    assert "More than 1,000 letters." in " ".join(page.text.split())
    assert "Page 1 of more than 40" in page.text
    answer = client.get("/api/letters", headers=api).json
    assert (answer["total"], answer["total_is_estimate"]) == (COUNT_LIMIT, True)
    # The last numbered page leads on with a cursor, which goes on to the oldest letters.
    last_numbered = staff.get("/letters?page=40")
    older = lxml.html.fromstring(last_numbered.text).xpath('//a[@rel="next"]/@href')[0]
    assert older.startswith("/letters?after=")
    deeper = staff.get(older)
    assert deeper.status_code == 200
    # Two letters per minute; of two at the same moment the newer id comes first.
    assert _titles(deeper.text) == [f"Letter of Person {n}" for n in (1001, 1000, 1002)]
    assert 'rel="first" href="/letters"' in deeper.text
    assert 'rel="next"' not in deeper.text


def test_search_and_status_keep_to_the_cursor(app, staff):
    _insert(app, 5, name="Ottilie")
    _insert(app, 5, name="Bruno")
    app.config["LETTERS_PER_PAGE"] = 2
    first = staff.get("/letters?q=ottil")
    assert len(_titles(first.text)) == 2
    assert "5 letters match" in first.text
    shown = _titles(first.text)
    after = None
    while True:
        tree = lxml.html.fromstring(first.text)
        links = tree.xpath('//a[@rel="next"]/@href')
        if not links:
            break
        first = staff.get(links[0])
        shown += _titles(first.text)
        after = links[0]
    assert sorted(shown) == sorted(f"Letter of Ottilie {n}" for n in range(5))
    assert after is not None and "q=ottil" in after


def test_the_list_shows_each_sent_letters_signatures_and_lapsed_links(app, staff, client, api,
                                                                       sent):
    from sqlalchemy import update

    from workflow.models import Envelope, utcnow

    letter_id = sent["letter_id"]
    _insert(app, 3)  # letters never sent show no signatures
    listed = {row["id"]: row for row in client.get("/api/letters", headers=api).json["letters"]}
    assert listed[letter_id]["signatures"]["signed"] == 0
    assert listed[letter_id]["signatures"]["total"] == 2
    assert [row["signatures"] for i, row in listed.items() if i != letter_id] == [None] * 3
    assert "0 of 2 signed" in staff.get("/letters").text
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Envelope).where(Envelope.letter_id == letter_id)
                        .values(expires_at=utcnow() - dt.timedelta(minutes=1)))
    listed = {row["id"]: row for row in client.get("/api/letters", headers=api).json["letters"]}
    assert (listed[letter_id]["signatures"]["expired"], listed[letter_id]["signatures"]["ready"]
            ) == (2, 0)
    assert "2 links expired" in staff.get("/letters").text
