"""A scan that carries scripts, actions, links, form fields or attachments reaches the executed
letter as pictures only; the upload itself is kept byte for byte as evidence."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import numpy as np
import pypdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    FloatObject,
    IndirectObject,
    NameObject,
    NumberObject,
    TextStringObject,
)
from scans import scan_of

from workflow import convert
from workflow import envelopes as env
from workflow.accounts import create_user
from workflow.letters import create_letter, generate_document, pending_documents
from workflow.models import Counterpart, Document, Envelope
from workflow.paper import inert_copy
from workflow.seal import load_or_create_sealer

STAFF = env.Actor("ann@example.com", "10.0.0.1", "pytest staff browser")
SIGNER = env.Actor("signer", "203.0.113.7", "pytest signer browser")
PAYLOAD = b"MZ this is the attached program"


@pytest.fixture(autouse=True)
def _one_libreoffice(converter, monkeypatch):
    monkeypatch.setattr(convert, "_default", converter)


@pytest.fixture(scope="module")
def sealer(tmp_path_factory):
    return load_or_create_sealer(tmp_path_factory.mktemp("seal"))


@pytest.fixture()
def letter_id(database, converter, reference_terms):
    with database.transaction() as session:
        user = create_user(session, "ann@example.com", "a long password")
        letter_id = create_letter(session, "separation_letter", reference_terms, user).id
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)
    return letter_id


def hostile(scan: bytes) -> bytes:
    """The scan with JavaScript run on opening, a launch action, a link over the whole page,
    a form field and an attached file."""
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(scan)))
    page = writer.pages[0]
    width, height = float(page.mediabox.width), float(page.mediabox.height)
    writer._root_object[NameObject("/OpenAction")] = writer._add_object(DictionaryObject({
        NameObject("/S"): NameObject("/JavaScript"),
        NameObject("/JS"): TextStringObject("app.alert('opened');")}))
    link = DictionaryObject({
        NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Link"),
        NameObject("/Rect"): ArrayObject([FloatObject(0), FloatObject(0), FloatObject(width),
                                          FloatObject(height)]),
        NameObject("/Border"): ArrayObject([NumberObject(0)] * 3),
        NameObject("/A"): DictionaryObject({
            NameObject("/S"): NameObject("/URI"),
            NameObject("/URI"): TextStringObject("https://evil.example/verify")})})
    launch = DictionaryObject({
        NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Link"),
        NameObject("/Rect"): ArrayObject([FloatObject(0), FloatObject(0), FloatObject(30),
                                          FloatObject(30)]),
        NameObject("/A"): DictionaryObject({
            NameObject("/S"): NameObject("/Launch"),
            NameObject("/F"): TextStringObject("calc.exe")})})
    field = DictionaryObject({
        NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Widget"),
        NameObject("/FT"): NameObject("/Tx"), NameObject("/T"): TextStringObject("hidden_field"),
        NameObject("/V"): TextStringObject("planted value"),
        NameObject("/Rect"): ArrayObject([FloatObject(width - 40), FloatObject(2),
                                          FloatObject(width - 2), FloatObject(12)])})
    field_ref = writer._add_object(field)
    page[NameObject("/Annots")] = ArrayObject([writer._add_object(link),
                                               writer._add_object(launch), field_ref])
    writer._root_object[NameObject("/AcroForm")] = DictionaryObject({
        NameObject("/Fields"): ArrayObject([field_ref])})
    writer.add_attachment("payload.exe", PAYLOAD)
    names = writer._root_object["/Names"]
    names[NameObject("/JavaScript")] = DictionaryObject({NameObject("/Names"): ArrayObject([
        TextStringObject("print"), writer._add_object(DictionaryObject({
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject("this.print();")}))])})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _values(value: Any, seen: set[int], reader: pypdf.PdfReader):
    """Every dictionary and stream reachable from ``value``, each indirect object once."""
    if isinstance(value, IndirectObject):
        if value.idnum in seen:
            return
        seen.add(value.idnum)
        value = value.get_object()
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _values(item, seen, reader)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item, seen, reader)


def active_content(pdf: bytes) -> set[str]:
    """Walk every object of a PDF (every one its cross-reference tables list, and everything
    they reach) and name what could act: scripts, actions, links, form fields, attachments."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    roots: list[Any] = [reader.trailer]
    for generation, numbers in reader.xref.items():
        roots += [IndirectObject(n, generation, reader) for n in numbers]
    roots += [IndirectObject(n, 0, reader) for n in reader.xref_objStm]
    found: set[str] = set()
    seen: set[int] = set()
    for root in roots:
        for item in _values(root, seen, reader):
            keys = set(item.keys())
            action = item.get("/S")
            if "/JS" in keys or action == "/JavaScript" or "/JavaScript" in keys:
                found.add("javascript")
            if action == "/Launch":
                found.add("launch")
            if action == "/URI" or "/URI" in keys:
                found.add("uri")
            if item.get("/Subtype") == "/Link":
                found.add("link")
            if "/OpenAction" in keys or "/AA" in keys:
                found.add("open action")
            if "/EmbeddedFiles" in keys or item.get("/Type") == "/EmbeddedFile" or \
                    item.get("/Subtype") == "/FileAttachment" or "/EF" in keys:
                found.add("embedded file")
            if "/FT" in keys and item.get("/FT") != "/Sig":
                found.add("form field")
    return found


