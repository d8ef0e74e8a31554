"""Whatever people type in a text field comes out intact in the .docx and the PDF."""

from __future__ import annotations

import io
import subprocess
import unicodedata
import zipfile

import pypdf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import docx_text

from workflow.render import render_docx
from workflow.schema import sample_terms, validate_terms

# Markup characters, quotes, accents (precomposed and combining), right-to-left scripts,
# emoji and ordinary letters: what names and titles really contain, and what breaks XML.
SPECIAL = "&<>\"'’“”—–-.,;:()/#%$@!?*+=[]{}|\\^~`"
ALPHABET = st.one_of(
    st.sampled_from(SPECIAL),
    st.characters(codec="utf-8", categories=["Lu", "Ll", "Lo", "Mn", "Nd", "Zs", "So"],
                  exclude_characters="\u2028\u2029"),
    st.sampled_from("éüñçøåßÉÖ" "שלוםمرحبا" "東京" "😀🎉👩‍⚖️"),
)


def text_values(max_size: int = 200) -> st.SearchStrategy[str]:
    return st.text(ALPHABET, min_size=1, max_size=max_size).map(str.strip).filter(
        lambda s: bool(s) and unicodedata.category(s[0]) != "Mn")


def terms_with(spec, values: dict[str, str]):
    return validate_terms(spec, {**sample_terms(spec), **values})


def flat(text: str) -> str:
    return "".join(unicodedata.normalize("NFC", text).split())


TEXT_FIELDS = ["company_name", "company_short_name", "executive_full_name",
               "executive_first_name", "executive_positions", "inducement_title",
               "chair_name", "chair_title"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({key: text_values() for key in TEXT_FIELDS}))
def test_docx_keeps_every_character(spec, values):
    data = render_docx(spec, terms_with(spec, values))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
    text = docx_text(data)
    for key, value in values.items():
        assert value.strip() in text, key
    assert value.strip() in text
    assert values["company_name"].strip().upper() in text
    assert text.splitlines()[-1] == values["executive_full_name"].strip()


# Whole words, as people type them: PDF text extraction reads words back reliably, but not
# arbitrary sequences of combining marks on letters of another script.
WORDS = st.one_of(
    st.sampled_from(["O'Brien", "&", "<Sons>", '"Ltd"', "Zoë", "Ångström", "e\u0301cole",
                     "Nguyễn", "שלום", "עולם", "مرحبا", "東京", "😀", "Ünïcødé", "—", "50%",
                     "A&B", "x<y>z", "Łukasz", "Dvořák", "İstanbul"]),
    st.text(st.characters(codec="ascii", categories=["Lu", "Ll", "Nd"]), min_size=1,
            max_size=12),
)


def word_values(max_words: int) -> st.SearchStrategy[str]:
    return st.lists(WORDS, min_size=1, max_size=max_words).map(" ".join).filter(
        lambda s: len(s) <= 200)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(company=word_values(12), executive=word_values(4), title=word_values(12))
# Without a CJK font installed, LibreOffice drew these as empty boxes.
@example(company="O'Brien", executive="O'Brien", title="東京 😀")
def test_pdf_converts_and_keeps_the_words(spec, converter, company, executive, title):
    terms = terms_with(spec, {"company_name": company, "executive_full_name": executive,
                              "chair_title": title})
    pdf = converter.convert_bytes(render_docx(spec, terms))
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert 3 <= len(reader.pages) <= 6
    # Text extractors disagree on the order of combining marks and of words in mixed
    # left-to-right and right-to-left lines, and add or drop spaces around emoji: each word
    # is intact if either extractor reads it back, whitespace aside.
    extracted = [
        "\n".join(page.extract_text() for page in reader.pages),
        subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf,
                       capture_output=True, check=True).stdout.decode(),
    ]
    for value in (company, executive, title):
        for word in value.split():
            assert any(flat(word) in flat(text) for text in extracted), (word, value)
