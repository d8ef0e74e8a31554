"""The letters table, the letter page, its previews, downloads and versions, through the pages."""

from __future__ import annotations

import datetime as dt
import io
import time

import lxml.html
import pypdf
import pytest
from PIL import Image
from sqlalchemy import select, update
from support import docx_text, letter_words

from web.database import get_db
from web.testing import csrf_token, terms_form_data
from workflow.models import Document, Letter
from workflow.states import LetterStatus


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def _rows(html: str) -> list[list[str]]:
    tree = lxml.html.fromstring(html)
    return [[" ".join(cell.text_content().split()) for cell in row.xpath("./th|./td")]
            for row in tree.xpath("//table[contains(@class,'letters-table')]/tbody/tr")]


def _executives(html: str) -> list[str]:
    """The executive of each row of the letters table: its first listed term."""
    tree = lxml.html.fromstring(html)
    return [" ".join(value.text_content().split()) for value in tree.xpath(
        "//table[contains(@class,'letters-table')]/tbody/tr"
        "//li[@data-term='executive_full_name']/span[@class='listed-terms__value']")]


def _set(app, letter_id: int, **values) -> None:
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Letter).where(Letter.id == letter_id).values(**values))


def _person(reference_terms: dict, name: str, company: str) -> dict:
    return {**reference_terms, "executive_full_name": name,
            "executive_first_name": name.split()[0], "company_name": company}


# --- the letters table ---------------------------------------------------------------------

def test_empty_table_invites_a_new_letter(staff):
    page = staff.get("/letters")
    assert page.status_code == 200
    assert "No letters yet" in page.text
    assert 'href="/letters/new"' in page.text


def test_home_leads_to_the_letters(staff):
    assert staff.get("/").headers["Location"] == "/letters"


def test_table_shows_each_letter_newest_change_first(app, staff, make_letter, reference_terms):
    first = make_letter(_person(reference_terms, "Ann Older", "Acme Corp"), generate=False)
    second = make_letter(_person(reference_terms, "Bob Newer", "Beta Inc"), generate=False)
    _set(app, first, updated_at=dt.datetime(2026, 1, 2, 9, 30, tzinfo=dt.UTC))
    _set(app, second, updated_at=dt.datetime(2026, 3, 4, 17, 5, tzinfo=dt.UTC),
         status=LetterStatus.GENERATED.value)
    rows = _rows(staff.get("/letters").text)
    assert rows == [
        ["Separation letter of Bob Newer, Beta Inc",
         "Executive's full name: Bob Newer Company name: Beta Inc",
         "Executive separation and consulting letter", "1", "Generated",
         "Mar 4, 2026, 17:05 UTC"],
        ["Separation letter of Ann Older, Acme Corp",
         "Executive's full name: Ann Older Company name: Acme Corp",
         "Executive separation and consulting letter", "1", "Draft",
         "Jan 2, 2026, 09:30 UTC"],
    ]
    tree = lxml.html.fromstring(staff.get("/letters").text)
    assert tree.xpath("//tbody/tr[1]/th/a/@href") == [f"/letters/{second}"]


def test_search_by_name_and_filter_by_status(app, staff, make_letter, reference_terms):
    tucker = make_letter(reference_terms, generate=False)
    make_letter(_person(reference_terms, "Maria Ortega", "Northwind Energy"), generate=False)
    _set(app, tucker, status=LetterStatus.GENERATED.value)
    assert _executives(staff.get("/letters?q=ortega").text) == ["Maria Ortega"]
    assert _executives(staff.get("/letters?q=CAPSTONE").text) == ["John R. Tucker"]
    assert _executives(staff.get("/letters?status=generated").text) == \
        ["John R. Tucker"]
    assert _executives(staff.get("/letters?status=draft&q=maria").text) == \
        ["Maria Ortega"]
    none = staff.get("/letters?q=nobody%25_")
    assert _rows(none.text) == [] and "No letter matches" in none.text
    page = staff.get("/letters?q=ortega&status=draft")
    assert 'value="ortega"' in page.text
    assert '<option value="draft" selected>' in page.text


