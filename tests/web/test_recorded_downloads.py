"""Downloads written in the audit record start from a POST; a GET of them writes nothing and
says why. Documents and page pictures are never stored by browsers or proxies."""

from __future__ import annotations

import pytest
from lxml import html as lxml_html
from sqlalchemy import select

from web.database import get_db
from web.testing import csrf_token
from workflow.models import Event

TYPED = {"consent": True, "signature": {"type": "typed", "text": "Signed"}}


@pytest.fixture()
def executed(client, sent) -> dict:
    """A letter both signers signed online: fully executed."""
    for signer in sent["signers"]:
        assert client.post(f"/api/sign/{signer['token']}", json=TYPED).status_code == 200
    return sent


def events(app, letter_id: int) -> list[tuple[str, str, str | None]]:
    with app.app_context(), get_db().transaction() as session:
        return [(e.type, e.actor, e.detail.get("document")) for e in session.scalars(
            select(Event).where(Event.letter_id == letter_id).order_by(Event.sequence))]


def recorded_paths(letter_id: int, counterpart_id: int) -> list[str]:
    return [f"/letters/{letter_id}/executed.pdf", f"/letters/{letter_id}/counterparts.zip",
            f"/letters/{letter_id}/counterparts/{counterpart_id}/signed.pdf"]


def test_a_get_of_a_recorded_download_writes_nothing(app, staff, client, api, executed):
    letter_id = executed["letter_id"]
    counterpart_id = executed["signers"][0]["counterpart_id"]
    before = events(app, letter_id)
    paths = recorded_paths(letter_id, counterpart_id)
    for path in paths:
        for response in (staff.get(path), staff.head(path),
                         client.get("/api" + path, headers=api)):
            assert response.status_code == 405, path
            assert response.headers["Allow"] == "POST"
            assert not response.data.startswith(b"%PDF") and not response.data.startswith(b"PK")
    page_answer = staff.get(paths[0])
    assert "audit record, so they are asked for with POST" in \
        page_answer.text
    assert "asked for with POST" in client.get(
        f"/api/letters/{letter_id}/executed.pdf", headers=api).json["error"]
    assert events(app, letter_id) == before


def test_the_letter_page_downloads_with_posts_and_each_is_recorded(app, staff, executed):
    letter_id = executed["letter_id"]
    counterpart_id = executed["signers"][0]["counterpart_id"]
    page = staff.get(f"/letters/{letter_id}")
    tree = lxml_html.fromstring(page.text)
    for path in recorded_paths(letter_id, counterpart_id):
        assert tree.xpath(f"//form[@method='post'][@action='{path}']//button"), path
        assert not tree.xpath(f"//a[@href='{path}']"), path  # no plain link to follow
    before = events(app, letter_id)
    token = csrf_token(page.text)
    answers = [staff.post(path, data={"csrf_token": token})
               for path in recorded_paths(letter_id, counterpart_id)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].data.startswith(b"%PDF-") and answers[1].data.startswith(b"PK")
    added = events(app, letter_id)[len(before):]
    assert added == [
        ("downloaded", "counsel@example.com", "john-r-tucker-separation-letter-executed.pdf"),
        ("downloaded", "counsel@example.com", "john-r-tucker-separation-letter-counterparts.zip"),
        ("downloaded", "counsel@example.com", "counterpart-1-eliot-protsch-signed.pdf")]
    # Without the form's token, nothing is sent and nothing recorded.
    refused = staff.post(f"/letters/{letter_id}/executed.pdf")
    assert refused.status_code == 400 and not refused.data.startswith(b"%PDF")
    assert events(app, letter_id)[len(before):] == added


def test_the_api_downloads_with_posts_and_each_is_recorded(app, client, api, executed):
    letter_id = executed["letter_id"]
    before = events(app, letter_id)
    answer = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert answer.status_code == 200 and answer.data.startswith(b"%PDF-")
    assert events(app, letter_id)[len(before):] == [
        ("downloaded", "counsel@example.com", "john-r-tucker-separation-letter-executed.pdf")]


def test_documents_and_page_pictures_are_not_stored_by_browsers(client, staff, api, sent):
    letter_id = sent["letter_id"]
    token = sent["signers"][0]["token"]
    page = staff.get(f"/letters/{letter_id}")
    answers = {
        "pdf": staff.get(f"/letters/{letter_id}/versions/1/letter.pdf"),
        "docx": staff.get(f"/letters/{letter_id}/versions/1/letter.docx"),
        "picture": staff.get(f"/letters/{letter_id}/versions/1/pages/1.png"),
        "api pdf": client.get(f"/api/letters/{letter_id}/document.pdf", headers=api),
        "audit": staff.get(f"/letters/{letter_id}/audit.json"),
        "blank": staff.post(f"/letters/{letter_id}/counterparts/"
                            f"{sent['signers'][1]['counterpart_id']}/blank.pdf",
                            data={"csrf_token": csrf_token(page.text)}),
        "signer's picture": client.get(f"/sign/{token}/pages/1.png"),
        "signer's pdf": client.get(f"/sign/{token}/letter.pdf"),
    }
    for name, answer in answers.items():
        assert answer.status_code == 200, name
        assert answer.headers["Cache-Control"] == "no-store", name
    assert answers["picture"].data.startswith(b"\x89PNG")
    # The static files of the app itself may still be kept.
    static = staff.get("/static/css/app.css")
    static.close()
    assert "no-store" not in static.headers.get("Cache-Control", "")
