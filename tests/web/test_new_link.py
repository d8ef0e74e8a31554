"""A lost signing link is replaced, an expired one renewed: the new one works for the days
asked, the old one stops, and a signed counterpart, a declined or voided letter get no new
link, saying why.
"""

from __future__ import annotations

import datetime as dt
import re

from mailing import text_of, use_mail
from sqlalchemy import update

from web.database import get_db
from web.testing import csrf_token
from workflow.models import Envelope, utcnow


def test_a_new_link_through_the_api(client, api, sent, execution_state):
    letter_id = sent["letter_id"]
    company = sent["signers"][0]
    response = client.post(f"/api/letters/{letter_id}/counterparts/"
                           f"{company['counterpart_id']}/link", headers=api)
    assert response.status_code == 201, response.text
    new_token = response.json["link"].rsplit("/", 1)[1]
    assert new_token != company["token"] and len(new_token) >= 43
    assert client.get(f"/api/sign/{company['token']}").status_code == 404
    assert client.get(f"/api/sign/{new_token}").status_code == 200
    signed = client.post(f"/api/sign/{new_token}", json={
        "consent": True, "signature": {"type": "typed", "text": "Eliot Protsch"}})
    assert signed.status_code == 200
    before = execution_state(letter_id)
    refused = client.post(f"/api/letters/{letter_id}/counterparts/"
                          f"{company['counterpart_id']}/link", headers=api)
    assert refused.status_code == 409
    assert "only a counterpart still to be signed" in refused.json["error"]
    assert execution_state(letter_id) == before


def test_a_new_link_from_the_letter_page_is_shown_once(staff, sent):
    letter_id = sent["letter_id"]
    executive = sent["signers"][1]
    page = staff.get(f"/letters/{letter_id}")
    assert "New link" in page.text
    response = staff.post(f"/letters/{letter_id}/counterparts/{executive['counterpart_id']}"
                          "/link", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 303
    shown = staff.get(f"/letters/{letter_id}")
    assert "the earlier one no longer works" in shown.text
    assert "/sign/" in shown.text and executive["token"] not in shown.text
    again = staff.get(f"/letters/{letter_id}")
    assert "the earlier one no longer works" not in again.text


def _expire(app, letter_id) -> None:
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Envelope).where(Envelope.letter_id == letter_id)
                        .values(expires_at=utcnow() - dt.timedelta(minutes=1)))


def test_an_expired_link_is_renewed_through_the_api(app, client, api, sent, execution_state):
    letter_id = sent["letter_id"]
    company, executive = sent["signers"]
    _expire(app, letter_id)
    url = f"/api/letters/{letter_id}/counterparts/{company['counterpart_id']}/link"
    before = execution_state(letter_id)
    for body, message in (({"link_days": 0}, "between 1 and 365"),
                          ({"link_days": "ten"}, "link_days")):
        refused = client.post(url, headers=api, json=body)
        assert refused.status_code == 400 and message in refused.json["error"]
    assert execution_state(letter_id) == before

    renewed = client.post(url, headers=api, json={"link_days": 10})
    assert renewed.status_code == 201, renewed.text
    assert renewed.json["signer"]["status"] == "ready"  # reopened; not emailed: no mail server
    expires = dt.datetime.fromisoformat(renewed.json["expires_at"])
    assert dt.timedelta(days=9, hours=23) < expires - utcnow() <= dt.timedelta(days=10)
    token = renewed.json["link"].rsplit("/", 1)[1]
    assert client.get(f"/api/sign/{token}").json["can_sign"] is True
    # Only the renewed link reopens: the other signer's stays expired until renewed too.
    stale = client.get(f"/api/sign/{executive['token']}")
    assert stale.status_code == 410 and stale.json["reason"] == "expired"
    assert "ask the sender for a new one" in stale.json["error"]
    envelope = client.get(f"/api/letters/{letter_id}/envelope", headers=api).json
    assert [s["status"] for s in envelope["signers"]] == ["viewed", "expired"]
    record = client.get(f"/api/letters/{letter_id}/audit", headers=api).json
    (event,) = [e for e in record["events"] if e["type"] == "new_link"]
    assert event["actor"] == "counsel@example.com"
    assert event["detail"]["status_before"] == "expired" and event["detail"]["link_days"] == 10
    assert dt.datetime.fromisoformat(event["detail"]["expires_at"]).replace(microsecond=0) \
        == expires


def test_an_expired_link_is_renewed_from_the_letter_page(app, staff, sent):
    letter_id = sent["letter_id"]
    executive = sent["signers"][1]
    _expire(app, letter_id)
    page = staff.get(f"/letters/{letter_id}")
    assert "The signing links expired on" in page.text
    assert "Give a signer a new link" in page.text and page.text.count(">New link<") == 2
    response = staff.post(f"/letters/{letter_id}/counterparts/{executive['counterpart_id']}"
                          "/link", data={"csrf_token": csrf_token(page.text), "link_days": "7"})
    assert response.status_code == 303
    shown = staff.get(f"/letters/{letter_id}")
    assert "the earlier one no longer works" in shown.text
    (link,) = re.findall(r'value="(http://localhost/sign/[^"]+)"', shown.text)
    assert "The signing links expired on" not in shown.text
    assert "link ready to be handed over: not emailed" in shown.text
    assert "New link" in shown.text and "Timeline" in shown.text
    assert app.test_client().get(link.removeprefix("http://localhost")).status_code == 200


def test_links_that_cannot_be_renewed_say_why(client, api, sent):
    letter_id = sent["letter_id"]
    company = sent["signers"][0]
    url = f"/api/letters/{letter_id}/counterparts/{company['counterpart_id']}/link"
    assert client.post(f"/api/sign/{sent['signers'][1]['token']}/decline",
                       json={"reason": "No"}).status_code == 200
    declined = client.post(url, headers=api)
    assert declined.status_code == 409
    assert "declined this letter, so it can no longer be signed" in declined.json["error"]
    assert client.post(f"/api/letters/{letter_id}/envelope/void", headers=api,
                       json={"reason": "Start over"}).status_code == 200
    voided = client.post(url, headers=api)
    assert voided.status_code == 409
    assert "voided; its links cannot be renewed. Send the letter again" in voided.json["error"]


def test_a_renewed_link_is_sent_once_the_mail_server_accepts_it(app, client, api, sent,
                                                                 smtp_inbox):
    port, inbox = smtp_inbox
    use_mail(app, port)
    letter_id = sent["letter_id"]
    company = sent["signers"][0]  # the one with an email address
    _expire(app, letter_id)
    renewed = client.post(f"/api/letters/{letter_id}/counterparts/"
                          f"{company['counterpart_id']}/link", headers=api, json={})
    assert renewed.status_code == 201, renewed.text
    assert renewed.json["emails"]["sent"] == ["Eliot Protsch <eliot@capstone.test>"]
    assert renewed.json["signer"]["status"] == "sent" and renewed.json["signer"]["emailed_at"]
    (message,) = inbox.messages
    assert renewed.json["link"].rsplit("/", 1)[1] in text_of(message)
    expires = dt.datetime.fromisoformat(renewed.json["expires_at"])
    assert dt.timedelta(days=29, hours=23) < expires - utcnow() <= dt.timedelta(days=30)
