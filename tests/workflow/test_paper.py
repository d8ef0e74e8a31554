"""A scan counts as signed only with ink on its signer's own line, whatever the scanner did."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter
from scans import scan_of

from workflow import paper
from workflow.errors import CounterpartError, DocumentError
from workflow.pdfs import extract_pages, read_upload, signing_field, signing_fields

CHAIR = "company"
EXECUTIVE = "executive"
CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


@pytest.fixture(scope="module")
def letter_pdf(reference_pdf: bytes) -> bytes:
    return reference_pdf


def check(letter_pdf: bytes, scan: bytes, role: str) -> paper.ScanCheck:
    upload = read_upload(scan, filename="scan.pdf", allowed_page_counts={1, 3},
                         max_bytes=30_000_000)
    pages = paper.rasterise_upload(upload.pdf, width_px=1224)
    return paper.check_scan(letter_pdf, pages, role)


@pytest.mark.parametrize("options", [
    {"angle": 2.6, "shift": (18.0, -12.0), "paper": "a4", "noise": 14.0},
    {"angle": -1.2, "shift": (-25.0, 20.0), "paper": "letter", "noise": 22.0, "dpi": 150},
    {"angle": 3.0, "shift": (4.0, 28.0), "paper": "a4", "noise": 6.0, "dpi": 90},
], ids=["a4-skewed", "letter-noisy", "a4-three-degrees"])
def test_ink_on_the_signers_line_is_found_through_skew_shift_scale_and_noise(letter_pdf,
                                                                               options):
    scan = scan_of(letter_pdf, signed_by=[EXECUTIVE], **options)
    executive = check(letter_pdf, scan, EXECUTIVE)
    assert executive.matched and executive.ink_found and not executive.unchanged
    chair = check(letter_pdf, scan, CHAIR)
    assert chair.matched and not chair.ink_found and not chair.unchanged


def test_a_scan_with_no_new_mark_is_the_unsigned_document(letter_pdf):
    scan = scan_of(letter_pdf, angle=-2.2, shift=(-15.0, 9.0), noise=20.0)
    for signer in (CHAIR, EXECUTIVE):
        result = check(letter_pdf, scan, signer)
        assert result.matched and result.unchanged and not result.ink_found
    # The letter PDF's own signature page, rewritten (other bytes, the same page).
    own = check(letter_pdf, extract_pages(letter_pdf, [2]), EXECUTIVE)
    assert own.matched and own.unchanged and own.correlation > 0.99


def test_a_mark_on_another_signers_line_only_is_not_ink_for_this_signer(letter_pdf):
    scan = scan_of(letter_pdf, signed_by=[CHAIR], angle=1.0, paper="letter")
    assert check(letter_pdf, scan, CHAIR).ink_found
    executive = check(letter_pdf, scan, EXECUTIVE)
    assert executive.matched and not executive.unchanged and not executive.ink_found


def test_a_speck_or_a_dot_on_the_line_is_not_a_signature(letter_pdf):
    spot = signing_field(letter_pdf, EXECUTIVE)
    x, y = spot.line_box[0] + 40, spot.line_box[3] + 8
    dot = scan_of(letter_pdf, marks=[(x, y, x + 3, y + 3)])
    result = check(letter_pdf, dot, EXECUTIVE)
    assert not result.ink_found


def test_handwriting_in_the_day_blank_is_not_the_executives_signature(letter_pdf):
    # "this ___ day of July, 2006" (the executive's date field) sits in the band above the
    # executive's line; a day written there by hand is not a signature.
    from pypdf import PdfReader as Reader

    text = Reader(io.BytesIO(letter_pdf)).pages[2].extract_text()
    assert "day of" in text
    date_field = signing_fields(letter_pdf).dates[EXECUTIVE]
    x0, y0, _x1, _y1 = date_field.line_box
    assert paper.ink_region(signing_field(letter_pdf, EXECUTIVE))[3] > y0 + 9
    scan = scan_of(letter_pdf, marks=[(x0 + 1, y0 + 2, x0 + 14, y0 + 9)])
    result = check(letter_pdf, scan, EXECUTIVE)
    assert not result.unchanged and not result.ink_found


def test_the_signature_page_of_a_whole_scanned_letter_is_found(letter_pdf):
    scan = scan_of(letter_pdf, signed_by=[EXECUTIVE], pages=[2, 0, 1], angle=-1.5)
    result = check(letter_pdf, scan, EXECUTIVE)
    assert result.signature_page == 0 and result.ink_found
    in_order = scan_of(letter_pdf, signed_by=[EXECUTIVE], pages=[0, 1, 2])
    assert check(letter_pdf, in_order, EXECUTIVE).signature_page == 2


def test_the_signers_ink_is_cropped_onto_their_line(letter_pdf):
    scan = scan_of(letter_pdf, signed_by=[EXECUTIVE], angle=2.0, shift=(20.0, -15.0))
    result = check(letter_pdf, scan, EXECUTIVE)
    spot = signing_field(letter_pdf, EXECUTIVE)
    x0, y0, x1, y1 = result.crop_box
    line = spot.line_box
    # The crop sits on the line, within the signer's band, above the printed name.
    band = paper.ink_region(spot)
    assert band[0] <= x0 < x1 <= band[2] and band[1] <= y0 < y1 <= band[3]
    assert y0 <= line[3] + 4 and y1 > line[3] + 15
    assert x1 - x0 > 0.5 * (line[2] - line[0])
    image = Image.open(io.BytesIO(result.signature_png))
    assert image.mode == "RGBA"
    # The image covers the crop box at 2 pixels a point, transparent except for the ink.
    assert abs(image.width - (x1 - x0) * paper.PIXELS_PER_POINT) <= 1
    assert abs(image.height - (y1 - y0) * paper.PIXELS_PER_POINT) <= 1
    alpha = np.asarray(image)[..., 3]
    assert 0.02 < (alpha > 128).mean() < 0.4
    assert alpha[0].max() < 128 and alpha[:, 0].max() < 128  # clear edges around the ink


def test_a_page_of_another_document_does_not_match(letter_pdf):
    blank = Image.new("L", (850, 1100), 235)
    buffer = io.BytesIO()
    blank.save(buffer, "PDF", resolution=100)
    result = check(letter_pdf, buffer.getvalue(), EXECUTIVE)
    assert not result.matched and not result.ink_found and not result.unchanged


# --- the handed cases -------------------------------------------------------------------------

def test_the_a4_case_has_ink_for_both_signers_each_in_their_own_block(letter_pdf):
    scan = (CASES / "scan-a4-executive.pdf").read_bytes()
    chair = check(letter_pdf, scan, CHAIR)
    executive = check(letter_pdf, scan, EXECUTIVE)
    assert chair.matched and chair.ink_found
    # The executive signed under their printed name, as people do: that is their ink.
    assert executive.matched and executive.ink_found and not executive.unchanged
    spot = signing_field(letter_pdf, EXECUTIVE)
    assert executive.crop_box[3] <= spot.line_box[1] - 9  # found below the printed name's top
    assert chair.crop_box[1] > spot.line_box[3] + 40  # the chair's ink is far above it


def test_bytes_before_the_header_are_skipped_for_processing():
    data = (CASES / "scan-bytes-before-header.pdf").read_bytes()
    assert not data.startswith(b"%PDF-")
    upload = read_upload(data, filename="scan-bytes-before-header.pdf",
                         allowed_page_counts={1, 3}, max_bytes=5_000_000)
    assert upload.pages == 1 and upload.skipped_bytes == data.index(b"%PDF-")
    assert upload.pdf == data[upload.skipped_bytes:] and not upload.decrypted


def test_the_owner_password_case_opens_and_a_decrypted_copy_is_made():
    data = (CASES / "scan-owner-password-only.pdf").read_bytes()
    assert PdfReader(io.BytesIO(data)).is_encrypted
    upload = read_upload(data, filename="scan-owner-password-only.pdf",
                         allowed_page_counts={1, 3}, max_bytes=5_000_000)
    assert upload.pages == 1 and upload.decrypted
    copy = PdfReader(io.BytesIO(upload.pdf))
    assert not copy.is_encrypted and len(copy.pages) == 1


@pytest.mark.parametrize("algorithm", ["RC4-40", "RC4-128", "AES-128", "AES-256"])
def test_owner_password_only_files_are_read_and_user_passwords_refused(letter_pdf, algorithm):
    def encrypted(user: str) -> bytes:
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(letter_pdf)))
        writer.encrypt(user_password=user, owner_password="owner secret",
                       algorithm=algorithm)
        buffer = io.BytesIO()
        writer.write(buffer)
        return buffer.getvalue()

    upload = read_upload(encrypted(""), filename="owner.pdf", allowed_page_counts={3},
                         max_bytes=5_000_000)
    assert upload.decrypted and upload.pages == 3
    assert "John R. Tucker" in PdfReader(io.BytesIO(upload.pdf)).pages[2].extract_text()
    with pytest.raises(DocumentError, match="locked.pdf is password-protected"):
        read_upload(encrypted("user secret"), filename="locked.pdf",
                    allowed_page_counts={3}, max_bytes=5_000_000)


def test_the_header_must_come_within_the_first_kilobyte(letter_pdf):
    near = b"\x00" * 1000 + letter_pdf
    assert read_upload(near, filename="near.pdf", allowed_page_counts={3},
                       max_bytes=5_000_000).skipped_bytes == 1000
    with pytest.raises(DocumentError, match="far.pdf is not a PDF file"):
        read_upload(b"\x00" * 1100 + letter_pdf, filename="far.pdf",
                    allowed_page_counts={3}, max_bytes=5_000_000)


def test_rasterising_a_hostile_file_is_refused_in_its_child_process():
    with pytest.raises(DocumentError, match="bad.pdf: its pages could not be drawn"):
        paper.rasterise_upload(b"%PDF-1.4\nnot really", width_px=600, name="bad.pdf")


# --- the date of signing -----------------------------------------------------------------------

SENT = dt.datetime(2006, 7, 20, 9, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2006, 7, 28, 11, 0, tzinfo=dt.UTC)


def test_the_date_of_signing_is_a_real_past_date():
    assert paper.parse_signed_on("2006-07-27", not_before=SENT, now=NOW) == dt.date(2006, 7, 27)
    # Already the 29th in Kiribati (UTC+14) when it is 11:00 on the 28th in London.
    assert paper.parse_signed_on("2006-07-29", not_before=SENT, now=NOW) == dt.date(2006, 7, 29)
    assert paper.parse_signed_on("2006-07-19", not_before=SENT, now=NOW) == dt.date(2006, 7, 19)
    for value, message in (("", "give the date the signer signed"),
                           (None, "give the date the signer signed"),
                           ("28/07/2006", "is not a date written YYYY-MM-DD"),
                           ("2006-02-30", "is not a date written YYYY-MM-DD"),
                           ("2006-07-30", "is in the future"),
                           ("2006-07-18", "is before the letter was ready to sign")):
        with pytest.raises(CounterpartError, match=f"signed_on: .*{message}"):
            paper.parse_signed_on(value, not_before=SENT, now=NOW)