def test_search_ignores_accents_and_case_both_ways(staff, make_letter, reference_terms):
    make_letter(_person(reference_terms, "Zoë Dupré", "Société Générale"), generate=False)
    make_letter(_person(reference_terms, "Zoe Dupre", "Plain Ltd"), generate=False)
    make_letter(_person(reference_terms, "Søren Ærø", "Đông Á Bank"), generate=False)
    make_letter(_person(reference_terms, "Maria Ortega", "Northwind"), generate=False)

    def found(query: str) -> set[str]:
        return set(_executives(staff.get("/letters", query_string={"q": query}).text))

    assert found("zoe") == {"Zoë Dupré", "Zoe Dupre"}
    assert found("dupre") == {"Zoë Dupré", "Zoe Dupre"}
    assert found("ZOË") == {"Zoë Dupré", "Zoe Dupre"}
    assert found("societe") == {"Zoë Dupré"}
    assert found("soren aero") == {"Søren Ærø"}
    assert found("dong a") == {"Søren Ærø"}
    assert found("Đông") == {"Søren Ærø"}
    assert found("ortega") == {"Maria Ortega"}


def test_search_finds_the_signers_names(app, staff, make_letter, send_letter,
                                        reference_terms):
    tucker = make_letter(reference_terms)
    make_letter(_person(reference_terms, "Maria Ortega", "Northwind"), generate=False)
    # The chair signs for the company; her name is not in the letters table itself.
    assert _rows(staff.get("/letters?q=protsch").text) == []
    send_letter(tucker)
    assert _executives(staff.get("/letters?q=protsch").text) == ["John R. Tucker"]


def test_unknown_status_filter_is_a_400_page(staff):
    response = staff.get("/letters?status=lost")
    assert response.status_code == 400
    assert "There is no letter status" in response.text


def test_table_is_paginated(app, staff, make_letter, reference_terms):
    app.config["LETTERS_PER_PAGE"] = 2
    for index in range(5):
        make_letter(_person(reference_terms, f"Person {index}", "Acme"), generate=False)
    first = staff.get("/letters")
    assert _executives(first.text) == ["Person 4", "Person 3"]
    assert "Page 1 of 3" in first.text
    assert 'href="/letters?page=2"' in first.text
    third = staff.get("/letters?page=3")
    assert _executives(third.text) == ["Person 0"]
    assert 'rel="prev" href="/letters?page=2"' in third.text
    assert 'rel="next"' not in third.text
    filtered = staff.get("/letters?q=person&page=2")
    assert 'href="/letters?q=person&amp;page=3"' in filtered.text


# --- creating a letter through the form --------------------------------------------------------

def test_creating_a_letter_goes_to_its_page(app, staff, reference_terms):
    form = staff.get("/letters/new?template=separation_letter").text
    response = staff.post("/letters/new", data=terms_form_data(reference_terms, form))
    assert response.status_code == 302
    page = staff.get(response.headers["Location"])
    assert page.status_code == 200
    assert "Letter created." in page.text
    assert "<h1>Separation letter of John R. Tucker, Capstone Turbine Corporation</h1>" in page.text


def test_the_letter_page_shows_progress_until_the_pdf_is_ready(staff, make_letter,
                                                               reference_terms,
                                                               generate_pending):
    letter_id = make_letter(reference_terms, generate=False)
    page = staff.get(f"/letters/{letter_id}").text
    assert "Generating PDF…" in page
    tree = lxml.html.fromstring(page)
    (notice,) = tree.xpath("//*[@data-status-url]")
    assert notice.get("data-status-url") == f"/letters/{letter_id}/status"
    assert notice.get("role") == "status"
    assert tree.xpath("//a[@data-refresh]")  # works without JavaScript too
    assert tree.xpath("//script[@src='/static/js/letter.js']")
    status = staff.get(f"/letters/{letter_id}/status").json
    assert status["pending"] is True
    assert {(d["kind"], d["status"]) for d in status["documents"]} == \
        {("letter_docx", "ready"), ("letter_pdf", "pending")}

    generate_pending()
    status = staff.get(f"/letters/{letter_id}/status").json
    assert status["pending"] is False and status["status"] == "generated"
    page = staff.get(f"/letters/{letter_id}").text
    assert "Generating PDF…" not in page
    assert "data-status-url" not in page


