"""Signers keep their copy: after signing, their link reads for its lifetime, showing what they
signed and giving them their signed counterpart and, once every counterpart is signed, the
executed letter; with the token alone, never another signer's, and each download recorded
(so asked for with POST, as every recorded download is).
"""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import html as lxml_html
from sqlalchemy import func, select, update

from web.database import get_db
from web.testing import csrf_token
from workflow.models import Counterpart, Envelope, Event, utcnow

TYPED = {"consent": True, "signature": {"type": "typed", "text": "Signed"}}

EXECUTED = "john-r-tucker-separation-letter-executed.pdf"


def sign(client, token):
    response = client.post(f"/api/sign/{token}", json=TYPED)
    assert response.status_code == 200, response.text
    return response


def fetch(client, token, copy, html=None):
    """Download a signer's copy as the page's button does: a POST with the page's form token."""
    return client.post(f"/sign/{token}/{copy}.pdf",
                       data={"csrf_token": csrf_token(html or client.get("/verify").text)})


def downloads(app, letter_id) -> list[tuple[str, str, int | None]]:
    with app.app_context(), get_db().transaction() as session:
        return [(e.actor, e.detail["document"], e.counterpart_id) for e in session.scalars(
            select(Event).where(Event.letter_id == letter_id, Event.type == "downloaded")
            .order_by(Event.sequence))]


def test_a_signed_link_shows_what_was_signed_and_gives_the_copies(app, client, api, staff,
                                                                  sent):
    letter_id = sent["letter_id"]
    company, executive = sent["signers"]
    signer = app.test_client()
    sign(signer, company["token"])

    page = signer.get(f"/sign/{company['token']}")
    assert page.status_code == 200
    text = " ".join(lxml_html.fromstring(page.text).text_content().split())
    assert "You signed this letter" in text
    assert "Separation letter of John R. Tucker, Capstone Turbine Corporation" in text
    assert "Eliot Protsch, as the company, by its chair" in text
    assert "with your typed signature" in text
    assert "Still to sign: John R. Tucker" in text
    assert "Sign the letter" not in text and "the sender can send you a copy" not in text
    tree = lxml_html.fromstring(page.text)
    assert tree.xpath("//form[@method='post']/@action") == [
        f"/sign/{company['token']}/signed.pdf"]

    described = signer.get(f"/api/sign/{company['token']}").json
    assert described["can_sign"] is False and described["signer"]["status"] == "signed"
    assert described["signed_pdf"] == \
        f"http://localhost/api/sign/{company['token']}/signed.pdf"
    assert described["executed_pdf"] is None
    assert described["letter"]["still_to_sign"] == ["John R. Tucker"]

    # A GET (a prefetch, a link checker) gives nothing and records nothing.
    assert signer.get(f"/sign/{company['token']}/signed.pdf").status_code == 405
    assert downloads(app, letter_id) == []
    own = fetch(signer, company["token"], "signed", page.text)
    assert own.status_code == 200 and own.mimetype == "application/pdf"
    staff_copy = client.post(f"/api/letters/{letter_id}/counterparts/"
                             f"{company['counterpart_id']}/signed.pdf", headers=api)
    assert own.data == staff_copy.data  # byte for byte what staff hold
    not_yet = fetch(signer, company["token"], "executed", page.text)
    assert not_yet.status_code == 409 and "still to sign: John R. Tucker" in not_yet.text

    sign(app.test_client(), executive["token"])
    described = signer.get(f"/api/sign/{company['token']}").json
    assert described["letter"]["fully_executed"] is True
    assert described["executed_pdf"] == \
        f"http://localhost/api/sign/{company['token']}/executed.pdf"
    through_api = app.test_client().post(described["executed_pdf"])  # the token alone
    assert through_api.status_code == 200
    page = signer.get(f"/sign/{company['token']}")
    assert "The letter is fully executed." in page.text
    executed = fetch(signer, company["token"], "executed", page.text)
    assert executed.status_code == 200 and executed.data == through_api.data
    assert executed.data == client.post(f"/api/letters/{letter_id}/executed.pdf",
                                        headers=api).data

    recorded = [d for d in downloads(app, letter_id) if d[0] != "counsel@example.com"]
    assert recorded == [
        ("Eliot Protsch", "counterpart-1-eliot-protsch-signed.pdf", company["counterpart_id"]),
        ("Eliot Protsch", EXECUTED, company["counterpart_id"]),
        ("Eliot Protsch", EXECUTED, company["counterpart_id"])]


