"""Numbers from outside, read strictly: huge or odd ids, pages, versions and JSON numbers get
a 404 or a 400 naming the parameter, never a 500; and no log line names a live signing link."""

from __future__ import annotations

import hashlib
import logging
import urllib.request

import pytest
from lxml import html as lxml_html
from sqlalchemy import func, select

from web.database import get_db
from web.testing import LiveServer, csrf_token
from workflow.models import Letter

HUGE = "9" * 23
ENORMOUS = "1" + "0" * 5000  # "10**5000": more digits than Python's int() reads


@pytest.fixture()
def app_config(app_config):
    # A crash answers 500 as it would in production, instead of reaching the test.
    return {**app_config, "PROPAGATE_EXCEPTIONS": False}


@pytest.fixture()
def letter_id(make_letter, reference_terms) -> int:
    return make_letter(reference_terms)


def letters(app) -> int:
    with app.app_context(), get_db().transaction() as session:
        return session.scalar(select(func.count()).select_from(Letter))


@pytest.mark.parametrize("path", [
    f"/letters/{HUGE}", f"/letters/{HUGE}/edit", f"/letters/{HUGE}/status",
    "/letters/2147483648", "/letters/{id}/versions/2147483648/letter.pdf",
    f"/letters/{{id}}/versions/1/pages/{HUGE}.png", f"/letters/{{id}}/versions/{HUGE}/letter.docx",
    "/letters/\u0661\u0662",  # Arabic-Indic digits, which int() reads as 12
    "/letters/%C2%B2", "/letters/+1", "/letters/1_0",
    f"/letters/{{id}}/counterparts/{HUGE}/signed.pdf",
])
def test_odd_and_huge_ids_in_paths_are_not_found(app, staff, letter_id, path):
    response = staff.get(path.format(id=letter_id))
    assert response.status_code in (404, 405), path  # 405: recorded downloads are POSTs
    assert "Traceback" not in response.text


def test_huge_ids_in_posts_and_the_api_are_not_found(app, staff, client, api, letter_id):
    page = staff.get(f"/letters/{letter_id}")
    for path in (f"/letters/{HUGE}/envelope", f"/letters/{letter_id}/counterparts/{HUGE}/link",
                 f"/letters/{HUGE}/executed.pdf"):
        response = staff.post(path, data={"csrf_token": csrf_token(page.text)})
        assert response.status_code == 404, path
    for path in (f"/api/letters/{HUGE}", f"/api/letters/{HUGE}/document.pdf",
                 f"/api/letters/{letter_id}/counterparts/{ENORMOUS}/signed.pdf"):
        response = client.get(path, headers=api)
        assert response.status_code == 404 and response.is_json, path
    assert letters(app) == 1


@pytest.mark.parametrize("query, words", [
    # Numbered pages end where the count stops (1,000 letters); later pages follow a cursor.
    (f"page={ENORMOUS}", "page must be a whole number from 1 to 40,"),
    ("page=10**5000", "page must be a whole number"),
    ("page=\u00b2", "page must be a whole number"),
    ("page=0", "page must be a whole number from 1"),
    ("page=%EF%BC%92", "page must be a whole number"),  # a full-width 2
])
def test_odd_page_numbers_are_refused_by_name(staff, letter_id, query, words):
    response = staff.get(f"/letters?{query}")
    assert response.status_code == 400
    assert words in response.text


def test_plain_page_numbers_still_work(staff, letter_id):
    assert staff.get("/letters?page=1").status_code == 200
    assert staff.get("/letters?page=").status_code == 200  # empty: the first page
    assert staff.get("/letters?page=40").status_code == 200  # the last numbered page: empty


@pytest.mark.parametrize("version", ["\u00b2", HUGE, ENORMOUS, "1.0", "-1", " 1x"])
def test_odd_versions_are_refused_by_name(staff, client, api, letter_id, version):
    page = staff.get(f"/letters/{letter_id}", query_string={"version": version})
    assert page.status_code == 400 and "version must be a whole number" in page.text
    document = client.get(f"/api/letters/{letter_id}/document.pdf",
                          query_string={"version": version}, headers=api)
    assert document.status_code == 400
    assert "version must be a whole number" in document.json["error"]


