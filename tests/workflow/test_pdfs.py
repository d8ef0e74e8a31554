"""Signatures land where a reader looks for them; executed PDFs and uploads are what they claim."""

from __future__ import annotations

import html
import io
import re
import subprocess
import time
import zipfile
import zlib
from datetime import UTC, date, datetime
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter
from support import letter_words, pdftotext

from workflow.errors import DocumentError, TemplateError
from workflow.pdfs import (
    DRAWN_MIN_EXTENT,
    DRAWN_MIN_INK,
    SIGNATURE_MAX_HEIGHT,
    SIGNATURE_MAX_WIDTH,
    CertificateEvent,
    CertificateInfo,
    CertificateSigner,
    PaperSignature,
    assemble_executed_pdf,
    certificate_pdf,
    drawn_signature_png,
    extract_pages,
    field_positions,
    inspect_upload,
    outline_titles,
    signature_page_index,
    signing_field,
    signing_fields,
    stamp_signature,
    stamp_signatures,
    typed_signature_png,
)
from workflow.render import ordinal_day, render_docx, render_pdf
from workflow.schema import load_template, sample_terms, validate_terms

CHAIR = "Eliot Protsch"
EXECUTIVE = "John R. Tucker"
COMPANY, EXECUTIVE_ROLE = "company", "executive"
SIGNED_AT = datetime(2006, 7, 28, 14, 3, 11, tzinfo=UTC)
SIGNED_ON = date(2006, 7, 28)
LAST_PAGE = 2
CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


@pytest.fixture(scope="module")
def letter_pdf(reference_pdf: bytes) -> bytes:
    return reference_pdf


@pytest.fixture(scope="module")
def chair_signed(letter_pdf: bytes) -> bytes:
    return stamp_signature(letter_pdf, role=COMPANY, signature_png=typed_signature_png(CHAIR),
                           signed_on=SIGNED_ON)


@pytest.fixture(scope="module")
def executive_signed(letter_pdf: bytes) -> bytes:
    return stamp_signature(letter_pdf, role=EXECUTIVE_ROLE,
                           signature_png=typed_signature_png(EXECUTIVE), signed_on=SIGNED_ON)


def page_text(pdf: bytes, index: int) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[index].extract_text()


def image_boxes(pdf: bytes, page_index: int) -> list[tuple[float, float, float, float]]:
    """The boxes (PDF points) of the images drawn on one page."""
    document = pdfium.PdfDocument(pdf)
    try:
        page = document[page_index]
        return [tuple(obj.get_bounds())
                for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])]
    finally:
        document.close()


def blue_ink_above(pdf: bytes, role: str, *, height: float = 36) -> int:
    """Count blue pixels (signature ink, not black type) in a band above a party's line."""
    field = signing_field(pdf, role)
    document = pdfium.PdfDocument(pdf)
    image = document[field.page_index].render(scale=1).to_pil().convert("RGB")
    page_height = image.height
    x0, y0, x1, _ = field.line_box
    band = image.crop((int(x0), int(page_height - y0 - height), int(x1),
                       int(page_height - y0 + 2)))
    document.close()
    return sum(1 for r, _g, b in band.getdata() if b - r > 40)


def words_with_boxes(pdf: bytes, page_index: int) -> list[tuple[str, tuple[float, ...]]]:
    """The words of a page with their boxes in PDF points, as pdftotext -bbox reads them."""
    done = subprocess.run(["pdftotext", "-bbox", "-f", str(page_index + 1), "-l",
                           str(page_index + 1), "-", "-"], input=pdf, capture_output=True,
                          check=True)
    height = float(PdfReader(io.BytesIO(pdf)).pages[page_index].mediabox.height)
    found = []
    for match in re.finditer(r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" '
                             r'yMax="([\d.]+)">([^<]*)</word>', done.stdout.decode()):
        x0, y0, x1, y1 = (float(v) for v in match.groups()[:4])
        found.append((html.unescape(match.group(5)), (x0, height - y1, x1, height - y0)))
    return found


# --- the signing fields -----------------------------------------------------------------------


