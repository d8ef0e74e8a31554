"""A template of three parties is executed end to end: two sign online, one on paper.

The consulting agreement is signed by the company's signatory (typed, online), the consultant
(in ink on a printed copy, scanned and uploaded by staff) and the guarantor (drawn, online).
The executed PDF has each signature on its own party's line, a signed page per party, and a
certificate of completion that lists the three signers.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pypdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from scans import scan_of
from support import pdftotext

from workflow import paper
from workflow.pdfs import extract_pages, outline_titles, signing_fields
from workflow.schema import load_template, sample_terms

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


def image_boxes(pdf: bytes, page_index: int) -> list[tuple[float, ...]]:
    document = pdfium.PdfDocument(pdf)
    try:
        return [tuple(obj.get_bounds()) for obj in document[page_index].get_objects(
            filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])]
    finally:
        document.close()


def within(box, region, slack: float = 3.0) -> bool:
    return (region[0] - slack <= box[0] and box[2] <= region[2] + slack
            and region[1] - slack <= box[1] and box[3] <= region[3] + slack)


def test_three_parties_sign_two_online_and_one_on_paper(client, api, drawn_signature):
    spec = load_template("consulting_agreement")
    terms = sample_terms(spec)
    created = client.post("/api/letters", headers=api,
                          json={"template": "consulting_agreement", "terms": terms})
    assert created.status_code == 201, created.text
    letter_id = created.json["id"]

    # Sent with no signers given: the template's three parties, named and emailed as the
    # terms say, in the schema's signing order.
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={})
    assert sent.status_code == 201, sent.text
    signers = sent.json["signers"]
    assert [(s["role"], s["name"], s["email"]) for s in signers] == [
        ("company", "Maria Ortega", "maria.ortega@halden.example"),
        ("consultant", "Daniel Brooks", "daniel@brooks.example"),
        ("guarantor", "Susan Brooks", None)]
    company, consultant, guarantor = signers
    letter_pdf = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api).data
    fields = signing_fields(letter_pdf)
    assert set(fields.signatures) == {"company", "consultant", "guarantor"}

    typed = client.post(f"/api/sign/{company['link'].rsplit('/', 1)[1]}", json={
        "consent": True, "signature": {"type": "typed", "text": "Maria Ortega"}})
    assert typed.status_code == 200, typed.text

    # The consultant signs a printed copy; staff upload the scan of its signature page.
    blank = client.post(f"/api/letters/{letter_id}/counterparts/"
                        f"{consultant['counterpart_id']}/blank.pdf", headers=api).data
    scan = scan_of(blank, signed_by=["consultant"], angle=1.4, paper="a4")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    uploaded = client.post(
        f"/api/letters/{letter_id}/counterparts/{consultant['counterpart_id']}/upload",
        headers=api, data={"file": (io.BytesIO(scan), "brooks.pdf"), "signed_on": today},
        content_type="multipart/form-data")
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json["counterpart"]["paper"]["ink"] == "found"

    # The signing page tells the guarantor where their signature goes, from their field.
    page = client.get(f"/sign/{guarantor['link'].rsplit('/', 1)[1]}")
    assert page.status_code == 200
    assert ("sign your counterpart as the guarantor: your signature goes on your signature "
            f"line on page {fields.signature('guarantor').page_index + 1}") in \
        " ".join(page.text.split())
    drawn = client.post(f"/api/sign/{guarantor['link'].rsplit('/', 1)[1]}", json={
        "consent": True, "time_zone": "Europe/Lisbon",
        "signature": {"type": "drawn", "png": drawn_signature}})
    assert drawn.status_code == 200, drawn.text
    assert drawn.json["fully_executed"] is True

    executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert executed.status_code == 200, executed.text
    reader = pypdf.PdfReader(io.BytesIO(executed.data))
    pages = len(pypdf.PdfReader(io.BytesIO(letter_pdf)).pages)
    assert [title for title, _ in outline_titles(executed.data)] == [
        "Executed letter (conformed copy)", "Counterpart signed by Maria Ortega",
        "Counterpart signed by Daniel Brooks", "Counterpart signed by Susan Brooks",
        "Certificate of completion"]

    # The conformed copy: three signatures, each on its own party's line and nowhere else.
    conformed = extract_pages(executed.data, list(range(pages)))
    page = fields.signature("company").page_index
    boxes = image_boxes(conformed, page)
    assert len(boxes) == 3
    for role in ("company", "guarantor"):
        assert sum(within(box, fields.signature(role).box) for box in boxes) == 1, role
    ink = [box for box in boxes if not any(within(box, fields.signature(role).box)
                                           for role in ("company", "guarantor"))]
    assert len(ink) == 1 and within(ink[0], paper.ink_region(fields.signature("consultant")))
    text = pdftotext(conformed)
    assert text.count("Signed electronically on") == 2
    assert "Signed on paper on" in text

    # The certificate lists the three signers, each with their method.
    certificate = pdftotext(extract_pages(executed.data, list(range(pages + 3,
                                                                    len(reader.pages)))))
    assert "Signers 3" in certificate
    for name in ("Maria Ortega", "Daniel Brooks", "Susan Brooks"):
        assert name in certificate
    for method in ("Typed signature", "Signed on paper", "Drawn signature"):
        assert method in certificate
    for label in ("The company, by its signatory", "The consultant", "The guarantor"):
        assert label in certificate
