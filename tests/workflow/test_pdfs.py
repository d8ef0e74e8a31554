"""Signatures land where a reader looks for them; executed PDFs and uploads are what they claim."""

from __future__ import annotations

import io
import time
import zlib
from datetime import UTC, datetime

import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter
from support import letter_words

from workflow.errors import DocumentError
from workflow.pdfs import (
    CertificateEvent,
    CertificateInfo,
    CertificateSigner,
    assemble_executed_pdf,
    certificate_pdf,
    drawn_signature_png,
    extract_pages,
    find_day_blank,
    find_signature_spot,
    inspect_upload,
    ordinal_day,
    signature_page_index,
    stamp_signature,
    typed_signature_png,
)
from workflow.render import render_docx, render_pdf
from workflow.schema import load_template, sample_terms, validate_terms

CHAIR = "Eliot Protsch"
EXECUTIVE = "John R. Tucker"
SIGNED_AT = datetime(2006, 7, 28, 14, 3, 11, tzinfo=UTC)
LAST_PAGE = 2


@pytest.fixture(scope="module")
def letter_pdf() -> bytes:
    spec = load_template("separation_letter")
    return render_pdf(render_docx(spec, validate_terms(spec, sample_terms(spec))))


@pytest.fixture(scope="module")
def chair_signed(letter_pdf: bytes) -> bytes:
    return stamp_signature(letter_pdf, signer_name=CHAIR, signature_png=typed_signature_png(CHAIR),
                           signed_at=SIGNED_AT, fill_day_blank=False)


@pytest.fixture(scope="module")
def executive_signed(letter_pdf: bytes) -> bytes:
    return stamp_signature(letter_pdf, signer_name=EXECUTIVE,
                           signature_png=typed_signature_png(EXECUTIVE), signed_at=SIGNED_AT,
                           fill_day_blank=True)


def page_text(pdf: bytes, index: int) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[index].extract_text()


def blue_ink_above(pdf: bytes, name: str, *, height: float = 36) -> int:
    """Count blue pixels (signature ink, not black type) in a band above a printed name."""
    spot = find_signature_spot(pdf, name)
    document = pdfium.PdfDocument(pdf)
    image = document[spot.page_index].render(scale=1).to_pil().convert("RGB")
    page_height = image.height
    x0, _, _, top = spot.name_box
    band = image.crop((int(x0), int(page_height - top - height), int(x0 + 200),
                       int(page_height - top)))
    document.close()
    return sum(1 for r, _g, b in band.getdata() if b - r > 40)


# --- finding the signature blocks -------------------------------------------------------------


def test_signature_spots_are_the_blocks_on_the_last_page(letter_pdf):
    chair = find_signature_spot(letter_pdf, CHAIR)
    executive = find_signature_spot(letter_pdf, EXECUTIVE)
    assert chair.page_index == executive.page_index == LAST_PAGE
    # The chair's block is indented 3.25 inches; the executive's starts at the left margin.
    assert chair.name_box[0] == pytest.approx(72 + 3.25 * 72, abs=2)
    assert executive.name_box[0] == pytest.approx(72, abs=2)
    assert chair.name_box[1] > executive.name_box[1]
    # Each signature line is the row of underscores just above the printed name.
    for spot in (chair, executive):
        assert spot.line_box[0] == pytest.approx(spot.name_box[0], abs=2)
        assert 0 < spot.line_box[1] - spot.name_box[3] < 10
        assert spot.line_box[2] - spot.line_box[0] > 150


def test_an_unknown_signer_has_no_signature_block(letter_pdf):
    with pytest.raises(DocumentError, match="cannot find the signature block of 'Jane Doe'"):
        find_signature_spot(letter_pdf, "Jane Doe")


def test_day_blank_is_found_before_day_of(letter_pdf):
    found = find_day_blank(letter_pdf)
    assert found is not None
    page_index, (x0, y0, x1, _y1) = found
    executive = find_signature_spot(letter_pdf, EXECUTIVE)
    assert page_index == LAST_PAGE
    assert x1 - x0 == pytest.approx(18, abs=3)  # three underscores of 12-point type
    assert executive.line_box[1] < y0 < executive.line_box[1] + 60


def test_signature_page_index_and_extraction(letter_pdf):
    assert signature_page_index(letter_pdf, [CHAIR, EXECUTIVE]) == LAST_PAGE
    page = extract_pages(letter_pdf, [LAST_PAGE])
    assert len(PdfReader(io.BytesIO(page)).pages) == 1
    assert "Acknowledged and agreed to" in page_text(page, 0)
    with pytest.raises(DocumentError, match="has 3 pages; there is no page 4"):
        extract_pages(letter_pdf, [3])