def test_the_signing_fields_are_the_lines_the_template_printed(letter_pdf):
    fields = signing_fields(letter_pdf)
    assert set(fields.signatures) == {COMPANY, EXECUTIVE_ROLE}
    chair, executive = fields.signature(COMPANY), fields.signature(EXECUTIVE_ROLE)
    assert chair.page_index == executive.page_index == LAST_PAGE
    # The chair's block is indented 3.25 inches; the executive's starts at the left margin.
    assert chair.line_box[0] == pytest.approx(72 + 3.25 * 72, abs=0.5)
    assert executive.line_box[0] == pytest.approx(72, abs=0.5)
    assert chair.line_box[1] > executive.line_box[1]
    words = words_with_boxes(letter_pdf, LAST_PAGE)
    rules = [box for word, box in words if set(word) == {"_"} and len(word) > 20]
    assert len(rules) == 2
    for field in (chair, executive):
        # The field is the rule of underscores as printed, end to end, and nothing else ...
        (rule,) = [box for box in rules if abs(box[0] - field.line_box[0]) < 1]
        assert field.line_box[0] == pytest.approx(rule[0], abs=0.5)
        assert field.line_box[2] == pytest.approx(rule[2], abs=0.5)
        assert rule[1] - 1 <= field.line_box[1] <= rule[1] + 4
        # ... and the name printed under it is the template's own text, right under it.
        name = CHAIR if field is chair else EXECUTIVE
        (first,) = [box for word, box in words if word == name.split()[0]
                    and abs(box[0] - field.line_box[0]) < 1]
        assert 0 < field.line_box[1] - first[3] < 6
    # Its box, where the signature goes, stands on the line, as wide as it.
    assert field_positions(letter_pdf)[EXECUTIVE_ROLE] == (
        LAST_PAGE, (executive.line_box[0], executive.line_box[1], executive.line_box[2],
                    executive.line_box[1] + SIGNATURE_MAX_HEIGHT))
    # The acknowledgement's date is the executive's date field.
    (date_field,) = signing_fields(letter_pdf).dates.values()
    assert date_field.role == EXECUTIVE_ROLE and date_field.page_index == LAST_PAGE
    (blank,) = [box for word, box in words if word == "___"]
    assert date_field.line_box[0] == pytest.approx(blank[0], abs=0.5)


def test_a_party_without_a_field_is_named(letter_pdf):
    with pytest.raises(DocumentError, match="no signature field for the party 'guarantor'"):
        signing_field(letter_pdf, "guarantor")
    with pytest.raises(DocumentError, match="no signature field for the party 'company'"):
        stamp_signature(render_free_pdf(), role=COMPANY,
                        signature_png=typed_signature_png(CHAIR), signed_on=SIGNED_ON)


def render_free_pdf() -> bytes:
    """A PDF with no signing fields at all (the certificate is one)."""
    return certificate_pdf(CertificateInfo("env", "A document", "0" * 64, SIGNED_AT, [], []))


def test_signature_page_index_and_extraction(letter_pdf):
    assert signature_page_index(letter_pdf, [COMPANY, EXECUTIVE_ROLE]) == LAST_PAGE
    page = extract_pages(letter_pdf, [LAST_PAGE])
    assert len(PdfReader(io.BytesIO(page)).pages) == 1
    assert "Acknowledged and agreed to" in page_text(page, 0)
    with pytest.raises(DocumentError, match="has 3 pages; there is no page 4"):
        extract_pages(letter_pdf, [3])


# --- stamping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "message"), [
    ("{{ date_signed.__globals__ }}", "the sandbox forbids"),
    ("{{ date_signed.__code__.co_consts }}", "the sandbox forbids"),
    ("{{ date_signed('executive', '2027-03-03') }}", "the second argument is the date"),
])
def test_the_date_of_signing_function_stays_in_the_sandbox(spec, valid_terms, payload,
                                                           message):
    with zipfile.ZipFile(spec.docx_path) as source:
        parts = {item: source.read(item) for item in source.namelist()}
    parts["word/document.xml"] = parts["word/document.xml"].replace(
        b"Dear {{ executive_first_name }},", f"Dear {payload},".encode())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)
    with pytest.raises(TemplateError, match=f"separation_letter.docx: .*{message}"):
        render_docx(spec, valid_terms, signing={"executive": date(2027, 3, 3)},
                    template=buffer.getvalue())


def test_chair_signature_lands_above_the_chairs_name_only(letter_pdf, chair_signed):
    assert blue_ink_above(letter_pdf, COMPANY) == 0
    assert blue_ink_above(chair_signed, COMPANY) > 300
    assert blue_ink_above(chair_signed, EXECUTIVE_ROLE) == 0


