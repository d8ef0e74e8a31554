"""The background document generator and the page pictures, with fakes where LibreOffice fails."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import select
from werkzeug.exceptions import ServiceUnavailable

from web.database import get_db
from web.documents import DocumentGenerator
from web.previews import PagePreviews
from workflow.errors import ConversionError, DocumentError
from workflow.letters import document_bytes
from workflow.models import Document


class FailingConverter:
    """A converter whose LibreOffice always fails."""

    processes = 1

    def __init__(self) -> None:
        self.calls = 0

    def convert_bytes(self, docx: bytes) -> bytes:
        self.calls += 1
        raise ConversionError("Cannot convert document.docx to PDF: LibreOffice crashed.")


class FlakyConverter:
    """A converter that fails once, then works through the real one."""

    processes = 1

    def __init__(self, real) -> None:
        self.real = real
        self.calls = 0

    def convert_bytes(self, docx: bytes) -> bytes:
        self.calls += 1
        if self.calls == 1:
            raise ConversionError("Cannot convert document.docx to PDF: a hiccup.")
        return self.real.convert_bytes(docx)


def _pdf_id(app) -> int:
    with app.app_context(), get_db().transaction() as session:
        return session.scalar(select(Document.id).where(Document.kind == "letter_pdf"))


def _pdf(app, document_id):
    with app.app_context(), get_db().transaction() as session:
        document = session.get(Document, document_id)
        return document.status, document.error


def test_wait_makes_the_document_here(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    with app.app_context():
        generator = DocumentGenerator(get_db(), app.config["PDF_CONVERTER"], background=False)
        document = generator.wait(document_id)
    assert document.status == "ready"
    with app.app_context(), get_db().transaction() as session:
        assert document_bytes(session, session.get(Document, document_id)).startswith(b"%PDF")


def test_wait_tries_a_failed_document_once_more(app, converter, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    flaky = FlakyConverter(converter)
    with app.app_context():
        generator = DocumentGenerator(get_db(), flaky, background=False)
        assert generator.wait(document_id).status == "ready"
    assert flaky.calls == 2


def test_wait_reports_a_conversion_that_keeps_failing(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    failing = FailingConverter()
    with app.app_context():
        generator = DocumentGenerator(get_db(), failing, background=False)
        with pytest.raises(ServiceUnavailable, match="could not be generated: Cannot convert"):
            generator.wait(document_id)
    assert failing.calls == 2
    assert _pdf(app, document_id)[0] == "failed"


def test_wait_gives_up_on_a_document_another_worker_holds(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    from sqlalchemy import update

    from workflow.models import utcnow

    with app.app_context(), get_db().transaction() as session:
        session.execute(update(Document).where(Document.id == document_id)
                        .values(status="generating", claimed_at=utcnow()))
    with app.app_context():
        generator = DocumentGenerator(get_db(), FailingConverter(), background=False,
                                      wait_seconds=0.3)
        with pytest.raises(ServiceUnavailable, match="still being generated"):
            generator.wait(document_id)


def test_a_failed_generation_is_recorded_with_its_reason(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    with app.app_context():
        generator = DocumentGenerator(get_db(), FailingConverter(), background=True)
        generator.submit([document_id])
        generator.close()
    assert _pdf(app, document_id) == (
        "failed", "Cannot convert document.docx to PDF: LibreOffice crashed.")


def test_api_download_of_a_document_that_cannot_be_made_is_a_clear_error(
        app_config, make_letter, reference_terms, api, sign_in):
    from web import create_app

    app = create_app({**app_config, "PDF_CONVERTER": FailingConverter()})
    try:
        client = app.test_client()
        from workflow.accounts import create_api_token

        with app.app_context(), get_db().transaction() as session:
            headers = {"Authorization": "Bearer " + create_api_token(session,
                                                                     "counsel@example.com")}
        letter_id = client.post("/api/letters", headers=headers, json={
            "template": "separation_letter", "terms": reference_terms}).json["id"]
        response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=headers)
        assert response.status_code == 503
        assert "could not be generated: Cannot convert document.docx to PDF" in \
            response.json["error"]
        page = sign_in(client).get(f"/letters/{letter_id}").text
        assert "The PDF could not be generated." in page
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


def test_submit_does_nothing_when_background_work_is_off(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    failing = FailingConverter()
    with app.app_context():
        generator = DocumentGenerator(get_db(), failing, background=False)
        generator.submit([document_id])
        generator.close()
    assert failing.calls == 0
    assert _pdf(app, document_id)[0] == "pending"


# --- page pictures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def letter_pdf(converter, tmp_path_factory):
    from workflow.render import render_docx
    from workflow.schema import load_template, sample_terms, validate_terms

    spec = load_template("separation_letter")
    return converter.convert_bytes(render_docx(spec, validate_terms(spec, sample_terms(spec))))


def test_page_sizes_and_pictures(letter_pdf):
    previews = PagePreviews(dpi=72)
    assert previews.page_sizes("sha", lambda: letter_pdf) == [(612, 792)] * 3
    picture = Image.open(io.BytesIO(previews.png("sha", 2, lambda: letter_pdf)))
    assert picture.size == (612, 792)
    assert picture.mode == "L"
    colour = Image.open(io.BytesIO(previews.png("sha", 2, lambda: letter_pdf, color=True)))
    assert colour.mode == "RGB"
    assert previews.png("sha", 4, lambda: letter_pdf) is None
    assert previews.png("sha", 0, lambda: letter_pdf) is None


def test_pictures_are_cached_by_content(letter_pdf):
    previews = PagePreviews()
    loads = []

    def load():
        loads.append(1)
        return letter_pdf

    first = previews.png("abc", 1, load)
    assert previews.png("abc", 1, load) is first
    assert len(loads) == 1


def test_cache_is_bounded(letter_pdf):
    previews = PagePreviews(max_bytes=1)
    previews.png("abc", 1, lambda: letter_pdf)
    previews.png("abc", 2, lambda: letter_pdf)
    assert len(previews._pngs) == 1


def test_a_damaged_pdf_is_a_document_error():
    with pytest.raises(DocumentError, match="cannot be read"):
        PagePreviews().png("bad", 1, lambda: b"%PDF-1.7 this is not really a PDF")
