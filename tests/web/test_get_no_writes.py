"""No GET request writes to the database: staff pages, admin pages, the JSON API and the
signers' pages of a letter in every state (draft, sent, partly signed, executed, voided) are
read while every statement sent to the database is watched, and static files do not even open
a connection."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest
from flask import Flask
from lxml import html as lxml_html
from sqlalchemy import event, update
from sqlalchemy.exc import DBAPIError

from web.database import get_db
from workflow.models import StaffSession

TYPED = {"consent": True, "signature": {"type": "typed", "text": "Eliot Protsch"}}
WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
# Links that a walk must not follow: they end the session or leave the app.
NOT_FOLLOWED = ("/sign-out", "http:", "https:", "mailto:", "#", "javascript:")


class StatementWatch:
    """Every statement the app sends to the database from the test's own thread (the one the
    test client answers requests in), and every connection it takes from the pool."""

    def __init__(self, app: Flask) -> None:
        with app.app_context():
            self.engine = get_db().engine
        self.thread = threading.get_ident()
        self.statements: list[str] = []
        self.checkouts = 0
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "checkout", self._checkout)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == self.thread:
            self.statements.append(statement)

    def _checkout(self, *_args: Any) -> None:
        if threading.get_ident() == self.thread:
            self.checkouts += 1

    def writes(self) -> list[str]:
        return [s for s in self.statements if WRITE.match(s)]

    @contextmanager
    def watching(self) -> Iterator[StatementWatch]:
        self.statements.clear()
        self.checkouts = 0
        yield self

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "checkout", self._checkout)


@pytest.fixture()
def watch(app: Flask) -> Iterator[StatementWatch]:
    watcher = StatementWatch(app)
    yield watcher
    watcher.close()


def _local_links(page: str) -> list[str]:
    try:
        tree = lxml_html.fromstring(page)
    except Exception:  # not a page (a picture, a PDF): nothing to follow
        return []
    found = []
    for href in tree.xpath("//a/@href"):
        href = urldefrag(href)[0]
        parts = urlsplit(href)
        if not href or href.startswith(NOT_FOLLOWED) or parts.scheme or parts.netloc:
            continue
        found.append(href)
    return found


def walk(client: Any, watch: StatementWatch, start: list[str], *, headers: Any = None,
         limit: int = 80) -> list[tuple[str, int, list[str]]]:
    """GET every page reachable from ``start`` by local links (up to ``limit``); return, for
    each, its path, status and the writes it sent to the database."""
    seen: set[str] = set()
    queue = list(start)
    visited = []
    while queue and len(visited) < limit:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        with watch.watching():
            response = client.get(path, headers=headers)
            writes = watch.writes()
        visited.append((path, response.status_code, writes))
        if response.mimetype == "text/html":
            queue += [link for link in _local_links(response.text) if link not in seen]
    return visited


def assert_read_only(visited: list[tuple[str, int, list[str]]]) -> None:
    wrote = [(path, writes) for path, _, writes in visited if writes]
    assert wrote == [], f"GET requests wrote to the database: {wrote}"
    failed = [(path, status) for path, status, _ in visited if status >= 500]
    assert failed == [], f"GET requests failed: {failed}"


def sign(client: Any, token: str) -> None:
    response = client.post(f"/api/sign/{token}", json=TYPED)
    assert response.status_code == 200, response.text


def signer_pages(token: str) -> list[str]:
    return [f"/sign/{token}", f"/sign/{token}/done", f"/sign/{token}/pages/1.png",
            f"/sign/{token}/letter.pdf", f"/api/sign/{token}"]


def test_no_page_of_a_letter_in_any_state_writes(app, staff, client, api, watch, make_letter,
                                                 send_letter, reference_terms, sign_in,
                                                 credentials):
    signers = [{"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test"},
               {"role": "executive", "name": "John R. Tucker"}]
    draft = make_letter(reference_terms, generate=False)
    partly, executed, voided = (make_letter(reference_terms) for _ in range(3))
    tokens = {}
    for letter_id in (partly, executed, voided):
        tokens[letter_id] = [s["token"] for s in send_letter(letter_id, signers=signers)
                             ["signers"]]
    sent = make_letter(reference_terms)
    tokens[sent] = [s["token"] for s in send_letter(sent, signers=signers)["signers"]]
    sign(client, tokens[partly][0])
    for token in tokens[executed]:
        sign(client, token)
    void = client.post(f"/api/letters/{voided}/envelope/void", headers=api,
                       json={"reason": "Wrong hourly rate"})
    assert void.status_code == 200
    with app.app_context():
        get_db().activity.flush(get_db())  # what the steps above noted, written now

    letters = {"draft": draft, "sent": sent, "partly signed": partly, "executed": executed,
               "voided": voided}
    pages = ["/", "/letters", "/letters?q=Tucker", "/letters/new"] + \
        [f"/letters/{letter_id}" for letter_id in letters.values()]
    visited = walk(staff, watch, pages, limit=120)
    assert {path for path, status, _ in visited if status == 200} >= set(pages[1:])
    assert_read_only(visited)

    api_paths = ["/api/letters", "/api/templates", "/api/webhooks"]
    for letter_id in letters.values():
        api_paths += [f"/api/letters/{letter_id}", f"/api/letters/{letter_id}/envelope",
                      f"/api/letters/{letter_id}/audit"]
    visited = walk(client, watch, api_paths, headers=api)
    assert [status for path, status, _ in visited if path == "/api/letters"] == [200]
    assert_read_only(visited)

    signing = [path for letter_id in (sent, partly, executed, voided)
               for token in tokens[letter_id] for path in signer_pages(token)]
    visited = walk(app.test_client(), watch, signing)
    assert any(path.startswith("/sign/") and status == 200 for path, status, _ in visited)
    assert_read_only(visited)

    admin = sign_in(app.test_client(), *credentials["admin"])
    visited = walk(admin, watch, ["/admin/users", "/admin/settings", "/admin/templates",
                                  "/admin/webhooks", "/account/two-factor"], limit=60)
    assert [status for path, status, _ in visited if path == "/admin/users"] == [200]
    assert_read_only(visited)


def test_a_signers_first_view_is_still_recorded(app, client, api, sent, watch):
    token = sent["signers"][0]["token"]
    with watch.watching():
        assert client.get(f"/sign/{token}").status_code == 200
        assert watch.writes() == []
    with app.app_context():
        get_db().activity.flush(get_db())
    events = client.get(f"/api/letters/{sent['letter_id']}/audit", headers=api).json["events"]
    viewed = [e for e in events if e["type"] == "viewed"]
    assert len(viewed) == 1 and viewed[0]["actor"] == "Eliot Protsch"


def test_a_write_added_to_a_get_is_caught(app_config, watch_factory):
    """The watch catches a GET that writes: it fails loudly (read-only) and is seen."""
    from web import create_app
    from web.auth import public

    probe = create_app(app_config)

    @probe.get("/probe-writes")
    @public
    def probe_writes() -> str:
        with get_db().transaction() as session:
            session.execute(update(StaffSession).values(end_reason="probe"))
        return "written"

    watcher = watch_factory(probe)
    with watcher.watching():
        try:
            status = probe.test_client().get("/probe-writes").status_code
        except DBAPIError:  # (tests let errors through)
            status = 500
        writes = watcher.writes()
    assert status == 500  # refused: the transaction was read-only
    assert writes and writes[0].startswith("UPDATE staff_sessions")
    with pytest.raises(AssertionError, match="wrote to the database"):
        assert_read_only([("/probe-writes", 200, writes)])
    probe.extensions["counterpart.db"].dispose()


@pytest.fixture()
def watch_factory() -> Iterator[Any]:
    made: list[StatementWatch] = []

    def make(app: Flask) -> StatementWatch:
        made.append(StatementWatch(app))
        return made[-1]
    yield make
    for watcher in made:
        watcher.close()


def test_static_files_never_touch_the_database(app, staff, watch):
    assert staff.get_cookie(app.config["SESSION_COOKIE_NAME"]) is not None
    with watch.watching():
        response = staff.get("/static/css/app.css")
        assert response.status_code == 200
        assert watch.checkouts == 0 and watch.statements == []
    # The same watch sees a page, which does read the session.
    with watch.watching():
        assert staff.get("/letters").status_code == 200
        assert watch.checkouts > 0 and watch.writes() == []