# --- stamping ---------------------------------------------------------------------------------


def test_chair_signature_lands_above_the_chairs_name_only(letter_pdf, chair_signed):
    assert blue_ink_above(letter_pdf, CHAIR) == 0
    assert blue_ink_above(chair_signed, CHAIR) > 300
    assert blue_ink_above(chair_signed, EXECUTIVE) == 0


def test_executive_signature_lands_above_the_executives_name(executive_signed):
    assert blue_ink_above(executive_signed, EXECUTIVE) > 300
    assert blue_ink_above(executive_signed, CHAIR) == 0


def test_executive_fills_the_day_and_the_company_does_not(chair_signed, executive_signed):
    assert "28th" in page_text(executive_signed, LAST_PAGE).split()
    assert "28th" not in page_text(chair_signed, LAST_PAGE)


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
    both = stamp_signature(chair_signed, signer_name=EXECUTIVE,
                           signature_png=typed_signature_png(EXECUTIVE), signed_at=SIGNED_AT,
                           fill_day_blank=True)
    assert blue_ink_above(both, CHAIR) > 300 and blue_ink_above(both, EXECUTIVE) > 300


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


# --- certificate and assembly -----------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate() -> bytes:
    signers = [
        CertificateSigner(name=CHAIR, email="eliot.protsch@capstone.example",
                          role="Chairman, Board of Directors", method="typed",
                          consent_at=SIGNED_AT, first_viewed_at=SIGNED_AT, signed_at=SIGNED_AT,
                          ip="203.0.113.7",
                          user_agent="Mozilla/5.0 (X11; Linux x86_64) " + "Gecko/" * 60,
                          signature_png=typed_signature_png(CHAIR)),
        CertificateSigner(name="John & <b>Tucker</b>", email="jtucker@example.com",
                          role="Executive", method="paper", consent_at=None,
                          first_viewed_at=SIGNED_AT, signed_at=SIGNED_AT, ip="2001:db8::1",
                          user_agent=None, signature_png=None),
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


def test_certificate_states_who_signed_how_and_when(certificate):
    text = certificate_text(certificate)
    for expected in ("Certificate of completion", CHAIR, "eliot.protsch@capstone.example",
                     "jtucker@example.com", "Typed signature", "Signed on paper",
                     "203.0.113.7", "2001:db8::1", "2006-07-28 14:03:11 UTC", "0f" * 32,
                     "envelope sent", "env-0728"):
        assert expected in text, expected
    # Markup typed by users is shown as text, not obeyed or lost.
    assert "John & <b>Tucker</b>" in text
    assert "Separation letter & <release>" in text


def test_certificate_wraps_a_long_user_agent(certificate):
    text = certificate_text(certificate).replace(" ", "")
    assert "Gecko/" * 60 in text


def test_assembled_pdf_has_letter_signed_pages_then_certificate(letter_pdf, chair_signed,
                                                               executive_signed, certificate):
    signed_pages = [extract_pages(chair_signed, [LAST_PAGE]),
                    extract_pages(executive_signed, [LAST_PAGE])]
    executed = assemble_executed_pdf(letter_pdf, signed_pages, certificate,
                                     metadata={"Title": "Separation letter",
                                               "CounterpartEnvelope": "env-0728"})
    reader = PdfReader(io.BytesIO(executed))
    certificate_pages = len(PdfReader(io.BytesIO(certificate)).pages)
    assert len(reader.pages) == 3 + 2 + certificate_pages
    texts = [" ".join(page.extract_text().split()) for page in reader.pages]
    assert texts[0].startswith(" ".join(page_text(letter_pdf, 0).split())[:200])
    assert "28th" not in texts[2]  # the letter's own signature page is unsigned
    assert "Signed electronically" in texts[3] and "28th" not in texts[3]
    assert "Signed electronically" in texts[4] and "28th" in texts[4]
    assert texts[5].count("Certificate of completion") >= 1
    assert reader.metadata["/Title"] == "Separation letter"
    assert reader.metadata["/CounterpartEnvelope"] == "env-0728"

    naive = PdfWriter()
    for part in (letter_pdf, *signed_pages, certificate):
        naive.append(PdfReader(io.BytesIO(part)))
    buffer = io.BytesIO()
    naive.write(buffer)
    assert len(executed) < 0.8 * len(buffer.getvalue())


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
    with pytest.raises(DocumentError, match=r"big.pdf is 3\d KB; the largest file accepted is"):
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
