"""What changed between versions, the redline downloads, and the review before sending, on the
letter page and in the API."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from lxml import etree
from lxml import html as lxml_html
from sqlalchemy import select
from support import pdftotext

from web.database import get_db
from web.testing import csrf_token
from workflow.models import Event

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def marks(docx: bytes) -> tuple[str, str]:
    with zipfile.ZipFile(io.BytesIO(docx)) as archive:
        root = etree.fromstring(archive.read("word/document.xml"))
    deleted = "".join(t.text or "" for t in root.iter(W + "delText"))
    inserted = "".join(t.text or "" for i in root.iter(W + "ins") for t in i.iter(W + "t"))
    return deleted, inserted


@pytest.fixture()
def revised(client, api, make_letter, generate_pending, reference_terms) -> int:
    """A letter in two versions: the hourly rate raised and a cancelled grant added."""
    letter_id = make_letter(reference_terms)
    response = client.put(f"/api/letters/{letter_id}/terms", headers=api, json={"terms": {
        **reference_terms, "hourly_rate": "600",
        "cancelled_option_grant_dates": ["2006-06-12", "2006-06-22", "2006-07-01"]}})
    assert response.status_code == 200, response.text
    generate_pending()
    return letter_id


def test_a_version_names_the_terms_that_changed_since_the_one_before(client, api, revised):
    second = client.get(f"/api/letters/{revised}/versions/2", headers=api)
    assert second.status_code == 200
    assert second.json["changed_terms"] == {
        "hourly_rate": {"from": "500", "to": "600"},
        "cancelled_option_grant_dates": {"from": ["2006-06-12", "2006-06-22"],
                                         "to": ["2006-06-12", "2006-06-22", "2006-07-01"]}}
    assert second.json["terms"]["hourly_rate"] == "600"
    assert second.json["redline"]["docx"].endswith(
        f"/api/letters/{revised}/redline.docx?from=1&to=2")
    first = client.get(f"/api/letters/{revised}/versions/1", headers=api)
    assert first.json["changed_terms"] == {} and first.json["redline"] is None
    missing = client.get(f"/api/letters/{revised}/versions/3", headers=api)
    assert missing.status_code == 404 and "has no version 3" in missing.json["error"]


def test_the_redline_docx_marks_the_changed_words(client, api, revised):
    response = client.get(f"/api/letters/{revised}/redline.docx", headers=api)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert "-v1-to-v2-redline.docx" in response.headers["Content-Disposition"]
    assert marks(response.data) == ("$500 and", "$600, and July 1, 2006")
    explicit = client.get(f"/api/letters/{revised}/redline.docx?from=1&to=2", headers=api)
    assert explicit.data == response.data
    backwards = client.get(f"/api/letters/{revised}/redline.docx?from=2&to=1", headers=api)
    assert marks(backwards.data) == ("$600, and July 1, 2006", "$500 and")


@pytest.mark.parametrize("query, status, words", [
    ("from=x", 400, "from must be a whole number"),
    ("from=1&to=1", 400, "from and to are both version 1"),
    ("from=2", 400, "from is version 2, the newest"),
    ("from=7&to=2", 404, "from: letter"),
    ("to=9", 404, "to: letter"),
    ("to=0", 400, "to must be a whole number from 1"),
])
def test_bad_versions_are_refused_naming_the_parameter(client, api, staff, revised, query,
                                                      status, words):
    answer = client.get(f"/api/letters/{revised}/redline.docx?{query}", headers=api)
    assert answer.status_code == status
    assert words in answer.json["error"]
    page = staff.get(f"/letters/{revised}/redline.pdf?{query}")
    assert page.status_code == status and words in page.text


def test_a_letter_of_one_version_has_nothing_to_compare(client, api, make_letter,
                                                        reference_terms):
    letter_id = make_letter(reference_terms, generate=False)
    answer = client.get(f"/api/letters/{letter_id}/redline.docx", headers=api)
    assert answer.status_code == 404
    assert answer.json["error"].startswith("from: version 1 is the first version")


def test_the_redline_pdf_shows_both_texts(staff, client, api, revised):
    for response in (staff.get(f"/letters/{revised}/redline.pdf?from=1&to=2"),
                     client.get(f"/api/letters/{revised}/redline.pdf", headers=api)):
        assert response.status_code == 200
        assert response.mimetype == "application/pdf"
        words = pdftotext(response.data)
        assert "rate of $500$600 per hour" in words
        assert "June 12, 2006 and, June 22, 2006 and July 1, 2006 are hereby" in words


def test_the_letter_page_says_what_changed(staff, revised):
    page = staff.get(f"/letters/{revised}")
    tree = lxml_html.fromstring(page.text)
    [section] = tree.xpath('//section[@id="what-changed"]')
    assert "version 1 to version 2" in section.findtext("h2/span")
    rows = {row.get("data-term"): " ".join(cell.text_content() for cell in row).split()
            for row in section.xpath('.//tr[@data-term]')}
    rows = {key: " ".join(words) for key, words in rows.items()}
    assert rows == {
        "hourly_rate": "Hourly rate (USD) $500 → $600",
        "cancelled_option_grant_dates": "Cancelled option grants June 12, 2006 and June 22, 2006 "
                                        "→ June 12, 2006, June 22, 2006 and July 1, 2006"}
    sentences = section.xpath('.//li[@class="changed-sentence"]')
    assert len(sentences) == 2
    rate = lxml_html.tostring(sentences[0], encoding="unicode")
    assert "compensate you at a rate of <del>$500</del><ins>$600</ins> per hour." in rate
    grants = sentences[1]
    assert [d.text for d in grants.iter("del")] == [" and"]
    assert [i.text for i in grants.iter("ins")] == [",", " and July 1, 2006"]
    links = {a.text_content().strip(): a.get("href") for a in section.xpath(".//a")}
    assert links["Redline .docx of version 1 to version 2"] == \
        f"/letters/{revised}/redline.docx?from=1&to=2"
    download = staff.get(links["Redline .docx of version 1 to version 2"])
    assert marks(download.data) == ("$500 and", "$600, and July 1, 2006")
    # The first version has nothing before it.
    first = staff.get(f"/letters/{revised}?version=1")
    assert 'id="what-changed"' not in first.text


def review_events(app, letter_id: int) -> list[dict]:
    with app.app_context(), get_db().transaction() as session:
        return [e.detail for e in session.scalars(select(Event).where(
            Event.letter_id == letter_id, Event.type == "downloaded").order_by(Event.sequence))]


def test_the_send_form_lists_the_review_and_a_review_download_clears_not_reviewed(
        app, staff, make_letter, reference_terms):
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    tree = lxml_html.fromstring(page.text)
    [form] = tree.xpath('//form[@class="send-form"]')
    items = {li.get("data-code") for li in form.xpath('.//li[@data-code]')}
    assert {"not_reviewed", "date_far", "derived", "party"} <= items
    assert "None of them stops the letter from being sent." in form.text_content()
    [button] = form.xpath('.//button[@formaction]')
    assert button.get("formaction") == f"/letters/{letter_id}/versions/1/review.pdf"
    # The button posts the form's own token to the review download.
    pdf = staff.post(button.get("formaction"), data={"csrf_token": csrf_token(page.text)})
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert review_events(app, letter_id)[-1] == {
        "document": pdf.headers["Content-Disposition"].split("filename=")[1].strip('"'),
        "version": 1, "kind": "letter_pdf", "for": "review"}
    after = lxml_html.fromstring(staff.get(f"/letters/{letter_id}").text)
    assert not after.xpath('//li[@data-code="not_reviewed"]')
    assert staff.get(f"/letters/{letter_id}/versions/1/review.pdf").status_code == 405


def test_the_review_panel_shows_before_the_pdf_is_ready(staff, make_letter, reference_terms):
    letter_id = make_letter(reference_terms, generate=False)
    tree = lxml_html.fromstring(staff.get(f"/letters/{letter_id}").text)
    [panel] = tree.xpath('//section[@id="review"]')
    assert panel.xpath('.//li[@data-code="not_reviewed"]//form[@method="post"]')
    assert not tree.xpath('//form[@class="send-form"]')


def test_the_review_api_and_the_send_answer_carry_the_warnings(client, api, staff, make_letter,
                                                               reference_terms, send_letter):
    letter_id = make_letter(reference_terms)
    review = client.get(f"/api/letters/{letter_id}/review", headers=api)
    assert review.status_code == 200
    assert review.json["version"] == 1
    warnings = review.json["warnings"]
    assert all(set(w) == {"code", "field", "message"} for w in warnings)
    assert warnings[0] == {"code": "not_reviewed", "field": None, "message":
                           "Version 1 is not yet reviewed: no one on staff has downloaded or "
                           "viewed its PDF."}
    assert {"code": "date_far", "field": "letter_date"}.items() <= next(
        w for w in warnings if w["field"] == "letter_date").items()
    downloaded = client.post(f"/api/letters/{letter_id}/versions/1/review.pdf", headers=api)
    assert downloaded.status_code == 200 and downloaded.data.startswith(b"%PDF")
    answer = send_letter(letter_id, signers=[
        {"role": "company", "name": "Eliot Protsch", "email": "eliot@capstone.test"},
        {"role": "executive", "name": "John R. Tucker"}])
    codes = [w["code"] for w in answer["warnings"]]
    assert "not_reviewed" not in codes and "party" in codes
    # The parties are reviewed as this request sends to them, not as the terms name them.
    assert [w["message"] for w in answer["warnings"] if w["code"] == "party"] == [
        "The company, by its chair: Eliot Protsch (email eliot@capstone.test, from the send "
        "form).",
        "The executive: John R. Tucker (no email on the send form: hand the link over "
        "yourself)."]
    # Once out for signature, the letter page no longer shows the review; the API still says.
    assert "data-review" not in staff.get(f"/letters/{letter_id}").text
    assert client.get(f"/api/letters/{letter_id}/review", headers=api).json["warnings"]


def test_terms_changed_since_a_signer_saw_the_letter_are_named(
        client, api, staff, sent, reference_terms, generate_pending):
    letter_id = sent["letter_id"]
    executive = next(s for s in sent["signers"] if s["role"] == "executive")
    assert client.get(f"/sign/{executive['token']}").status_code == 200
    voided = client.post(f"/api/letters/{letter_id}/envelope/void", headers=api,
                         json={"reason": "the rate is wrong"})
    assert voided.status_code == 200, voided.text
    changed = client.put(f"/api/letters/{letter_id}/terms", headers=api,
                         json={"terms": {**reference_terms, "hourly_rate": "650"}})
    assert changed.status_code == 200
    generate_pending()
    warnings = client.get(f"/api/letters/{letter_id}/review", headers=api).json["warnings"]
    [change] = [w for w in warnings if w["code"] == "changed_since_seen"]
    assert change["field"] == "hourly_rate"
    assert re.fullmatch(r"Hourly rate \(USD\) changed since version 1, the last version anyone "
                        r"saw \(John R\. Tucker, on \w+ \d+, \d{4}\): \$500 → \$650\.",
                        change["message"]), change["message"]
    page = lxml_html.fromstring(staff.get(f"/letters/{letter_id}").text)
    assert page.xpath('//form[@class="send-form"]//li[@data-code="changed_since_seen"]'
                      '[@data-field="hourly_rate"]')