def test_executive_signature_lands_above_the_executives_name(executive_signed):
    assert blue_ink_above(executive_signed, EXECUTIVE_ROLE) > 300
    assert blue_ink_above(executive_signed, COMPANY) == 0


def test_stamped_copies_keep_their_fields(chair_signed, letter_pdf):
    # Stamping keeps the named destinations: the signed copy places as the blank does.
    assert field_positions(chair_signed) == field_positions(letter_pdf)


def test_stamping_draws_no_day_over_the_printed_blank(chair_signed, executive_signed):
    # The date of signing is text of the letter rendered again with it, never a drawing.
    for signed in (chair_signed, executive_signed):
        text = pdftotext(signed)
        assert "this ___ day of July, 2006" in text
        assert "28th" not in text


@pytest.fixture(scope="module")
def dated_letter_pdf(converter) -> bytes:
    """The letter rendered again with the executive's date of signing, March 3, 2027."""
    spec = load_template("separation_letter")
    terms = validate_terms(spec, sample_terms(spec))
    return render_pdf(render_docx(spec, terms, signing={"executive": date(2027, 3, 3)}),
                      converter)


def test_the_date_of_signing_is_in_the_text_layer_of_the_letter(letter_pdf, dated_letter_pdf):
    unsigned, dated = pdftotext(letter_pdf), pdftotext(dated_letter_pdf)
    assert "this ___ day of July, 2006" in unsigned
    assert "this 3rd day of March, 2027" in dated
    assert "___ day of" not in dated and "July, 2006" not in dated.split("Acknowledged")[1]
    # Nothing else of the letter changes.
    assert dated.replace("this 3rd day of March, 2027", "this ___ day of July, 2006") == unsigned


def test_stamped_letter_keeps_its_pages_and_words(letter_pdf, executive_signed):
    original, stamped = PdfReader(io.BytesIO(letter_pdf)), PdfReader(io.BytesIO(executive_signed))
    assert len(stamped.pages) == 3
    for before, after in zip(original.pages, stamped.pages, strict=True):
        old_words = letter_words(before.extract_text())
        new_words = letter_words(after.extract_text())
        assert new_words[:len(old_words)] == old_words
    assert executive_signed != letter_pdf


def test_date_of_signing_is_noted_within_the_margins(chair_signed, executive_signed):
    for pdf in (chair_signed, executive_signed):
        document = pdfium.PdfDocument(pdf)
        textpage = document[LAST_PAGE].get_textpage()
        searcher = textpage.search("Signed electronically on July 28, 2006")
        start, count = searcher.get_next()
        rects = [textpage.get_rect(i) for i in range(textpage.count_rects(start, count))]
        assert len(rects) == 1  # one line
        left, bottom, right, _top = rects[0]
        assert 54 <= left and right <= 612 - 54 and 54 <= bottom
        document.close()


def test_both_counterparts_can_sign_one_copy(chair_signed):
    both = stamp_signature(chair_signed, role=EXECUTIVE_ROLE,
                           signature_png=typed_signature_png(EXECUTIVE), signed_on=SIGNED_ON)
    assert blue_ink_above(both, COMPANY) > 300 and blue_ink_above(both, EXECUTIVE_ROLE) > 300


@pytest.mark.parametrize("day, expected", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"),
                                           (11, "11th"), (12, "12th"), (13, "13th"),
                                           (21, "21st"), (22, "22nd"), (28, "28th"),
                                           (31, "31st")])
def test_ordinal_days(day, expected):
    assert ordinal_day(day) == expected


# --- signature images -------------------------------------------------------------------------


def ink_pixels(png: bytes) -> int:
    image = Image.open(io.BytesIO(png))
    return sum(1 for a in image.getchannel("A").getdata() if a > 128)


def test_typed_signature_is_ink_on_transparent(tmp_path):
    png = typed_signature_png("Éliot Protsch-Łódź")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.width > 3 * image.height and image.height <= 130
    assert ink_pixels(png) > 1000
    assert image.getpixel((0, 0))[3] == 0  # corners are transparent after cropping to ink


@pytest.mark.parametrize("text, message", [("   ", "Type your name"),
                                           ("王小明", "cannot draw"),
                                           ("x" * 81, "at most 80")])