@pytest.mark.parametrize("query", [f"page={ENORMOUS}", "page=99999999999", "per_page=101",
                                   "per_page=\u0661", "page=1e3"])
def test_odd_api_list_parameters_are_refused(client, api, query):
    response = client.get(f"/api/letters?{query}", headers=api)
    assert response.status_code == 400 and response.is_json
    assert "must be a whole number" in response.json["error"]


def test_an_enormous_json_number_is_400_for_a_stranger_and_changes_nothing(
        client, sent, execution_state):
    token = sent["signers"][0]["token"]
    before = execution_state(sent["letter_id"])
    body = ('{"consent": true, "signature": {"type": "typed", "text": "Eliot Protsch"}, '
            f'"n": {ENORMOUS}}}')
    response = client.post(f"/api/sign/{token}", data=body,
                           content_type="application/json")
    assert response.status_code == 400 and response.is_json
    assert "at most 30" in response.json["error"]
    assert execution_state(sent["letter_id"]) == before


@pytest.mark.parametrize("field, value, message", [
    ("consulting_months", int("9" * 30), "must be at most 120"),
    ("consulting_months", "9" * 5000, "must be a whole number of at most 30 digits"),
    ("consulting_months", "\u0661\u0662", "must be a whole number"),
    ("option_shares", "\u00b2", "must be a whole number"),
    ("hourly_rate", "\u0665\u0660\u0660", "must be an amount such as 500 or 1250.50"),
])
def test_terms_with_odd_digits_are_invalid_fields(app, client, api, reference_terms, field,
                                                  value, message):
    response = client.post("/api/letters", headers=api, json={
        "template": "separation_letter", "terms": {**reference_terms, field: value}})
    assert response.status_code == 422
    assert response.json["errors"] == {field: message}
    assert letters(app) == 0


def test_a_link_lifetime_in_odd_digits_is_refused_on_the_page(staff, letter_id,
                                                              execution_state):
    page = staff.get(f"/letters/{letter_id}")
    (form,) = lxml_html.fromstring(page.text).xpath("//form[contains(@class, 'send-form')]")
    before = execution_state(letter_id)
    for days in ("\u00b2", "9" * 5000):
        response = staff.post(f"/letters/{letter_id}/envelope",
                              data={**dict(form.form_values()), "link_days": days})
        assert response.status_code == 422
        assert "whole number of days" in response.text
    assert execution_state(letter_id) == before


def _hidden(token: str) -> str:
    return f"/sign/<hidden:{hashlib.sha256(token.encode()).hexdigest()[:8]}>"


def test_a_crash_on_a_signing_page_logs_no_token(client, sent, caplog, monkeypatch):
    token = sent["signers"][0]["token"]

    def broken_previews():
        raise RuntimeError(f"pictures of /sign/{token}/pages/1.png are unavailable")

    monkeypatch.setattr("web.signing.get_previews", broken_previews)
    with caplog.at_level(logging.INFO):
        response = client.get(f"/sign/{token}")
    assert response.status_code == 500 and token not in response.text
    assert "Exception on " + _hidden(token) + " [GET]" in caplog.text
    assert "RuntimeError: pictures of " + _hidden(token) + "/pages/1.png" in caplog.text
    assert token not in caplog.text


def test_access_and_server_logs_name_no_token(app, sent, caplog):
    token = sent["signers"][1]["token"]
    with caplog.at_level(logging.INFO), LiveServer(app) as server:
        with urllib.request.urlopen(f"{server.url}/sign/{token}") as answer:
            assert answer.status == 200
        logging.getLogger("waitress").error("Exception while serving /api/sign/%s", token)
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any(f'"GET {_hidden(token)} HTTP/1.1" 200' in line for line in access), access
    assert f"Exception while serving /api{_hidden(token)}" in caplog.text
    assert token not in caplog.text
