"""Execution in counterparts through the pages: staff send, follow, void, upload paper copies
and download from the letter page; signers read, consent, sign or decline on theirs (without
JavaScript, as the test client is); anyone verifies an executed PDF.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from zoneinfo import ZoneInfo

import pytest
from lxml import html as lxml_html
from scans import scan_of
from sqlalchemy import select
from support import pdftotext

from web.database import get_db
from web.testing import csrf_token
from workflow.letters import document_bytes
from workflow.models import Counterpart, Document, utcnow
from workflow.render import ordinal_day


def send_form(page_html: str, **changes: str) -> dict[str, str]:
    """The values of the letter page's "Send for signature" form, as a browser would post."""
    tree = lxml_html.fromstring(page_html)
    (form,) = tree.xpath("//form[contains(@class, 'send-form')]")
    values = {name: value for name, value in form.form_values()}
    values.update(changes)
    return values


def links_on(page_html: str) -> list[str]:
    return re.findall(r'value="(http://localhost/sign/[^"]+)"', page_html)


def path_of(link: str) -> str:
    return link.removeprefix("http://localhost")


@pytest.fixture()
def signer(app):
    """A browser of a signer: no account, its own cookies."""
    return app.test_client()


def open_and_sign(signer, link: str, **fields: str):
    page = signer.get(path_of(link))
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_token(page.text), "consent": "yes", "signature_type": "typed",
            "signature_text": "Signed by me", **fields}
    return page, signer.post(path_of(link), data=data)


# --- staff: sending ----------------------------------------------------------------------------

def test_the_letter_page_sends_with_the_signers_of_the_terms(staff, make_letter,
                                                              reference_terms):
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    assert page.status_code == 200
    values = send_form(page.text)
    assert values["signers-0-role"] == "company"
    assert values["signers-0-name"] == "Eliot Protsch"
    assert values["signers-1-role"] == "executive"
    assert values["signers-1-name"] == "John R. Tucker"
    assert values["link_days"] == "30" and "signing_order" not in values

    response = staff.post(f"/letters/{letter_id}/envelope", data=send_form(
        page.text, **{"signers-0-email": "eliot@capstone.test"}))
    assert response.status_code == 303
    assert response.headers["Location"] == f"/letters/{letter_id}#signatures"

    shown = staff.get(response.headers["Location"])
    links = links_on(shown.text)
    assert len(links) == 2 and links[0] != links[1]
    assert "Copy the signing links now." in shown.text
    assert "No email was sent: outgoing mail is not set up" in shown.text
    assert "0 of 2 signed" in shown.text
    assert "Out for signature" in shown.text
    assert "send-form" not in shown.text  # sent: no second envelope
    # The links are shown once: only their fingerprints are kept.
    again = staff.get(f"/letters/{letter_id}")
    assert links_on(again.text) == []
    assert "Copy the signing links now." not in again.text
    for link in links:
        assert link.rsplit("/", 1)[1] not in again.text
    table = staff.get("/letters")
    assert "0 of 2 signed" in table.text
    # No mail server took an invitation: the links are ready to be handed over, not sent.
    assert "2 links to hand over" in table.text
    assert again.text.count(">Link ready</span>") == 2
    assert again.text.count("link ready to be handed over: not emailed") == 2
    assert "the link is ready to be handed over (not emailed)" in again.text  # the timeline


def test_send_form_mistakes_are_shown_beside_their_field(staff, make_letter, reference_terms,
                                                         execution_state):
    letter_id = make_letter(reference_terms)
    page = staff.get(f"/letters/{letter_id}")
    before = execution_state(letter_id)
    response = staff.post(f"/letters/{letter_id}/envelope", data=send_form(
        page.text, **{"signers-0-email": "eliot at capstone", "signers-1-name": "Jon Tucker"}))
    assert response.status_code == 422
    tree = lxml_html.fromstring(response.text)
    error = tree.xpath("//p[@id='signers-0-email-error']")[0].text_content()
    assert "'eliot at capstone' is not an email address" in error
    assert tree.xpath("//input[@id='signers-0-email']")[0].get("aria-invalid") == "true"
    assert tree.xpath("//input[@id='signers-0-email']")[0].get("value") == "eliot at capstone"
    assert execution_state(letter_id) == before

    twice = staff.post(f"/letters/{letter_id}/envelope", data=send_form(
        page.text, **{"signers-1-role": "company"}))
    assert twice.status_code == 422
    assert "'company' is already signer 1; each party signs once" in lxml_html.fromstring(
        twice.text).xpath("//p[@id='signers-1-role-error']")[0].text_content()
    # The roles offered are the template's parties, by their labels.
    options = lxml_html.fromstring(twice.text).xpath("//select[@id='signers-1-role']/option")
    assert [(o.get("value"), o.text_content()) for o in options] == [
        ("company", "The company, by its chair"), ("executive", "The executive")]
    days = staff.post(f"/letters/{letter_id}/envelope",
                      data=send_form(page.text, link_days="400"))
    assert days.status_code == 422
    assert "between 1 and 365" in lxml_html.fromstring(days.text).xpath(
        "//p[@id='link_days-error']")[0].text_content()
    assert execution_state(letter_id) == before