def test_typed_signature_refuses(text, message):
    with pytest.raises(DocumentError, match=message):
        typed_signature_png(text)


def canvas_png(size=(600, 200), stroke=True, background=(255, 255, 255, 255)) -> bytes:
    """Draw what a signature pad sends: a stroke on a white or a transparent canvas."""
    image = Image.new("RGBA", size, background)
    if stroke:
        ImageDraw.Draw(image).line([(100, 120), (200, 60), (300, 140), (420, 80)],
                                   fill=(0, 0, 0, 255), width=5)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("background", [(255, 255, 255, 255), (0, 0, 0, 0)])
def test_drawn_signature_is_cropped_to_the_ink(background):
    png = drawn_signature_png(canvas_png(background=background))
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGBA"
    assert 320 <= image.width <= 340 and 80 <= image.height <= 100
    assert image.getpixel((0, 0))[3] == 0  # the canvas is transparent around the ink
    assert ink_pixels(png) > 500


def test_drawn_signature_refuses_what_is_not_a_signature():
    jpeg = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(jpeg, format="JPEG")
    with pytest.raises(DocumentError, match="not a PNG"):
        drawn_signature_png(jpeg.getvalue())
    with pytest.raises(DocumentError, match="empty"):
        drawn_signature_png(canvas_png(stroke=False))
    with pytest.raises(DocumentError, match="3000 x 500 pixels"):
        drawn_signature_png(canvas_png(size=(3000, 500)))
    with pytest.raises(DocumentError, match="could not be read"):
        drawn_signature_png(canvas_png()[:200])


def test_a_single_tap_is_refused_as_too_little_ink():
    dot = (CASES / "drawn-single-tap-dot.png").read_bytes()
    for ratio in (1, 2):
        with pytest.raises(DocumentError, match="too small to be a signature") as refused:
            drawn_signature_png(dot, pixel_ratio=ratio)
    assert "spans 4 x 4 pixels" in str(refused.value)  # at 2 device pixels per CSS pixel


def test_a_drawn_signature_is_accepted_and_keeps_its_drawn_size():
    drawing = (CASES / "drawn-signature.png").read_bytes()
    png = drawn_signature_png(drawing, pixel_ratio=2)
    image = Image.open(io.BytesIO(png))
    assert ink_pixels(png) > 1000
    assert image.info["dpi"] == pytest.approx((192, 192), abs=0.1)  # 2 pixels a CSS pixel
    assert drawn_signature_png(drawing) != png


def stroke_png(length: int, width: int, size=(600, 200)) -> bytes:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(100, 100), (100 + length, 100)], fill=(0, 0, 0, 255),
                               width=width)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_too_little_ink_or_too_short_a_reach_is_refused():
    assert DRAWN_MIN_EXTENT == 40 and DRAWN_MIN_INK == 120  # as the README states them
    drawn_signature_png(stroke_png(60, 3))  # a short stroke, as initials are
    with pytest.raises(DocumentError, match="too small"):
        drawn_signature_png(stroke_png(30, 6))  # enough ink, reaching too little
    with pytest.raises(DocumentError, match="too small"):
        drawn_signature_png(stroke_png(100, 1))  # far enough, but a hairline of ink
    # The same drawing is half as large on a screen with 2 pixels to the CSS pixel.
    drawn_signature_png(stroke_png(120, 6), pixel_ratio=1)
    with pytest.raises(DocumentError, match="too small"):
        drawn_signature_png(stroke_png(60, 6), pixel_ratio=2)
    with pytest.raises(ValueError, match="pixel_ratio"):
        drawn_signature_png(stroke_png(120, 6), pixel_ratio=9)


def test_a_small_drawing_is_stamped_at_its_drawn_size_not_enlarged(letter_pdf):
    # 80 x 30 CSS pixels of ink is 60 x 22.5 points (plus the 4-pixel margin of the crop).
    image = Image.new("RGBA", (300, 120), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(100, 80), (140, 50), (180, 80)], fill=(0, 0, 0, 255), width=4)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = drawn_signature_png(buffer.getvalue())
    signed = stamp_signature(letter_pdf, role=EXECUTIVE_ROLE, signature_png=png,
                             signed_on=SIGNED_ON)
    ((x0, y0, x1, y1),) = image_boxes(signed, LAST_PAGE)
    width_px, height_px = Image.open(io.BytesIO(png)).size
    assert x1 - x0 == pytest.approx(width_px * 0.75, abs=0.5)
    assert y1 - y0 == pytest.approx(height_px * 0.75, abs=0.5)
    assert x1 - x0 < 70


