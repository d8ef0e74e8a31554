"""The PDF of the reference terms is the reference letter, word for word, in embedded fonts."""

from __future__ import annotations

import io
import subprocess

import pypdf
from support import letter_words


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_words_equal_the_reference_letter(reference_pdf, reference_words):
    assert letter_words(pdf_text(reference_pdf)) == reference_words


def test_pdf_is_three_letter_pages_in_liberation_serif(reference_pdf):
    reader = pypdf.PdfReader(io.BytesIO(reference_pdf))
    assert len(reader.pages) == 3
    for page in reader.pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (round(width), round(height)) == (612, 792)  # US Letter in points
    fonts = subprocess.run(["pdffonts", "-"], input=reference_pdf, capture_output=True,
                           check=True).stdout.decode()
    rows = [line.split() for line in fonts.splitlines()[2:] if line.strip()]
    assert rows, fonts
    assert all("LiberationSerif" in row[0] for row in rows), fonts
    # pdffonts' "emb" column: every font is embedded.
    assert all(row[-5] == "yes" for row in rows), fonts


def test_page_numbers_from_page_two(reference_pdf):
    reader = pypdf.PdfReader(io.BytesIO(reference_pdf))
    last_lines = [page.extract_text().strip().splitlines()[-1].strip() for page in reader.pages]
    assert last_lines[1:] == ["2", "3"]
    assert last_lines[0] != "1"