def test_only_a_generated_current_version_offers_sending(staff, make_letter, reference_terms):
    draft = make_letter(reference_terms, generate=False)
    assert "send-form" not in staff.get(f"/letters/{draft}").text


# --- signers -----------------------------------------------------------------------------------

def test_signers_sign_without_javascript_and_see_the_outcome(app, staff, signer, sent,
                                                              execution_state):
    letter_id = sent["letter_id"]
    company, executive = (s["link"] for s in sent["signers"])

    page = signer.get(path_of(company))
    assert page.status_code == 200
    tree = lxml_html.fromstring(page.text)
    pictures = tree.xpath("//ol[contains(@class, 'pages')]//img/@src")
    assert len(pictures) == 3
    picture = signer.get(pictures[0])
    assert picture.status_code == 200 and picture.mimetype == "image/png"
    assert tree.xpath("//input[@name='consent']/@required")
    assert tree.xpath("//input[@id='signature-text']/@value") == ["Eliot Protsch"]
    assert "electronic records and signatures" in page.text
    assert "paper copy" in page.text and "withdraw this consent" in page.text
    assert tree.xpath("//form[contains(@action, '/decline')]//textarea[@name='reason']")
    assert "Sign in" not in page.text  # signers have no account
    letter = signer.get(path_of(company) + "/letter.pdf")
    assert letter.status_code == 200 and letter.data.startswith(b"%PDF-")

    # No consent: nothing is signed, the page says why and keeps the signature typed.
    before = execution_state(letter_id)
    refused = signer.post(path_of(company), data={
        "csrf_token": csrf_token(page.text), "signature_type": "typed",
        "signature_text": "E. Protsch"})
    assert refused.status_code == 400
    assert "consent: agree to sign electronically" in refused.text
    assert 'value="E. Protsch"' in refused.text
    assert execution_state(letter_id) == before

    _, signed = open_and_sign(signer, company, signature_text="Eliot Protsch")
    assert signed.status_code == 303
    done = signer.get(signed.headers["Location"])
    assert "You signed this letter" in done.text
    assert "Still to sign: John R. Tucker" in done.text
    assert "1 of 2 signed" in staff.get(f"/letters/{letter_id}").text

    other = app.test_client()
    _, last = open_and_sign(other, executive, signature_text="John R. Tucker")
    done = other.get(last.headers["Location"])
    assert "The letter is fully executed." in done.text
    assert "the sender can send you a copy" not in done.text.lower()
    # The used link reads: what was signed, and the copies; it signs no more.
    before = execution_state(letter_id)
    used = other.get(path_of(executive))
    assert used.status_code == 200
    assert "You signed this letter" in used.text and "Sign the letter" not in used.text
    again = other.post(path_of(executive), data={
        "csrf_token": csrf_token(other.get("/verify").text), "consent": "yes",
        "signature_type": "typed",
        "signature_text": "John R. Tucker"})
    assert again.status_code == 410
    assert "This counterpart is already signed" in again.text
    assert execution_state(letter_id) == before


def test_decline_needs_a_reason_and_then_stops_the_letter(staff, signer, sent, execution_state):
    letter_id = sent["letter_id"]
    link = sent["signers"][1]["link"]
    page = signer.get(path_of(link))
    before = execution_state(letter_id)
    empty = signer.post(path_of(link) + "/decline",
                        data={"csrf_token": csrf_token(page.text), "reason": "  "})
    assert empty.status_code == 400
    assert "reason is required" in empty.text
    assert "<details open>" in empty.text
    assert execution_state(letter_id) == before
    declined = signer.post(path_of(link) + "/decline",
                           data={"csrf_token": csrf_token(page.text),
                                 "reason": "The consulting rate is wrong"})
    assert declined.status_code == 303
    assert "You declined to sign" in signer.get(declined.headers["Location"]).text
    letter_page = staff.get(f"/letters/{letter_id}")
    assert "John R. Tucker declined to sign" in letter_page.text
    assert "The consulting rate is wrong" in letter_page.text
    assert "Void this envelope" in letter_page.text


