"""A lost signing link is replaced: the new one works, the old one stops, and a signed
counterpart gets no new link.
"""

from __future__ import annotations

from web.testing import csrf_token


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