def test_background_generation_makes_the_pdf(app_config, converter, staff, reference_terms):
    from web import create_app

    app = create_app(app_config)
    try:
        client = app.test_client()
        page = client.get("/sign-in")
        client.post("/sign-in", data={"email": "counsel@example.com",
                                      "password": "correct horse battery",
                                      "csrf_token": csrf_token(page.text)})
        form = client.get("/letters/new?template=separation_letter").text
        location = client.post("/letters/new",
                               data=terms_form_data(reference_terms, form)).headers["Location"]
        deadline = time.monotonic() + 60
        while client.get(f"{location}/status").json["pending"]:
            assert time.monotonic() < deadline, "the PDF was not generated in the background"
            time.sleep(0.05)
        assert client.get(f"{location}/status").json["status"] == "generated"
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_a_pdf_whose_job_was_lost_is_queued_again(app, make_letter, reference_terms):
    from workflow.letters import RESUME_PENDING_AFTER, resume_pending_pdfs
    from workflow.models import utcnow

    # Created without its job (as if the enqueue were lost between the commit and the queue).
    lost = make_letter(reference_terms, generate=False)
    recent = make_letter({**reference_terms, "hourly_rate": 750}, generate=False)
    long_ago = utcnow() - RESUME_PENDING_AFTER - dt.timedelta(minutes=1)
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Document).where(Document.letter_id == lost)
                        .values(created_at=long_ago))
    with app.app_context():
        assert resume_pending_pdfs.call_local() == 1  # the periodic safety net
        with get_db().transaction() as session:
            assert session.get(Letter, lost).status == "generated"
            assert session.get(Letter, recent).status == "draft"  # its job may yet come


# --- the letter page ---------------------------------------------------------------------------

@pytest.fixture()
def letter_id(make_letter, reference_terms) -> int:
    return make_letter(reference_terms)


def test_letter_page_shows_the_terms_as_the_letter_reads(staff, letter_id):
    page = staff.get(f"/letters/{letter_id}").text
    for label, value in [
        ("Letter date", "July 24, 2006"),
        ("Hourly rate (USD)", "$500"),
        ("Option shares granted", "2,000,000"),
        ("Vested option shares", "1,500,000"),
        ("Consulting period (months)", "12"),
        ("Cancelled option grants", "June 12, 2006 and June 22, 2006"),
        ("Company repurchases unvested restricted shares", "Yes"),
        ("Chair&#39;s name", "Eliot Protsch"),
    ]:
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page, label
    tree = lxml.html.fromstring(page)
    sections = [h.text_content()
                for h in tree.xpath("//section[@aria-labelledby='terms-title']/h3")]
    assert sections == ["Parties", "Dates", "Consulting", "Equity", "Covenants", "Signatures"]


def test_letter_page_previews_every_pdf_page(staff, letter_id):
    page = staff.get(f"/letters/{letter_id}").text
    tree = lxml.html.fromstring(page)
    images = tree.xpath("//ol[@class='pages']//img")
    assert [i.get("src") for i in images] == [
        f"/letters/{letter_id}/versions/1/pages/{n}.png" for n in (1, 2, 3)]
    assert images[0].get("alt") == "Page 1 of 3 of version 1"
    assert (images[0].get("width"), images[0].get("height")) == ("850", "1100")
    for image in images:
        response = staff.get(image.get("src"))
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        picture = Image.open(io.BytesIO(response.data))
        assert picture.size == (850, 1100)
        assert response.headers["Cache-Control"] == "no-store"  # never kept by a browser


def test_page_picture_is_not_blank(staff, letter_id):
    data = staff.get(f"/letters/{letter_id}/versions/1/pages/1.png").data
    picture = Image.open(io.BytesIO(data)).convert("L")
    dark = sum(1 for value in picture.getdata() if value < 128)
    assert dark > 5000  # the letter's text