def test_signing_times_are_shown_in_the_signers_zone(app, sent):
    token = sent["signers"][0]["token"]
    signer = app.test_client()
    sign(signer, token)
    signed_at = dt.datetime(2006, 7, 24, 14, 5, tzinfo=dt.UTC)
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Counterpart).where(
            Counterpart.id == sent["signers"][0]["counterpart_id"])
            .values(time_zone="America/New_York", signed_at=signed_at))
    tree = lxml_html.fromstring(signer.get(f"/sign/{token}").text)
    (shown,) = [t for t in tree.xpath("//time") if t.get("datetime") ==
                "2006-07-24T14:05:00+00:00"]
    assert shown.text_content() == "Jul 24, 2006, 10:05 EDT (America/New_York)"
    assert shown.get("title") == "Jul 24, 2006, 14:05 UTC"


@pytest.mark.parametrize("case", ["another signer", "voided", "declined", "expired",
                                  "unknown"])
def test_copies_are_refused_when_the_link_may_not_give_them(app, client, api, sent,
                                                            execution_state, case):
    letter_id = sent["letter_id"]
    company, executive = sent["signers"]
    sign(app.test_client(), company["token"])
    token, status = company["token"], 410
    if case == "another signer":
        token, status = executive["token"], 409  # their own is not signed; no one else's
    elif case == "voided":
        assert client.post(f"/api/letters/{letter_id}/envelope/void", headers=api,
                           json={"reason": "Start over"}).status_code == 200
    elif case == "declined":
        assert client.post(f"/api/sign/{executive['token']}/decline",
                           json={"reason": "No"}).status_code == 200
    elif case == "expired":
        with app.app_context(), get_db().transaction() as session:
            session.execute(update(Envelope).where(Envelope.letter_id == letter_id)
                            .values(expires_at=utcnow() - dt.timedelta(minutes=1)))
    elif case == "unknown":
        token, status = "x" * 43, 404
    before = execution_state(letter_id)
    visitor = app.test_client()
    for copy in ("signed", "executed"):
        for response in (fetch(visitor, token, copy),
                         visitor.post(f"/api/sign/{token}/{copy}.pdf")):
            assert response.status_code == status, (copy, response.status_code)
            assert not response.data.startswith(b"%PDF")
    assert execution_state(letter_id) == before  # no download was recorded
    if case == "expired":
        page = visitor.get(f"/sign/{token}")
        assert page.status_code == 410
        assert "ask the sender for a copy of what you signed" in page.text
        assert visitor.get(f"/api/sign/{token}").json["reason"] == "expired"


@pytest.fixture()
def app_config(app_config):
    return {**app_config, "RATE_LIMIT_FAILURES": "5 per minute"}


def test_guessed_tokens_on_the_copies_are_rate_limited(app, sent):
    guesser = {"REMOTE_ADDR": "203.0.113.66"}
    visitor = app.test_client()
    for index in range(5):
        response = visitor.post(f"/api/sign/{'x' * 40}{index}/signed.pdf",
                                environ_base=guesser)
        assert response.status_code == 404
    token = sent["signers"][0]["token"]
    sign(app.test_client(), token)
    blocked = visitor.post(f"/api/sign/{token}/signed.pdf", environ_base=guesser)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    page_blocked = visitor.post(f"/sign/{token}/signed.pdf", environ_base=guesser)
    assert page_blocked.status_code == 429
    other = visitor.post(f"/api/sign/{token}/signed.pdf",
                         environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert other.status_code == 200 and other.data.startswith(b"%PDF")


def test_the_sign_form_of_a_used_link_points_to_the_copy(app, sent):
    token = sent["signers"][0]["token"]
    signer = app.test_client()
    sign(signer, token)
    again = signer.post(f"/sign/{token}", data={
        "csrf_token": csrf_token(signer.get("/verify").text), "consent": "yes",
        "signature_type": "typed", "signature_text": "Again"})
    assert again.status_code == 410
    assert f'href="/sign/{token}"' in again.text
    assert "See what you signed and download your copy" in again.text
    with app.app_context(), get_db().transaction() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(
            Event.type == "signed")) == 1