def test_a_later_signer_waits_for_the_earlier_ones(signer, make_letter, send_letter,
                                                   reference_terms, execution_state):
    letter_id = make_letter(reference_terms)
    answer = send_letter(letter_id, signing_order=True)
    before = execution_state(letter_id)
    page = signer.get(path_of(answer["signers"][1]["link"]))
    assert page.status_code == 200
    assert "Waiting for earlier signers" in page.text
    assert "<li>Eliot Protsch</li>" in page.text
    assert "Sign the letter" not in page.text
    assert execution_state(letter_id) == before


def test_the_signing_page_fits_its_rules(signer, sent):
    page = signer.get(path_of(sent["signers"][0]["link"]))
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and " style=" not in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "same-origin"  # the token stays on this site
    with signer.get("/fonts/signature.ttf") as font:
        assert font.status_code == 200 and font.mimetype == "font/ttf"
        assert font.data[:4] == b"\x00\x01\x00\x00"  # a TrueType font
    with signer.get("/static/css/app.css") as css:
        assert 'url("../../fonts/signature.ttf")' in css.text


def test_the_signing_form_sends_the_signers_time_zone(app, signer, sent, execution_state):
    letter_id = sent["letter_id"]
    company, executive = (s["link"] for s in sent["signers"])
    page = signer.get(path_of(executive))
    tree = lxml_html.fromstring(page.text)
    (zone,) = tree.xpath("//form[@data-sign-form]//input[@name='time_zone']")
    assert zone.get("type") == "hidden" and zone.get("value") == ""  # sign.js fills it in
    (ratio,) = tree.xpath("//form[@data-sign-form]//input[@name='signature_pixel_ratio']")
    assert ratio.get("type") == "hidden"

    before = execution_state(letter_id)
    _, refused = open_and_sign(signer, executive, time_zone="Nowhere/Special")
    assert refused.status_code == 400
    assert "time_zone: Nowhere/Special is not a time zone" in refused.text
    assert execution_state(letter_id) == before

    _, signed = open_and_sign(signer, executive, signature_text="John R. Tucker",
                              time_zone="Asia/Kolkata")
    assert signed.status_code == 303
    _, no_script = open_and_sign(app.test_client(), company)  # no JavaScript: no zone
    assert no_script.status_code == 303
    with app.app_context(), get_db().transaction() as session:
        rows = session.scalars(select(Counterpart).order_by(Counterpart.position)).all()
        assert [c.time_zone for c in rows] == ["UTC", "Asia/Kolkata"]
        executive_row = rows[1]
        on = executive_row.signed_on
        assert on == executive_row.signed_at.astimezone(ZoneInfo("Asia/Kolkata")).date()
        copy = document_bytes(session, session.get(Document, executive_row.signed_document_id))
    text = pdftotext(copy)
    assert f"this {ordinal_day(on.day)} day of {on:%B}, {on.year}" in text
    assert f"Signed electronically on {on:%B} {on.day}, {on.year}" in text


# --- staff: follow, paper, void, downloads ------------------------------------------------

def today() -> str:
    return utcnow().date().isoformat()


def post_scan(staff, page_html: str, letter_id: int, counterpart_id: int, data: bytes,
              name: str = "scan.pdf", signed_on: str | None = None):
    return staff.post(f"/letters/{letter_id}/counterparts/{counterpart_id}/upload",
                      data={"csrf_token": csrf_token(page_html),
                            "signed_on": today() if signed_on is None else signed_on,
                            "file": (io.BytesIO(data), name)},
                      content_type="multipart/form-data")


def review_form(page_html: str, **changes: str) -> dict[str, str]:
    """The values of the review page's "Count this as signed" form, as a browser posts them."""
    tree = lxml_html.fromstring(page_html)
    (form,) = tree.xpath("//form[contains(@class, 'paper-review__form')]")
    values = {name: value for name, value in form.form_values()}
    values.update(changes)
    return values


def blank_pdf(staff, letter_id: int, counterpart_id: int) -> bytes:
    page = staff.get(f"/letters/{letter_id}")
    blank = staff.post(f"/letters/{letter_id}/counterparts/{counterpart_id}/blank.pdf",
                       data={"csrf_token": csrf_token(page.text)})
    assert blank.status_code == 200
    return blank.data


