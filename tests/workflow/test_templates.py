"""Every template in templates/, and a tiny one built here: its terms, its words, its fields.

Each template's variables are its schema's fields, it reproduces its reference text word for
word (in the .docx and in the PDF), and every party of its schema signs at exactly one
``sign_here`` field, which the PDF places exactly. The side letter, built with python-docx in
the test from the schema in tests/data/templates/, shows the template language's signing
fields on their own: their formatting, their places, and the mistakes a template author can
make.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import zipfile
from pathlib import Path

import docx
import pytest
from docx.shared import Pt
from pypdf import PdfReader
from support import docx_text, letter_words, pdftotext

from workflow.errors import TemplateError
from workflow.pdfs import signing_fields, stamp_signature, typed_signature_png
from workflow.render import (
    DATE_LINE,
    SIGNATURE_LINE,
    check_signing_fields,
    render_docx,
    template_variables,
)
from workflow.schema import (
    DEFAULT_TEMPLATE_DIR,
    list_templates,
    load_template,
    sample_terms,
    validate_terms,
)

TEMPLATES = list_templates()
FIXTURE_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "templates" / "side_letter.toml"
SIGNED_ON = dt.date(2027, 3, 3)


def reference_words(name: str) -> list[str]:
    return letter_words((DEFAULT_TEMPLATE_DIR / f"{name}.reference.txt").read_text("utf-8"))


def test_there_are_templates_of_more_than_one_kind():
    assert {"separation_letter", "consulting_agreement"} <= set(TEMPLATES)
    assert len(load_template("consulting_agreement").parties) == 3


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_variables_are_the_schema_fields(name):
    spec = load_template(name)
    assert template_variables(spec) == set(spec.fields)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_party_signs_at_one_field(name):
    spec = load_template(name)
    assert spec.parties, f"{name} declares no parties"
    assert check_signing_fields(spec, spec.docx_path.read_bytes()) == []


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_example_terms_reproduce_the_reference_text(name):
    spec = load_template(name)
    rendered = render_docx(spec, validate_terms(spec, sample_terms(spec)))
    assert letter_words(docx_text(rendered)) == reference_words(name)
    # Nothing of the signing fields' tags is left in the document.
    with zipfile.ZipFile(io.BytesIO(rendered)) as archive:
        body = archive.read("word/document.xml").decode("utf-8")
    assert "sign_here(" not in body and "date_signed(" not in body and "CPFIELD" not in body


@pytest.fixture(scope="module")
def template_pdfs(converter) -> dict[str, bytes]:
    pdfs = {}
    for name in TEMPLATES:
        spec = load_template(name)
        pdfs[name] = converter.convert_bytes(
            render_docx(spec, validate_terms(spec, sample_terms(spec))))
    return pdfs


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_pdf_is_the_reference_text_with_a_field_for_each_party(name, template_pdfs):
    pdf = template_pdfs[name]
    reader = PdfReader(io.BytesIO(pdf))
    assert letter_words("\n".join(p.extract_text() for p in reader.pages)) == \
        reference_words(name)
    spec = load_template(name)
    fields = signing_fields(pdf)
    assert set(fields.signatures) == set(spec.signers)
    boxes = [field.box for field in fields.signatures.values()]
    for index, box in enumerate(boxes):
        # Each field is a line of its own: no two parties' boxes overlap on a page.
        for other, other_box in enumerate(boxes):
            same_page = list(fields.signatures.values())[other].page_index == \
                list(fields.signatures.values())[index].page_index
            if other != index and same_page:
                assert box[3] <= other_box[1] or other_box[3] <= box[1] or \
                    box[2] <= other_box[0] or other_box[2] <= box[0]
        assert box[2] - box[0] > 150


@pytest.mark.parametrize("name", TEMPLATES)
def test_signed_dates_are_text_of_the_document(name, template_pdfs, converter):
    spec = load_template(name)
    terms = validate_terms(spec, sample_terms(spec))
    signed = converter.convert_bytes(render_docx(
        spec, terms, signing={role: SIGNED_ON for role in spec.signers}))
    text = pdftotext(signed)
    dates = signing_fields(signed).dates
    assert dates, f"{name} prints no date of signing"
    assert text.count("March 3, 2027") >= len(dates) or "3rd day of March, 2027" in text
    # No blank date line is left (a signature line is a longer rule).
    assert not re.search(f"(?<!_){DATE_LINE}(?!_)", text)


# --- the side letter: the template language's signing fields on their own ------------------


def side_letter(folder: Path, *, signing_lines: list[str] | None = None) -> Path:
    """Write the side letter's schema and a .docx made with python-docx into ``folder``."""
    shutil.copy(FIXTURE_SCHEMA, folder / "side_letter.toml")
    document = docx.Document()
    document.add_paragraph("We confirm the side terms agreed between {{ buyer_name }} and "
                           "{{ seller_name }}.")
    table = document.add_table(rows=1, cols=2)
    lines = signing_lines or [
        "{{ sign_here('buyer') }}", "{{ buyer_name }}", "Dated {{ date_signed('buyer') }}."]
    for line in lines:
        table.cell(0, 0).add_paragraph(line)
    seller = table.cell(0, 1)
    run = seller.add_paragraph().add_run("{{ sign_here('seller') }}")
    run.bold, run.font.size = True, Pt(14)
    seller.add_paragraph("{{ seller_name }}")
    seller.add_paragraph("On {{ date_signed('seller') }}, in Lisbon.")
    document.save(folder / "side_letter.docx")
    return folder