def test_a_large_drawing_is_scaled_down_to_the_line(letter_pdf):
    png = drawn_signature_png(canvas_png(size=(1800, 600)))
    signed = stamp_signature(letter_pdf, role=COMPANY, signature_png=png,
                             signed_on=SIGNED_ON)
    ((x0, y0, x1, y1),) = image_boxes(signed, LAST_PAGE)
    # Within the field's box: on its line, no wider than the line, no taller than the box.
    fx0, fy0, fx1, fy1 = signing_field(letter_pdf, COMPANY).box
    assert x1 - x0 <= SIGNATURE_MAX_WIDTH + 0.5 and y1 - y0 <= SIGNATURE_MAX_HEIGHT + 0.5
    assert fx0 <= x0 and x1 <= fx1 + 0.5 and y1 - y0 <= fy1 - fy0 + 0.5
    assert fy0 - 3 <= y0 <= fy0


def ink_crop_png(size=(200, 60)) -> bytes:
    """A crop of a scan around a signer's ink: blue strokes on a transparent background."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(10, 45), (60, 10), (110, 50), (190, 15)],
                               fill=(20, 30, 120, 255), width=4)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_paper_signature_is_drawn_from_its_crop_at_its_box(letter_pdf):
    line = signing_field(letter_pdf, EXECUTIVE_ROLE).line_box
    crop_box = (line[0] + 4, line[1] - 3, line[0] + 154, line[1] + 42)  # 150 x 45 points
    conformed = stamp_signatures(letter_pdf, [
        PaperSignature(EXECUTIVE_ROLE, ink_crop_png(), crop_box, date(2027, 3, 2))])
    ((x0, y0, x1, y1),) = image_boxes(conformed, LAST_PAGE)
    assert (x0, y0, x1, y1) == pytest.approx(crop_box, abs=0.05)
    assert blue_ink_above(conformed, EXECUTIVE_ROLE, height=45) > 300
    assert blue_ink_above(conformed, COMPANY) == 0
    assert "Signed on paper on March 2, 2027" in pdftotext(conformed)

    without_crop = stamp_signatures(letter_pdf, [PaperSignature(EXECUTIVE_ROLE)])
    assert image_boxes(without_crop, LAST_PAGE) == []
    assert "Signed on paper" in pdftotext(without_crop)
    with pytest.raises(DocumentError, match="crop box .* is not a box on the signature page"):
        stamp_signatures(letter_pdf, [PaperSignature(EXECUTIVE_ROLE, ink_crop_png(),
                                                     (500, 10, 900, 60))])
    with pytest.raises(DocumentError, match="crop box"):
        stamp_signatures(letter_pdf, [PaperSignature(EXECUTIVE_ROLE, ink_crop_png(),
                                                     (100, 100, 50, 150))])


# --- certificate and assembly -----------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate() -> bytes:
    signers = [
        CertificateSigner(name=CHAIR, email="eliot.protsch@capstone.example",
                          role="Chairman, Board of Directors", method="typed",
                          consent_at=SIGNED_AT, first_viewed_at=SIGNED_AT, signed_at=SIGNED_AT,
                          ip="203.0.113.7",
                          user_agent="Mozilla/5.0 (X11; Linux x86_64) " + "Gecko/" * 60,
                          signature_png=typed_signature_png(CHAIR),
                          time_zone="America/Los_Angeles", signed_on=SIGNED_ON,
                          emailed_at=datetime(2006, 7, 27, 9, 0, 5, tzinfo=UTC)),
        CertificateSigner(name="Pat Witness", email="", role="witness", method="drawn",
                          consent_at=EVENING_UTC, first_viewed_at=EVENING_UTC,
                          signed_at=EVENING_UTC, ip="2001:db8::1", user_agent="Phone",
                          signature_png=drawn_signature_png(canvas_png()),
                          time_zone="America/New_York", signed_on=date(2027, 3, 3)),
        CertificateSigner(name="John & <b>Tucker</b>", email="jtucker@example.com",
                          role="Executive", method="paper", consent_at=None,
                          first_viewed_at=SIGNED_AT, signed_at=SIGNED_AT, ip=None,
                          user_agent=None, signature_png=None, signed_on=date(2006, 7, 26),
                          uploaded_at=datetime(2006, 7, 28, 16, 45, 0, tzinfo=UTC),
                          ink="accepted_without_ink", ink_accepted_by="clerk@capstone.example",
                          order_override_reason="The chair is travelling; signed first",
                          order_override_by="counsel@capstone.example",
                          recorded_by="counsel@capstone.example"),
    ]
    events = [CertificateEvent(SIGNED_AT, "envelope sent", "Counterpart", "to 2 signers"),
              CertificateEvent(SIGNED_AT, "signed", CHAIR, "typed signature")]
    info = CertificateInfo(envelope_id="env-0728", title="Separation letter & <release>",
                           letter_sha256="0f" * 32, completed_at=SIGNED_AT, signers=signers,
                           events=events)
    return certificate_pdf(info)


def certificate_text(pdf: bytes) -> str:
    return " ".join(" ".join(page.extract_text().split())
                    for page in PdfReader(io.BytesIO(pdf)).pages)


# Eight in the evening of March 3 in New York is already March 4 in UTC.
EVENING_UTC = datetime(2027, 3, 4, 1, 0, 0, tzinfo=UTC)


def test_certificate_states_who_signed_how_and_when(certificate):
    text = certificate_text(certificate)
    for expected in ("Certificate of completion", CHAIR, "eliot.protsch@capstone.example",
                     "jtucker@example.com", "Typed signature", "Signed on paper",
                     "203.0.113.7", "2001:db8::1", "2006-07-28 14:03:11 UTC", "0f" * 32,
                     "envelope sent", "env-0728", "witness"):
        assert expected in text, expected
    # Online: the UTC time, and beside it the date of signing in the signer's own zone.
    assert ("2027-03-04 01:00:00 UTC; date of signing March 3, 2027 (America/New_York)"
            in text)
    assert "2006-07-28 14:03:11 UTC; date of signing July 28, 2006 (America/Los_Angeles)" \
        in text
    # How each signer got their link.
    assert "emailed to eliot.protsch@capstone.example at 2006-07-27 09:00:05 UTC" in text
    assert text.count("link handed over by staff") == 2
    # Paper: the date staff read from the copy beside the upload time, the ink check, and
    # the signing order overridden, with who and why.
    assert "July 26, 2006 (as given by staff from the signed copy)" in text
    assert "Scan uploaded 2006-07-28 16:45:00 UTC" in text
    assert ("no ink found on the signature line; accepted without it by "
            "clerk@capstone.example") in text
    assert ("overridden by counsel@capstone.example: The chair is travelling; signed first"
            in text)
    # Markup typed by users is shown as text, not obeyed or lost.
    assert "John & <b>Tucker</b>" in text
    assert "Separation letter & <release>" in text


def test_certificate_wraps_a_long_user_agent(certificate):
    text = certificate_text(certificate).replace(" ", "")
    assert "Gecko/" * 60 in text


def test_assembled_pdf_is_the_conformed_letter_signed_pages_then_certificate(
        dated_letter_pdf, chair_signed, certificate):
    conformed = stamp_signatures(dated_letter_pdf, [
        PaperSignature(COMPANY, ink_crop_png(), None, SIGNED_ON)])
    # Each counterpart signed online is the letter rendered with its own signer's date; here,
    # as in the conformed copy, the same fonts are used throughout, and stored once.
    executive_copy = stamp_signature(dated_letter_pdf, role=EXECUTIVE_ROLE,
                                     signature_png=typed_signature_png(EXECUTIVE),
                                     signed_on=SIGNED_ON)
    signed_pages = [(CHAIR, extract_pages(chair_signed, [LAST_PAGE])),
                    (EXECUTIVE, extract_pages(executive_copy, [LAST_PAGE]))]
    executed = assemble_executed_pdf(conformed, signed_pages, certificate,
                                     metadata={"Title": "Separation letter",
                                               "CounterpartEnvelope": "env-0728"})
    reader = PdfReader(io.BytesIO(executed))
    certificate_pages = len(PdfReader(io.BytesIO(certificate)).pages)
    assert len(reader.pages) == 3 + 2 + certificate_pages
    texts = [" ".join(page.extract_text().split()) for page in reader.pages]
    assert "this 3rd day of March, 2027" in texts[2]  # the conformed copy, dated
    assert "Signed electronically on July 28, 2006" in texts[3]
    assert "Signed electronically on July 28, 2006" in texts[4]
    assert texts[5].count("Certificate of completion") >= 1
    assert outline_titles(executed) == [
        ("Executed letter (conformed copy)", 0), ("Counterpart signed by Eliot Protsch", 3),
        ("Counterpart signed by John R. Tucker", 4), ("Certificate of completion", 5)]
    assert reader.page_mode == "/UseOutlines"
    assert reader.metadata["/Title"] == "Separation letter"
    assert reader.metadata["/CounterpartEnvelope"] == "env-0728"

    # The executive's page and the conformed copy come from the same rendering: their font
    # subset is stored once, not twice as a plain merge stores it.
    naive = PdfWriter()
    for part in (conformed, *(page for _, page in signed_pages), certificate):
        naive.append(PdfReader(io.BytesIO(part)))
    buffer = io.BytesIO()
    naive.write(buffer)
    font = PdfReader(io.BytesIO(dated_letter_pdf)).pages[0]["/Resources"]["/Font"]
    (font_file,) = {f.get_object()["/FontDescriptor"].get_object()["/FontFile2"].get_object()
                     ._data for f in font.values()}
    assert len(buffer.getvalue()) - len(executed) >= len(font_file)


# --- uploads ----------------------------------------------------------------------------------


def upload(data: bytes, **options) -> int:
    settings = {"filename": "signed.pdf", "allowed_page_counts": {1, 3},
                "max_bytes": 5_000_000, **options}
    return inspect_upload(data, **settings)


def test_upload_of_a_good_pdf_gives_its_page_count(letter_pdf):
    assert upload(letter_pdf) == 3
    assert upload(extract_pages(letter_pdf, [LAST_PAGE])) == 1


def test_upload_refusals_name_the_file(letter_pdf):
    with pytest.raises(DocumentError, match="x.pdf is not a PDF"):
        upload(b"<html>not a pdf</html>", filename="x.pdf")
    with pytest.raises(DocumentError, match="scan.pdf could not be read as a PDF"):
        upload(letter_pdf[: len(letter_pdf) * 2 // 3], filename="scan.pdf")
    with pytest.raises(DocumentError, match=r"signed.pdf has 3 pages; .* must have 1 page\."):
        upload(letter_pdf, allowed_page_counts={1})
    with pytest.raises(DocumentError, match=r"2 or 4 pages"):
        upload(letter_pdf, allowed_page_counts={2, 4})
    size = f"{round(len(letter_pdf) / 1024)} KB"  # (a tagged letter of 3 pages: about 40 KB)
    with pytest.raises(DocumentError, match=f"big.pdf is {size}; the largest file accepted is"):
        upload(letter_pdf, filename="big.pdf", max_bytes=10_000)
    with pytest.raises(DocumentError, match="empty.pdf is empty"):
        upload(b"", filename="empty.pdf")


def test_upload_of_an_encrypted_pdf_is_refused(letter_pdf):
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(letter_pdf)))
    writer.encrypt("secret", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(DocumentError, match="locked.pdf is password-protected"):
        upload(buffer.getvalue(), filename="locked.pdf")


def flate_bomb(expanded: int) -> bytes:
    """Make a one-page PDF whose content stream inflates to ``expanded`` bytes."""
    compressor = zlib.compressobj(9)
    block = b" " * (1 << 20)
    stream = b"".join(compressor.compress(block) for _ in range(expanded >> 20))
    stream += compressor.flush()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream
               + b"\nendstream"]
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def test_upload_of_a_decompression_bomb_is_refused_in_time():
    bomb = flate_bomb(256 << 20)
    assert len(bomb) < 400_000
    started = time.monotonic()
    with pytest.raises(DocumentError, match="bomb.pdf: could not be read as a PDF within the "
                                            "time limit"):
        upload(bomb, filename="bomb.pdf", allowed_page_counts={1})
    assert time.monotonic() - started < 10


def test_upload_that_outlasts_the_time_limit_is_refused(letter_pdf):
    started = time.monotonic()
    with pytest.raises(DocumentError, match="slow.pdf: could not be read as a PDF within the "
                                            "time limit"):
        upload(letter_pdf, filename="slow.pdf", time_limit=0.01)
    assert time.monotonic() - started < 2