def test_paper_upload_from_the_letter_page_then_executed_downloads(app, staff, signer, sent,
                                                                   execution_state):
    letter_id = sent["letter_id"]
    company, executive = sent["signers"]
    cid = executive["counterpart_id"]
    blank = blank_pdf(staff, letter_id, cid)
    page = staff.get(f"/letters/{letter_id}")
    upload_url = f"/letters/{letter_id}/counterparts/{cid}/upload"
    assert f'action="{upload_url}"' in page.text

    # A refusal is shown by the executive's upload control, and the page keeps the date.
    before = execution_state(letter_id)
    refused = post_scan(staff, page.text, letter_id, cid, b"not a pdf", "scan.pdf")
    assert refused.status_code == 422
    tree = lxml_html.fromstring(refused.text)
    (message,) = tree.xpath(f"//form[@id='upload-{cid}']//p[@id='upload-error-{cid}']")
    assert message.text_content().startswith("The scan was not accepted: scan.pdf is not a "
                                             "PDF file")
    assert message.get("role") == "alert" and message.get("data-focus-on-load") is not None
    (date,) = tree.xpath(f"//input[@id='signed-on-{cid}']")
    assert date.get("value") == today()
    assert not tree.xpath(f"//p[@id='upload-error-{company['counterpart_id']}']")
    undated = post_scan(staff, page.text, letter_id, cid, blank, "dateless.pdf", signed_on="")
    assert undated.status_code == 422 and "signed_on: give the date" in undated.text
    assert execution_state(letter_id) == before

    # A scan is previewed before it counts: its signature page beside the blank's.
    scan = scan_of(blank, signed_by=["executive"], angle=-2.4, paper="a4")
    staged = post_scan(staff, page.text, letter_id, cid, scan, "tucker-signed.pdf")
    assert staged.status_code == 303 and staged.headers["Location"].endswith(upload_url)
    review = staff.get(upload_url)
    assert review.status_code == 200
    assert "A signature was found on John R. Tucker's signature line." in review.text
    tree = lxml_html.fromstring(review.text)
    for selector in ("data-scan-preview", "data-blank-preview"):
        (image,) = tree.xpath(f"//img[@{selector}]")
        picture = staff.get(image.get("src"))
        assert picture.status_code == 200 and picture.mimetype == "image/png"
        assert picture.data.startswith(b"\x89PNG") and len(picture.data) > 5000
        assert "private" in picture.headers["Cache-Control"]
    waiting = staff.get(f"/letters/{letter_id}").text
    assert "0 of 2 signed" in waiting and "waiting for review" in waiting
    assert "Scan tucker-signed.pdf, waiting for review" in waiting  # the timeline

    confirmed = staff.post(f"{upload_url}/confirm", data=review_form(review.text))
    assert confirmed.status_code == 303
    shown = staff.get(confirmed.headers["Location"])
    assert "John R. Tucker&#39;s counterpart is signed on paper." in shown.text
    assert "1 of 2 signed" in shown.text
    assert "Paper copy uploaded" in shown.text  # the timeline
    assert "recorded by counsel@example.com" in shown.text
    assert "Undo the upload" in shown.text
    assert staff.get(upload_url).status_code == 303  # nothing waits for review now

    open_and_sign(signer, company["link"])
    executed_page = staff.get(f"/letters/{letter_id}")
    assert "Fully executed" in executed_page.text
    assert "2 of 2 signed" in executed_page.text
    assert "On paper, recorded by counsel@example.com" in executed_page.text
    assert "Typed signature" in executed_page.text
    assert "Undo the upload" not in executed_page.text
    assert "send-form" not in executed_page.text and "Void this envelope" not in \
        executed_page.text
    assert "2 of 2 signed" in staff.get("/letters").text

    # Recorded downloads are the page's POST buttons.
    token = csrf_token(executed_page.text)
    assert f'action="/letters/{letter_id}/executed.pdf"' in executed_page.text
    executed = staff.post(f"/letters/{letter_id}/executed.pdf", data={"csrf_token": token})
    assert executed.status_code == 200 and executed.data.startswith(b"%PDF-")
    assert executed.headers["Content-Disposition"] == \
        "attachment; filename=john-r-tucker-separation-letter-executed.pdf"
    signed = staff.post(f"/letters/{letter_id}/counterparts/{cid}/signed.pdf",
                        data={"csrf_token": token})
    assert signed.data == scan
    archive = staff.post(f"/letters/{letter_id}/counterparts.zip", data={"csrf_token": token})
    with zipfile.ZipFile(io.BytesIO(archive.data)) as opened:
        assert opened.namelist() == ["john-r-tucker-separation-letter-executed.pdf",
                                     "counterpart-1-eliot-protsch-signed.pdf",
                                     "counterpart-2-john-r-tucker-scan.pdf", "audit.json"]
        assert opened.read("counterpart-2-john-r-tucker-scan.pdf") == scan
        record = json.loads(opened.read("audit.json"))
    assert record["chain"]["ok"]
    audit = staff.get(f"/letters/{letter_id}/audit.json")
    assert audit.headers["Content-Disposition"] == \
        "attachment; filename=john-r-tucker-separation-letter-audit.json"
    assert json.loads(audit.data)["envelope"]["executed_pdf_sha256"]
    timeline = staff.get(f"/letters/{letter_id}").text
    # The blank printed to sign, the executed PDF, the signed counterpart, the zip.
    assert timeline.count(">Downloaded<") == 4