@pytest.fixture()
def side(tmp_path):
    spec = load_template("side_letter", side_letter(tmp_path))
    return spec, validate_terms(spec, sample_terms(spec))


def test_the_side_letter_has_its_fields_and_keeps_their_formatting(side):
    spec, terms = side
    assert check_signing_fields(spec, spec.docx_path.read_bytes()) == []
    rendered = render_docx(spec, terms, signing={"seller": SIGNED_ON})
    document = docx.Document(io.BytesIO(rendered))
    seller = document.tables[0].cell(0, 1).paragraphs
    (line,) = [run for run in seller[1].runs if run.text]
    assert line.text == SIGNATURE_LINE and line.bold and line.font.size == Pt(14)
    assert seller[3].text == "On March 3, 2027, in Lisbon."
    assert document.tables[0].cell(0, 0).paragraphs[3].text == f"Dated {DATE_LINE}."
    body = document.element.body.xml
    for bookmark in ("sign_here_buyer", "end_sign_here_buyer", "date_signed_seller",
                     "end_date_signed_seller"):
        assert f'w:name="{bookmark}"' in body


def test_the_side_letter_pdf_places_each_party_at_its_field(side, converter):
    spec, terms = side
    pdf = converter.convert_bytes(render_docx(spec, terms))
    fields = signing_fields(pdf)
    buyer, seller = fields.signature("buyer"), fields.signature("seller")
    # Side by side in the table: the seller's field is right of the buyer's.
    assert buyer.line_box[2] <= seller.line_box[0]
    assert abs(buyer.page_index - seller.page_index) == 0
    signed = stamp_signature(pdf, role="seller", signature_png=typed_signature_png("Tomás Ruiz"),
                             signed_on=SIGNED_ON)
    assert "Signed electronically on March 3, 2027" in pdftotext(signed)
    assert signing_fields(signed).positions() == fields.positions()


@pytest.mark.parametrize(("lines", "problem"), [
    (["{{ buyer_name }}"], "The buyer (buyer) has no signature field; put "
                           "{{ sign_here('buyer') }} where they sign"),
    (["{{ sign_here('buyer') }}", "{{ sign_here('buyer') }}"],
     "sign_here('buyer') appears 2 times; a party signs in one place"),
    (["{{ sign_here('buyer') }}", "{{ sign_here('witness') }}"],
     "sign_here('witness') names a role the schema does not declare (its parties: buyer, "
     "seller)"),
    (["{{ sign_here('buyer') }}", "{{ date_signed('notary') }}"],
     "date_signed('notary') names a role the schema does not declare"),
    (["{{ sign_here(buyer_name) }}"], "sign_here names its party's role in quotes"),
])
def test_signing_field_mistakes_are_listed(tmp_path, lines, problem):
    spec = load_template("side_letter", side_letter(tmp_path, signing_lines=lines))
    problems = check_signing_fields(spec, spec.docx_path.read_bytes())
    assert any(problem in p for p in problems), problems
    assert all(p.startswith("side_letter.docx: ") for p in problems)


def test_a_field_the_schema_does_not_declare_is_refused_when_rendered(tmp_path):
    spec = load_template("side_letter", side_letter(
        tmp_path, signing_lines=["{{ sign_here('buyer') }}", "{{ sign_here('witness') }}"]))
    with pytest.raises(TemplateError, match=r"sign_here\('witness'\): the schema declares no "
                                            r"party with that role"):
        render_docx(spec, validate_terms(spec, sample_terms(spec)))
    twice = load_template("side_letter", side_letter(
        tmp_path, signing_lines=["{% for n in [1, 2] %}{{ sign_here('buyer') }}{% endfor %}"]))
    with pytest.raises(TemplateError, match=r"sign_here\('buyer'\) is printed twice"):
        render_docx(twice, validate_terms(twice, sample_terms(twice)))


def test_a_field_outside_the_text_is_refused(tmp_path):
    folder = side_letter(tmp_path)
    document = docx.Document(folder / "side_letter.docx")
    document.core_properties.title = "{{ date_signed('buyer') }}"
    document.save(folder / "side_letter.docx")
    spec = load_template("side_letter", folder)
    with pytest.raises(TemplateError, match="not in its properties"):
        render_docx(spec, validate_terms(spec, sample_terms(spec)))