def test_page_picture_answers_not_modified_to_a_browser_that_has_it(staff, letter_id):
    first = staff.get(f"/letters/{letter_id}/versions/1/pages/1.png")
    again = staff.get(f"/letters/{letter_id}/versions/1/pages/1.png",
                      headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("url", ["/letters/{id}/versions/1/pages/4.png",
                                 "/letters/{id}/versions/1/pages/0.png",
                                 "/letters/{id}/versions/9/pages/1.png",
                                 "/letters/999/versions/1/pages/1.png"])
def test_missing_page_pictures_are_404(staff, letter_id, url):
    assert staff.get(url.format(id=letter_id)).status_code == 404


def test_page_picture_of_a_pdf_not_ready_is_404(staff, make_letter, reference_terms):
    pending = make_letter(reference_terms, generate=False)
    assert staff.get(f"/letters/{pending}/versions/1/pages/1.png").status_code == 404


def test_pdf_download_is_the_letter(staff, letter_id, reference_words):
    response = staff.get(f"/letters/{letter_id}/versions/1/letter.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == \
        "attachment; filename=john-r-tucker-separation-letter-v1.pdf"
    assert letter_words(pdf_text(response.data)) == reference_words


def test_docx_download_is_the_letter(staff, letter_id, reference_words):
    response = staff.get(f"/letters/{letter_id}/versions/1/letter.docx")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.mimetype.endswith("wordprocessingml.document")
    assert letter_words(docx_text(response.data)) == reference_words


def test_pdf_download_waits_for_a_pdf_not_yet_made(app, staff, make_letter, reference_terms,
                                                   reference_words):
    import threading

    from workflow.letters import generate_pdf_job

    pending = make_letter(reference_terms, generate=False)
    with app.app_context(), get_db().transaction() as session:
        (document_id,) = session.scalars(select(Document.id).where(
            Document.letter_id == pending, Document.kind == "letter_pdf"))
    # A worker makes it while the download waits (the request itself never converts).
    worker = threading.Timer(0.3, generate_pdf_job.call_local, (document_id,))
    worker.start()
    response = staff.get(f"/letters/{pending}/versions/1/letter.pdf")
    worker.join()
    assert response.status_code == 200
    assert letter_words(pdf_text(response.data)) == reference_words


def test_letter_page_lists_documents_and_the_timeline(staff, letter_id):
    page = staff.get(f"/letters/{letter_id}").text
    tree = lxml.html.fromstring(page)
    names = [n.text_content() for n in tree.xpath("//*[@class='document__name']")]
    assert names == ["john-r-tucker-separation-letter-v1.pdf",
                     "john-r-tucker-separation-letter-v1.docx"]
    events = [" ".join(e.text_content().split()) for e in tree.xpath("//ol[@class='timeline']/li")]
    assert events[0].startswith("Generated john-r-tucker-separation-letter-v1.pdf")
    assert events[1].startswith("Created Version 1 from the separation letter template")
    assert events[1].endswith("counsel@example.com")


@pytest.mark.parametrize("url", ["/letters/999", "/letters/999/edit",
                                 "/letters/999/versions/1/letter.pdf",
                                 "/letters/{id}/versions/7/letter.docx",
                                 "/letters/{id}?version=5", "/letters/not-a-number"])
def test_unknown_letters_and_versions_are_404_pages(staff, letter_id, url):
    response = staff.get(url.format(id=letter_id))
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Not found" in response.text
    assert "Traceback" not in response.text


def test_status_of_an_unknown_letter_is_404_json(staff):
    response = staff.get("/letters/999/status")
    assert response.status_code == 404
    assert response.json == {"error": "There is no letter 999."}


# --- editing the terms: versions -------------------------------------------------------------

def test_edit_form_is_filled_with_the_current_terms(staff, letter_id, reference_terms):
    page = staff.get(f"/letters/{letter_id}/edit").text
    tree = lxml.html.fromstring(page)
    assert tree.xpath('//input[@id="term-executive_full_name"]/@value') == ["John R. Tucker"]
    assert tree.xpath('//input[@id="term-hourly_rate"]/@value') == ["500"]
    assert tree.xpath('//input[@name="cancelled_option_grant_dates"]'
                      '[not(ancestor::template)]/@value') == ["2006-06-12", "2006-06-22"]
    assert "Save as version 2" in page


def test_editing_makes_version_2_and_keeps_version_1(staff, letter_id, reference_terms,
                                                      generate_pending, reference_words):
    form = staff.get(f"/letters/{letter_id}/edit").text
    changed = {**reference_terms, "hourly_rate": "650", "consulting_months": "18"}
    response = staff.post(f"/letters/{letter_id}/edit", data=terms_form_data(changed, form))
    assert response.status_code == 302
    page = staff.get(f"/letters/{letter_id}").text
    assert "Version 2 saved." in page
    assert "<dt>Hourly rate (USD)</dt><dd>$650</dd>" in page
    generate_pending()
    v2 = pdf_text(staff.get(f"/letters/{letter_id}/versions/2/letter.pdf").data)
    assert "$650 per hour" in " ".join(v2.split())
    assert "an eighteen-month period" in " ".join(v2.split())
    v1 = staff.get(f"/letters/{letter_id}/versions/1/letter.pdf")
    assert v1.headers["Content-Disposition"].endswith("-v1.pdf")
    assert letter_words(pdf_text(v1.data)) == reference_words
    old = staff.get(f"/letters/{letter_id}?version=1").text
    assert "You are looking at version 1, an earlier version." in old
    assert "<dt>Hourly rate (USD)</dt><dd>$500</dd>" in old
    rows = _rows(staff.get("/letters").text)
    assert rows[0][3] == "2"


def test_saving_unchanged_terms_makes_no_version(staff, letter_id):
    form = staff.get(f"/letters/{letter_id}/edit").text
    tree = lxml.html.fromstring(form)
    data: dict = {"csrf_token": csrf_token(form), "template": "separation_letter"}
    # Post back exactly what the form holds, as a browser would.
    for element in tree.xpath("//form[@data-terms-form]//input[@type!='hidden']"
                              "[not(ancestor::template)]"):
        if element.get("type") == "radio" and element.get("checked") is None:
            continue
        data.setdefault(element.get("name"), []).append(element.get("value") or "")
    response = staff.post(f"/letters/{letter_id}/edit", data=data)
    assert response.status_code == 302
    page = staff.get(f"/letters/{letter_id}").text
    assert "The terms are unchanged" in page
    assert "Version 2" not in page


def test_edit_errors_show_beside_the_field(app, staff, letter_id, reference_terms):
    form = staff.get(f"/letters/{letter_id}/edit").text
    bad = {**reference_terms, "vested_option_shares": "3000000"}
    response = staff.post(f"/letters/{letter_id}/edit", data=terms_form_data(bad, form))
    assert response.status_code == 422
    assert "cannot exceed the 2,000,000 option shares granted" in response.text
    with app.app_context(), get_db().transaction() as session:
        assert session.get(Letter, letter_id).current_version == 1


def test_a_letter_out_for_signature_cannot_be_edited(app, staff, letter_id, reference_terms):
    form = staff.get(f"/letters/{letter_id}/edit").text
    _set(app, letter_id, status=LetterStatus.OUT_FOR_SIGNATURE.value)
    page = staff.get(f"/letters/{letter_id}").text
    assert "Change the terms" not in page
    response = staff.get(f"/letters/{letter_id}/edit")
    assert response.status_code == 302
    posted = staff.post(f"/letters/{letter_id}/edit",
                        data=terms_form_data({**reference_terms, "hourly_rate": "700"}, form))
    assert posted.status_code == 302
    assert "its terms cannot be changed now" in staff.get(f"/letters/{letter_id}").text
    with app.app_context(), get_db().transaction() as session:
        assert session.get(Letter, letter_id).current_version == 1


def test_a_failed_pdf_can_be_tried_again(app, staff, letter_id):
    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Document).where(Document.kind == "letter_pdf")
                        .values(status="failed", error="LibreOffice stopped.",
                                blob_sha256=None))
    page = staff.get(f"/letters/{letter_id}").text
    assert "The PDF could not be generated." in page and "LibreOffice stopped." in page
    response = staff.post(f"/letters/{letter_id}/versions/1/retry",
                          data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    # Its job was queued again (and, the queue being immediate here, has made it).
    with app.app_context(), get_db().transaction() as session:
        document = session.query(Document).filter_by(kind="letter_pdf").one()
        assert document.status == "ready" and document.error is None
    assert "The PDF could not be generated." not in staff.get(f"/letters/{letter_id}").text


def test_names_typed_with_markup_are_shown_as_text(staff, make_letter, reference_terms):
    letter = make_letter({**reference_terms, "executive_full_name": "<script>alert(1)</script>",
                          "company_name": "Smith & \"Sons\" <Ltd>"}, generate=False)
    page = staff.get(f"/letters/{letter}").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    table = staff.get("/letters").text
    assert "<script>alert(1)</script>" not in table