def test_a_scan_without_a_signature_needs_a_second_explicit_click(staff, sent):
    letter_id = sent["letter_id"]
    cid = sent["signers"][1]["counterpart_id"]
    blank = blank_pdf(staff, letter_id, cid)
    page = staff.get(f"/letters/{letter_id}")
    chair_only = scan_of(blank, signed_by=["company"], angle=1.2, paper="letter")
    assert post_scan(staff, page.text, letter_id, cid, chair_only, "chair.pdf").status_code \
        == 303
    url = f"/letters/{letter_id}/counterparts/{cid}/upload"
    review = staff.get(url)
    assert "No signature was found on John R. Tucker's signature line" in review.text
    assert "Accept without a signature found" not in review.text
    first = staff.post(f"{url}/confirm", data=review_form(review.text))
    assert first.status_code == 422
    assert "No signature was found on John R. Tucker&#39;s signature line in chair.pdf" in \
        first.text
    tree = lxml_html.fromstring(first.text)
    (message,) = tree.xpath("//p[@id='confirm-error']")
    assert message.get("data-focus-on-load") is not None
    (accept,) = tree.xpath("//button[@name='accept_without_ink']")
    assert accept.text_content() == "Accept without a signature found"
    assert "0 of 2 signed" in staff.get(f"/letters/{letter_id}").text
    second = staff.post(f"{url}/confirm", data=review_form(first.text,
                                                           accept_without_ink="yes"))
    assert second.status_code == 303
    shown = staff.get(second.headers["Location"]).text
    assert "1 of 2 signed" in shown
    assert "accepted without a signature found</strong> by counsel@example.com" in shown
    assert "On paper, recorded by counsel@example.com, accepted without a signature found" in \
        shown  # the timeline


def test_a_scan_is_discarded_or_undone_from_the_page(staff, sent, execution_state):
    letter_id = sent["letter_id"]
    cid = sent["signers"][1]["counterpart_id"]
    blank = blank_pdf(staff, letter_id, cid)
    page = staff.get(f"/letters/{letter_id}")
    scan = scan_of(blank, signed_by=["executive"])
    url = f"/letters/{letter_id}/counterparts/{cid}/upload"
    post_scan(staff, page.text, letter_id, cid, scan, "first.pdf")
    review = staff.get(url)
    discarded = staff.post(f"{url}/discard", data={
        "csrf_token": csrf_token(review.text),
        "document_id": review_form(review.text)["document_id"]})
    shown = staff.get(discarded.headers["Location"]).text
    assert "The scan of John R. Tucker&#39;s counterpart was discarded; it did not count." in \
        shown
    assert "Paper copy discarded" in shown and "Review the scan" not in shown

    post_scan(staff, page.text, letter_id, cid, scan, "second.pdf")
    staff.post(f"{url}/confirm", data=review_form(staff.get(url).text))
    signed_page = staff.get(f"/letters/{letter_id}").text
    assert "1 of 2 signed" in signed_page
    undone = staff.post(f"{url}/undo", data={"csrf_token": csrf_token(signed_page)})
    shown = staff.get(undone.headers["Location"]).text
    assert ("The paper upload of John R. Tucker&#39;s counterpart was undone; it is open to "
            "sign again.") in shown
    assert "0 of 2 signed" in shown and "Paper upload undone" in shown
    assert "John R. Tucker: the scan second.pdf no longer counts" in shown
    state = execution_state(letter_id)
    assert state["letter"] == "out_for_signature"
    assert [status for _, status, *_ in state["counterparts"]] == ["ready", "ready"]


