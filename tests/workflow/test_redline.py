"""Redlines mark exactly the words that changed, as tracked changes Word and LibreOffice show:
accepting them all gives the later version, rejecting them all the earlier one."""

from __future__ import annotations

import copy
import ctypes
import datetime as dt
import io
import re
import zipfile

import docx
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
import pytest
from docx.shared import Pt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from support import pdftotext

from workflow.errors import DocumentError
from workflow.redline import AUTHOR, changed_sentences, changed_terms, redline_docx
from workflow.render import render_docx
from workflow.schema import validate_terms

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DATE = dt.datetime(2025, 1, 31, 16, 5, 9, tzinfo=dt.UTC)
BODY = "word/document.xml"
DROPPED_SENTENCE = (" The Company intends to exercise its repurchase option under the August 4, "
                    "2003 Restricted Stock Agreement to acquire the unvested shares under the "
                    "terms described in the Restricted Stock Agreement.")


def w(tag: str) -> str:
    return f"{{{W}}}{tag}"


def parts(data: bytes) -> dict[str, etree._Element]:
    """The story parts of a .docx (body, headers, footers, notes), parsed."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: etree.fromstring(archive.read(name)) for name in archive.namelist()
                if re.fullmatch(r"word/(document|header\d*|footer\d*|footnotes|endnotes)\.xml",
                                name)}


def marks(data: bytes, part: str = BODY) -> tuple[str, str]:
    """The concatenated deleted text (w:delText) and inserted text (w:t inside w:ins)."""
    root = parts(data)[part]
    deleted = "".join(t.text or "" for t in root.iter(w("delText")))
    inserted = "".join(t.text or "" for ins in root.iter(w("ins")) for t in ins.iter(w("t")))
    return deleted, inserted


def paragraph_texts(root: etree._Element) -> list[str]:
    out = []
    for paragraph in root.iter(w("p")):
        out.append("".join(node.text or "" if node.tag == w("t") else "\t"
                           for node in paragraph.iter(w("t"), w("tab"))))
    return out


def _resolve(root: etree._Element, keep: str) -> etree._Element:
    """Accept (keep="ins") or reject (keep="del") every tracked change of a story."""
    drop = "del" if keep == "ins" else "ins"
    root = copy.deepcopy(root)
    for paragraph in list(root.iter(w("p"))):
        mark = paragraph.find(f"{w('pPr')}/{w('rPr')}/{w(drop)}")
        if mark is not None:  # the paragraph mark goes: what is left joins the next paragraph
            following = paragraph.getnext()
            content = [c for c in paragraph if c.tag != w("pPr")]
            if following is not None and following.tag == w("p"):
                at = 1 if following.find(w("pPr")) is not None else 0
                for offset, child in enumerate(content):
                    following.insert(at + offset, child)
            paragraph.getparent().remove(paragraph)
    for row in list(root.iter(w("tr"))):
        if row.find(f"{w('trPr')}/{w(drop)}") is not None:
            row.getparent().remove(row)
    for element in list(root.iter(w(drop))):
        if element.getparent() is not None and element.getparent().tag not in (w("rPr"),
                                                                                 w("trPr")):
            element.getparent().remove(element)
    for element in list(root.iter(w(keep))):
        parent = element.getparent()
        if parent.tag in (w("rPr"), w("trPr")):
            parent.remove(element)
            continue
        index = parent.index(element)
        for offset, child in enumerate(list(element)):
            parent.insert(index + offset, child)
        parent.remove(element)
    for node in root.iter(w("delText")):
        node.tag = w("t")
    return root


def accepted(data: bytes) -> dict[str, list[str]]:
    return {name: paragraph_texts(_resolve(root, "ins")) for name, root in parts(data).items()}


def rejected(data: bytes) -> dict[str, list[str]]:
    return {name: paragraph_texts(_resolve(root, "del")) for name, root in parts(data).items()}


def texts(data: bytes) -> dict[str, list[str]]:
    return {name: paragraph_texts(root) for name, root in parts(data).items()}


def with_header(template: bytes, text: str) -> bytes:
    document = docx.Document(io.BytesIO(template))
    document.sections[0].header.paragraphs[0].text = text
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture()
def render(spec):
    def render(terms, template: bytes | None = None) -> bytes:
        return render_docx(spec, validate_terms(spec, terms), template=template)
    return render


def check_round_trip(old: bytes, new: bytes, redline: bytes) -> None:
    assert accepted(redline) == texts(new)
    assert rejected(redline) == texts(old)


def test_a_changed_rate_marks_exactly_the_amount(render, reference_terms):
    old, new = render(reference_terms), render({**reference_terms, "hourly_rate": "600"})
    redline = redline_docx(old, new, date=DATE)
    assert marks(redline.docx) == ("$500", "$600")
    check_round_trip(old, new, redline.docx)
    body = parts(redline.docx)[BODY]
    changes = list(body.iter(w("ins"), w("del")))
    assert {c.get(w("author")) for c in changes} == {AUTHOR}
    assert {c.get(w("date")) for c in changes} == {"2025-01-31T16:05:09Z"}
    assert len({c.get(w("id")) for c in changes}) == len(changes)
    # The rest of the letter is untouched: the paragraph keeps its formatting and no other
    # paragraph holds a change.
    changed = [p for p in body.iter(w("p")) if p.find(f".//{w('ins')}") is not None]
    assert len(changed) == 1
    assert changed[0].find(w("pPr")).find(w("jc")).get(w("val")) == "both"


def test_a_date_added_to_a_list_marks_the_date_and_its_joining_words(render, reference_terms):
    old = render(reference_terms)
    new = render({**reference_terms, "cancelled_option_grant_dates": [
        "2006-06-12", "2006-06-22", "2006-07-01"]})
    redline = redline_docx(old, new, date=DATE)
    # "June 12, 2006 and June 22, 2006" becomes "June 12, 2006, June 22, 2006 and July 1, 2006".
    assert marks(redline.docx) == (" and", ", and July 1, 2006")
    [paragraph] = redline.changes
    assert [(s.kind, s.text) for s in paragraph.segments if s.kind != "equal"] == [
        ("delete", " and"), ("insert", ","), ("insert", " and July 1, 2006")]
    check_round_trip(old, new, redline.docx)


def test_a_boolean_that_drops_a_sentence_deletes_that_sentence(render, reference_terms):
    old = render(reference_terms)
    new = render({**reference_terms, "repurchase_unvested_restricted": False})
    redline = redline_docx(old, new, date=DATE)
    assert marks(redline.docx) == (DROPPED_SENTENCE, "")
    check_round_trip(old, new, redline.docx)
    [sentence] = changed_sentences(redline.changes[0])
    assert [(s.kind, s.text) for s in sentence] == [("delete", DROPPED_SENTENCE.lstrip())]


def test_several_changes_in_one_paragraph_are_each_marked(render, reference_terms):
    old = render(reference_terms)
    new = render({**reference_terms, "repurchase_unvested_restricted": False,
                  "cancelled_option_grant_dates": ["2006-06-12", "2006-06-22", "2006-07-01"]})
    redline = redline_docx(old, new, date=DATE)
    assert marks(redline.docx) == (" and" + DROPPED_SENTENCE, ", and July 1, 2006")
    check_round_trip(old, new, redline.docx)


def test_a_term_in_the_page_header_is_marked_in_the_header(spec, render, reference_terms):
    template = with_header(spec.docx_path.read_bytes(), "Confidential: {{ company_short_name }}")
    old = render(reference_terms, template)
    new = render({**reference_terms, "company_short_name": "Turbine Co"}, template)
    redline = redline_docx(old, new, date=DATE)
    headers = [name for name in parts(redline.docx) if "header" in name]
    assert len(headers) == 1
    assert marks(redline.docx, headers[0]) == ("Capstone", "Turbine Co")
    assert marks(redline.docx, BODY) == ("Capstone", "Turbine Co")
    check_round_trip(old, new, redline.docx)
    assert [c.story for c in redline.changes] == ["body", "header"]


def test_inserted_and_deleted_text_keeps_its_run_formatting(render, reference_terms):
    old, new = render(reference_terms), render({**reference_terms, "hourly_rate": "600"})
    styled = []
    for data in (old, new):
        document = docx.Document(io.BytesIO(data))
        for paragraph in document.paragraphs:
            for run in paragraph.runs:
                run.font.size = Pt(11)
                run.font.bold = "$" in run.text or None
        buffer = io.BytesIO()
        document.save(buffer)
        styled.append(buffer.getvalue())
    redline = redline_docx(*styled, date=DATE)
    body = parts(redline.docx)[BODY]
    for kind, text_tag in (("del", "delText"), ("ins", "t")):
        [change] = [c for c in body.iter(w(kind)) if c.getparent().tag == w("p")]
        [run] = change.findall(w("r"))
        properties = run.find(w("rPr"))
        assert properties.find(w("b")) is not None
        assert properties.find(w("sz")).get(w("val")) == "22"
        assert run.find(w(text_tag)).text in ("$500", "$600")
    check_round_trip(*styled, redline.docx)


def _paragraphs_document(paragraphs: list[str], table: list[list[str]]) -> bytes:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    grid = document.add_table(rows=len(table), cols=len(table[0]))
    for row, values in zip(grid.rows, table, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_a_paragraph_in_one_version_only_is_a_whole_inserted_or_deleted_paragraph():
    old = _paragraphs_document(
        ["First clause stays.", "Second clause goes away entirely.", "Third clause stays."],
        [["Shares", "100"], ["Price", "$5"]])
    new = _paragraphs_document(
        ["First clause stays.", "Third clause stays.", "A new fourth clause arrives."],
        [["Shares", "100"], ["Price", "$6"]])
    redline = redline_docx(old, new, date=DATE)
    assert marks(redline.docx) == ("Second clause goes away entirely.$5",
                                   "A new fourth clause arrives.$6")
    body = parts(redline.docx)[BODY]
    deleted = [p for p in body.iter(w("p"))
               if p.find(f"{w('pPr')}/{w('rPr')}/{w('del')}") is not None]
    inserted = [p for p in body.iter(w("p"))
                if p.find(f"{w('pPr')}/{w('rPr')}/{w('ins')}") is not None]
    assert len(deleted) == 1 and len(inserted) == 1
    assert deleted[0].find(f".//{w('t')}") is None  # all its text is deleted text
    assert "".join(t.text for t in deleted[0].iter(w("delText"))) == \
        "Second clause goes away entirely."
    # The table keeps its rows: only the changed cell's words are marked.
    assert body.find(f".//{w('trPr')}") is None
    check_round_trip(old, new, redline.docx)


def test_identical_documents_make_a_redline_with_no_changes(render, reference_terms):
    letter = render(reference_terms)
    redline = redline_docx(letter, letter, date=DATE)
    assert redline.changes == ()
    assert marks(redline.docx) == ("", "")
    assert texts(redline.docx) == texts(letter)


def test_a_file_that_is_not_a_word_document_is_named(render, reference_terms):
    letter = render(reference_terms)
    with pytest.raises(DocumentError, match="^version 2: not a Word document"):
        redline_docx(letter, b"%PDF-1.7", date=DATE, new_name="version 2")
    with pytest.raises(DocumentError, match="^version 1: not a Word document"):
        redline_docx(b"PK\x03\x04", letter, date=DATE, old_name="version 1")


def test_changed_terms_lists_only_the_terms_that_differ(spec):
    old = {"hourly_rate": "500", "letter_date": "2006-07-24", "cancelled": ["2006-06-12"]}
    new = {"hourly_rate": "600", "letter_date": "2006-07-24", "cancelled": []}
    assert changed_terms(["letter_date", "hourly_rate", "cancelled"], old, new) == {
        "hourly_rate": ("500", "600"), "cancelled": (["2006-06-12"], [])}
    assert changed_terms(spec.fields, old, old) == {}


def _stroke_lines(page: pdfium.PdfPage) -> list[tuple[tuple[float, ...], tuple[int, int, int]]]:
    lines = []
    for obj in page.get_objects():
        if obj.type != pdfium_raw.FPDF_PAGEOBJ_PATH:
            continue
        r, g, b, a = (ctypes.c_uint() for _ in range(4))
        pdfium_raw.FPDFPageObj_GetStrokeColor(obj, r, g, b, a)
        lines.append((obj.get_bounds(), (r.value, g.value, b.value)))
    return lines


def _word_marking(pdf: bytes, word: str) -> tuple[str, tuple[int, int, int]]:
    """Say how a word is drawn on its page: "underlined", "struck" or "plain", and its colour."""
    document = pdfium.PdfDocument(pdf)
    for page in document:
        textpage = page.get_textpage()
        text = textpage.get_text_range()
        at = text.find(word)
        if at < 0:
            continue
        boxes = [textpage.get_charbox(at + i) for i in range(len(word))]
        left, right = min(b[0] for b in boxes), max(b[2] for b in boxes)
        bottom, top = min(b[1] for b in boxes), max(b[3] for b in boxes)
        r, g, b, a = (ctypes.c_uint() for _ in range(4))
        pdfium_raw.FPDFText_GetFillColor(textpage, at, r, g, b, a)
        colour = (r.value, g.value, b.value)
        for (x0, y0, x1, y1), stroke in _stroke_lines(page):
            if stroke != colour or min(x1, right) - max(x0, left) < 0.5 * (right - left):
                continue  # not this colour, or under (or through) another word
            middle = (y0 + y1) / 2
            if bottom + 0.25 * (top - bottom) < middle < top - 0.25 * (top - bottom):
                return "struck", colour
            if bottom - 0.3 * (top - bottom) < middle <= bottom + 0.1 * (top - bottom):
                return "underlined", colour
        return "plain", colour
    raise AssertionError(f"{word!r} is not in the PDF")


def _without_markup_view(data: bytes) -> bytes:
    """A copy of a .docx saved to show the final text without its changes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "word/settings.xml":
                content = content.replace(b"<w:zoom ", b'<w:revisionView w:markup="0" '
                                          b'w:insDel="0" w:formatting="0"/><w:zoom ', 1)
                assert b"revisionView" in content
            target.writestr(info, content)
    return out.getvalue()


