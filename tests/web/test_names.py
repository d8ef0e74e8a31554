"""Names of every kind are sent, signed and certified: each signature on its own party's line.

Each case in tests/data/cases/ is a ``POST /api/letters`` body. The letter is sent with the
signers as printed in the terms (the template's parties, by default), each signs (typed, or
drawn where the handwriting font cannot write the name), and the executed PDF is checked the
way a reader checks it: each signature on its own line, every name in the certificate drawn in
a font that has its letters, right-to-left names in their order.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import unicodedata
from pathlib import Path

import pypdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from reportlab.pdfbase.ttfonts import TTFont
from support import pdftotext

from workflow import pdfs
from workflow.pdfs import extract_pages, signing_fields

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"
DRAWN = base64.b64encode((CASES / "drawn-signature.png").read_bytes()).decode()
NAME_CASES = ["chair-name-begins-executives", "vietnamese-executive", "decomposed-accents",
              "arabic-executive", "long-chair-name", "cjk-and-hebrew"]
_BIDI_MARKS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def case(name: str) -> dict:
    return json.loads((CASES / f"{name}.json").read_text("utf-8"))


def sign(client, token: str, name: str) -> dict:
    """Sign with the name typed, or drawn where the handwriting font cannot write it."""
    typed = client.post(f"/api/sign/{token}", json={
        "consent": True, "signature": {"type": "typed", "text": name}})
    if typed.status_code == 200:
        return typed.json
    # Never boxes in place of letters: the signer is told to draw instead.
    assert typed.status_code == 400, typed.text
    assert "cannot draw" in typed.json["error"] and "draw the signature" in typed.json["error"]
    drawn = client.post(f"/api/sign/{token}", json={
        "consent": True, "signature": {"type": "drawn", "png": DRAWN, "pixel_ratio": 2}})
    assert drawn.status_code == 200, drawn.text
    return drawn.json


def image_boxes(pdf: bytes, page_index: int) -> list[tuple[float, ...]]:
    document = pdfium.PdfDocument(pdf)
    try:
        page = document[page_index]
        return [tuple(obj.get_bounds())
                for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])]
    finally:
        document.close()


def overlapping_notes(pdf: bytes, page_index: int, note: str) -> list[str]:
    """The characters a "Signed electronically on ..." note is drawn over, on one page."""
    document = pdfium.PdfDocument(pdf)
    text = document[page_index].get_textpage()
    try:
        notes, searcher = [], text.search(note)
        while (found := searcher.get_next()) is not None:
            notes.append(range(found[0], found[0] + found[1]))
        searcher.close()
        assert notes, note
        rects = [text.get_rect(i) for found in notes
                 for i in range(text.count_rects(found.start, len(found)))]
        hit = []
        for index in range(text.count_chars()):
            char = chr(pdfium_c.FPDFText_GetUnicode(text, index))
            if char.isspace() or any(index in found for found in notes):
                continue
            x0, y0, x1, y1 = text.get_charbox(index)
            if any(x0 < r[2] and r[0] < x1 and y0 < r[3] and r[1] < y1 for r in rects):
                hit.append(char)
        return hit
    finally:
        text.close()
        document.close()


def inside(box, field_box, slack: float = 3.0) -> bool:
    x0, y0, x1, y1 = box
    f0, g0, f1, g1 = field_box
    return f0 - slack <= x0 and x1 <= f1 + slack and g0 - slack <= y0 and y1 <= g1 + slack


def font_characters() -> dict[str, frozenset[int]]:
    """The characters of each font the certificate may use, by its PostScript name."""
    found = {}
    for _name, regular, bold in pdfs._CERTIFICATE_FACES:
        for path in (pdfs._FONT_FOLDER / regular, pdfs._FONT_FOLDER / bold):
            if path.is_file():
                face = TTFont("probe", str(path)).face
                found[face.name.decode() if isinstance(face.name, bytes) else face.name] = \
                    frozenset(face.charToGlyph)
    return found


def drawn_characters(pdf: bytes) -> list[tuple[str, str]]:
    """Every character drawn on every page, with the PostScript name of its font."""
    document = pdfium.PdfDocument(pdf)
    drawn = []
    try:
        for page in document:
            text = page.get_textpage()
            buffer = (pdfium_c.c_char * 256)()
            flags = pdfium_c.c_int()
            for index in range(text.count_chars()):
                char = chr(pdfium_c.FPDFText_GetUnicode(text, index))
                if char.isspace() or char in "\ufffe\x02":
                    continue
                pdfium_c.FPDFText_GetFontInfo(text, index, buffer, 256, flags)
                font = buffer.value.decode("utf-8", "replace").split("+", 1)[-1]
                font = re.sub(r"-[0-9]+$", "", font)  # a face of a collection: NAME-0
                drawn.append((char, font))
            text.close()
            page.close()
    finally:
        document.close()
    return drawn


@pytest.mark.parametrize("case_name", NAME_CASES)
def test_a_letter_is_sent_and_signed_whatever_the_names(client, api, case_name):
    body = case(case_name)
    created = client.post("/api/letters", headers=api, json=body)
    assert created.status_code == 201, created.text
    letter_id = created.json["id"]
    terms = body["terms"]
    # Sent with no signers given: the template's parties, named as printed in the terms.
    sent = client.post(f"/api/letters/{letter_id}/envelope", headers=api, json={})
    assert sent.status_code == 201, sent.text
    signers = sent.json["signers"]
    assert [(s["role"], s["name"]) for s in signers] == [
        ("company", terms["chair_name"].strip()),
        ("executive", terms["executive_full_name"].strip())]
    letter_pdf = client.get(f"/api/letters/{letter_id}/document.pdf", headers=api).data
    fields = signing_fields(letter_pdf)

    signed_on = set()
    for signer in signers:
        token = signer["link"].rsplit("/", 1)[1]
        answer = sign(client, token, signer["name"])
        assert answer["status"] == "signed"
        signed_on.add(dt.date.fromisoformat(answer["signed_on"]))
    executed = client.post(f"/api/letters/{letter_id}/executed.pdf", headers=api)
    assert executed.status_code == 200, executed.text

    # Each signature on its own party's line of the conformed copy, and only there.
    pages = len(pypdf.PdfReader(io.BytesIO(letter_pdf)).pages)
    conformed = extract_pages(executed.data, list(range(pages)))
    for role in ("company", "executive"):
        field = fields.signature(role)
        found = [box for box in image_boxes(conformed, field.page_index)
                 if inside(box, field.box)]
        assert len(found) == 1, (role, image_boxes(conformed, field.page_index), field.box)
    assert sum(len(image_boxes(conformed, i)) for i in range(pages)) == 2
    # The notes of the date of signing are written where nothing is printed, whatever the
    # length or the direction of the names.
    for day in signed_on:
        note = f"Signed electronically on {day:%B} {day.day}, {day.year}"
        assert overlapping_notes(conformed, fields.signature("company").page_index,
                                 note) == []

    # The certificate names every signer, each name in a font that has its letters, and a
    # right-to-left name reads in its order.
    certificate = extract_pages(executed.data, list(range(
        pages + 2, len(pypdf.PdfReader(io.BytesIO(executed.data)).pages))))
    text = unicodedata.normalize("NFKC", _BIDI_MARKS.sub("", pdftotext(certificate)))
    for signer in signers:
        assert unicodedata.normalize("NFKC", signer["name"]) in text, signer["name"]
    fonts = font_characters()
    names = "".join(unicodedata.normalize("NFC", s["name"]) for s in signers)
    checked = 0
    for char, font in drawn_characters(certificate):
        if char.isascii() or not (unicodedata.normalize("NFKC", char) in names
                                  or char in names):
            continue  # the standard fonts have ASCII; other text is not a name
        assert font in fonts and ord(char) in fonts[font], (char, font)
        checked += 1
    assert checked >= len([ch for ch in names if not ch.isascii() and not ch.isspace()])


def test_right_to_left_names_are_drawn_in_reading_order():
    # What a reader sees from left to right is the name read from right to left.
    signer = pdfs.CertificateSigner(name="יעל כהן", email="", role="The executive",
                                    method="drawn", consent_at=None, first_viewed_at=None,
                                    signed_at=None, ip=None, user_agent=None)
    certificate = pdfs.certificate_pdf(pdfs.CertificateInfo(
        "env", "A letter", "0" * 64, dt.datetime(2027, 3, 3), [signer], []))
    document = pdfium.PdfDocument(certificate)
    text = document[0].get_textpage()
    hebrew = []
    for index in range(text.count_chars()):
        char = chr(pdfium_c.FPDFText_GetUnicode(text, index))
        if "\u0590" <= char <= "\u05ff":
            hebrew.append((text.get_charbox(index)[0], char))
    text.close()
    document.close()
    left_to_right = "".join(char for _, char in sorted(hebrew))
    assert left_to_right[::-1] == "יעלכהן"  # read right to left: "יעל כהן" as typed


def test_arabic_letters_are_joined_and_in_reading_order():
    # Drawn in their joined forms, right to left: read back, the name is as typed.
    drawn = pdfs._visual_order("سلام علي")
    assert all("\ufe70" <= ch <= "\ufeff" or ch == " " for ch in drawn)
    assert unicodedata.normalize("NFKC", drawn[::-1]) == "سلام علي"