def test_the_signing_order_is_overridden_on_the_page_with_a_reason(staff, make_letter,
                                                                   send_letter,
                                                                   reference_terms):
    letter_id = make_letter(reference_terms)
    cid = send_letter(letter_id, signing_order=True)["signers"][1]["counterpart_id"]
    blank = blank_pdf(staff, letter_id, cid)
    page = staff.get(f"/letters/{letter_id}")
    post_scan(staff, page.text, letter_id, cid, scan_of(blank, signed_by=["executive"]))
    url = f"/letters/{letter_id}/counterparts/{cid}/upload"
    review = staff.get(url)
    assert "Eliot Protsch must sign before John R. Tucker" in review.text
    refused = staff.post(f"{url}/confirm", data=review_form(review.text))
    assert refused.status_code == 409 and "override the order and give a reason" in \
        refused.text
    counted = staff.post(f"{url}/confirm", data=review_form(
        refused.text, override_order="yes", reason="The chair signs next week"))
    assert counted.status_code == 303
    shown = staff.get(counted.headers["Location"]).text
    assert "signing order overridden by counsel@example.com: “The chair signs next week”" in \
        shown


def test_void_from_the_letter_page(staff, signer, sent, execution_state):
    letter_id = sent["letter_id"]
    page = staff.get(f"/letters/{letter_id}")
    before = execution_state(letter_id)
    empty = staff.post(f"/letters/{letter_id}/envelope/void",
                       data={"csrf_token": csrf_token(page.text), "reason": ""})
    assert "The envelope was not voided: reason is required." in \
        staff.get(empty.headers["Location"]).text
    assert execution_state(letter_id) == before
    voided = staff.post(f"/letters/{letter_id}/envelope/void",
                        data={"csrf_token": csrf_token(page.text),
                              "reason": "The hourly rate changes"})
    shown = staff.get(voided.headers["Location"])
    assert "Voided: the signing links no longer work." in shown.text
    assert "The hourly rate changes" in shown.text
    assert "send-form" in shown.text  # it may be sent again
    assert "Change the terms" in shown.text
    gone = signer.get(path_of(sent["signers"][0]["link"]))
    assert gone.status_code == 410 and "This letter was withdrawn" in gone.text


def test_downloads_before_execution_are_refused(staff, sent):
    letter_id = sent["letter_id"]
    token = csrf_token(staff.get(f"/letters/{letter_id}").text)
    for url in (f"/letters/{letter_id}/executed.pdf", f"/letters/{letter_id}/counterparts.zip",
                f"/letters/{letter_id}/counterparts/{sent['signers'][0]['counterpart_id']}"
                "/signed.pdf"):
        response = staff.post(url, data={"csrf_token": token})
        assert response.status_code == 409, url
    assert staff.post(f"/letters/{letter_id}/counterparts/999999/blank.pdf",
                      data={"csrf_token": token}).status_code == 404


# --- verify ------------------------------------------------------------------------------

def test_the_verify_page_answers_in_words(app, client, api, sent):
    for signer_answer in sent["signers"]:
        client.post(f"/api/sign/{signer_answer['token']}", json={
            "consent": True, "signature": {"type": "typed", "text": "Signed"}})
    executed = client.post(f"/api/letters/{sent['letter_id']}/executed.pdf", headers=api).data
    visitor = app.test_client()
    form = visitor.get("/verify")
    assert form.status_code == 200 and 'type="file"' in form.text

    def check(data: bytes):
        return visitor.post("/verify", data={"csrf_token": csrf_token(form.text),
                                             "file": (io.BytesIO(data), "letter.pdf")},
                            content_type="multipart/form-data")

    good = check(executed)
    assert good.status_code == 200
    assert "Genuine and unchanged" in good.text
    assert "Intact, made by this system" in good.text
    assert "Eliot Protsch" in good.text and "John R. Tucker" in good.text
    assert "Sealed at" in good.text
    middle = len(executed) // 2
    changed = check(executed[:middle] + bytes([executed[middle] ^ 0x20])
                    + executed[middle + 1:])
    assert "Changed after it was sealed" in changed.text
    stranger = check(b"%PDF-1.4\nnot much of a PDF\n")
    assert "Not an executed letter of this system" in stranger.text
    empty = visitor.post("/verify", data={"csrf_token": csrf_token(form.text)},
                         content_type="multipart/form-data")
    assert empty.status_code == 400 and "Choose a PDF file to check." in empty.text