def test_libreoffice_opens_the_redline_and_its_pdf_shows_both_texts_marked(
        converter, render, reference_terms):
    old = render(reference_terms)
    # Saved by a Word showing no markup: the redline still opens showing its changes.
    new = _without_markup_view(render({**reference_terms, "hourly_rate": "600",
                                       "repurchase_unvested_restricted": False}))
    pdf = converter.convert_bytes(redline_docx(old, new, date=DATE).docx)
    words = pdftotext(pdf)
    assert "rate of $500$600 per hour" in words
    assert "The Company intends to exercise its repurchase option" in words
    deleted, deleted_colour = _word_marking(pdf, "$500")
    inserted, inserted_colour = _word_marking(pdf, "$600")
    assert (deleted, inserted) == ("struck", "underlined")
    assert deleted_colour == inserted_colour != (0, 0, 0)
    assert _word_marking(pdf, "Dear John")[0] == "plain"


_WORDS = st.sampled_from(["the", "Company", "shall", "pay", "$500", "$600", "2,000,000",
                          "July", "1,", "2006", "and", "(i)", "“Agreement”", "clause."])
_PARAGRAPH = st.lists(_WORDS, min_size=0, max_size=12).map(" ".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=st.lists(_PARAGRAPH, min_size=1, max_size=6),
       new=st.lists(_PARAGRAPH, min_size=1, max_size=6))
def test_accepting_or_rejecting_every_change_gives_either_version_whatever_the_edit(old, new):
    before = _paragraphs_document(old, [["a", "b"]])
    after = _paragraphs_document(new, [["a", "c"]])
    redline = redline_docx(before, after, date=DATE)
    check_round_trip(before, after, redline.docx)
    deleted, inserted = marks(redline.docx)
    # Only words that differ are marked: unchanged documents carry no marks at all.
    if old == new:
        assert (deleted, inserted) == ("b", "c")