HOSTILE = {"javascript", "launch", "uri", "link", "open action", "embedded file", "form field"}


def test_an_inert_copy_is_pictures_of_the_pages_at_their_size(letter_id, database):
    with database.transaction() as session:
        envelope, _ = env.send_envelope(session, letter_id, None, STAFF)
        letter_pdf = env.letter_pdf_for(session, envelope)
    scan = hostile(scan_of(letter_pdf, signed_by=["executive"], pages=[0, 1, 2],
                           paper="a4"))
    assert active_content(scan) == HOSTILE
    copy = inert_copy(scan)
    assert active_content(copy) == set()
    original, inert = pypdf.PdfReader(io.BytesIO(scan)), pypdf.PdfReader(io.BytesIO(copy))
    assert [tuple(p.mediabox) for p in inert.pages] == \
        [pytest.approx(tuple(p.mediabox), abs=0.01) for p in original.pages]
    for page in inert.pages:
        assert not page.get("/Annots") and not page.get("/AA")
    # Each page is one picture filling it, and has no text.
    document = pdfium.PdfDocument(copy)
    try:
        for index in range(len(document)):
            page = document[index]
            objects = list(page.get_objects())
            assert [obj.type for obj in objects] == [pdfium_c.FPDF_PAGEOBJ_IMAGE]
            assert objects[0].get_bounds() == pytest.approx(
                (0, 0, *page.get_size()), abs=0.05)
            assert page.get_textpage().get_text_range() == ""
    finally:
        document.close()
    assert "/AcroForm" not in inert.trailer["/Root"]
    assert "/Names" not in inert.trailer["/Root"]
    # What a reader sees is the same: the signature page of both, drawn alike.
    def grey(pdf: bytes) -> np.ndarray:
        document = pdfium.PdfDocument(pdf)
        try:
            return np.asarray(document[2].render(scale=0.5, grayscale=True).to_pil()
                              .convert("L"), dtype=float)
        finally:
            document.close()
    assert np.abs(grey(scan) - grey(copy)).mean() < 3.0


def test_the_executed_letter_takes_a_hostile_scan_as_pictures_and_keeps_the_original(
        database, letter_id, sealer):
    with database.transaction() as session:
        envelope, links = env.send_envelope(session, letter_id, None, STAFF)
        envelope_id = envelope.id
        letter_pdf = env.letter_pdf_for(session, envelope)
        executive_id = envelope.counterparts[1].id
    scan = hostile(scan_of(letter_pdf, signed_by=["executive"], paper="letter"))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    with database.transaction() as session:
        counterpart, new, _ = env.upload_paper_counterpart(
            session, letter_id, executive_id, scan, "tucker.pdf", STAFF,
            choices=env.PaperChoices(signed_on=today))
        assert counterpart.status == "signed" and new
    with database.transaction() as session:
        env.sign_counterpart(session, links[0].token, consent=True,
                             signature={"type": "typed", "text": "Eliot Protsch"},
                             actor=SIGNER)
    executed_doc = env.assemble_envelope(database, envelope_id, sealer)
    assert executed_doc is not None
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, executed_doc.id))
        row = session.get(Counterpart, executive_id)
        original = env.document_bytes(session, session.get(
            Document, row.paper["original_document_id"]))
        inert_doc = session.get(Document, row.paper["inert_document_id"])
        inert = env.document_bytes(session, inert_doc)
        kept_scan = env.document_bytes(session, session.get(Document, row.signed_document_id))
        events = [e for e in env.events_of(session, letter_id) if e.type == "signed"
                  and e.counterpart_id == executive_id]
        assert session.get(Envelope, envelope_id).status == "completed"
    # The evidence is the upload, byte for byte, with all it carried.
    assert original == scan and kept_scan == scan
    assert active_content(original) == HOSTILE
    assert inert_doc.kind == "inert_scan" and active_content(inert) == set()
    assert events[0].detail["inert_sha256"] == inert_doc.blob_sha256
    # The executed letter has none of it: only its own seal's signature field.
    assert active_content(executed) == set()
    reader = pypdf.PdfReader(io.BytesIO(executed))
    fields = reader.get_fields() or {}
    assert [f.get("/FT") for f in fields.values()] == ["/Sig"]
    assert not reader.attachments
    assert b"payload.exe" not in executed and b"evil.example" not in executed
    # The executive's signed page is the scan's page as a picture the size of the page.
    titles = [(str(item.title), reader.get_destination_page_number(item))
              for item in reader.outline]
    page_index = dict(titles)["Counterpart signed by John R. Tucker"]
    page = reader.pages[page_index]
    assert not page.get("/Annots")
    assert tuple(page.mediabox) == pytest.approx((0, 0, 612, 792), abs=0.01)
    document = pdfium.PdfDocument(executed)
    try:
        (image,) = [obj for obj in document[page_index].get_objects()]
        assert image.get_bounds() == pytest.approx((0, 0, 612, 792), abs=0.05)
    finally:
        document.close()
