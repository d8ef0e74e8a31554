"""Waiting for letter PDFs that background jobs make, and the page pictures, with fakes where
LibreOffice fails."""

from __future__ import annotations

import io
import threading

import pytest
from held_jobs import run_retries
from PIL import Image
from sqlalchemy import select
from werkzeug.exceptions import ServiceUnavailable

from web.database import get_db
from web.documents import Documents
from web.previews import PagePreviews
from workflow.errors import ConversionError, DocumentError
from workflow.letters import PDF_RETRIES, document_bytes, generate_document, generate_pdf_job
from workflow.models import Document


class FailingConverter:
    """A converter whose LibreOffice always fails."""

    processes = 1

    def __init__(self) -> None:
        self.calls = 0

    def convert_bytes(self, docx: bytes) -> bytes:
        self.calls += 1
        raise ConversionError("Cannot convert document.docx to PDF: LibreOffice crashed.")


def _pdf_id(app) -> int:
    with app.app_context(), get_db().transaction() as session:
        return session.scalar(select(Document.id).where(Document.kind == "letter_pdf"))


def _pdf(app, document_id):
    with app.app_context(), get_db().transaction() as session:
        document = session.get(Document, document_id)
        return document.status, document.error


def test_wait_reads_the_database_and_never_converts(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    failing = FailingConverter()
    with app.app_context():
        documents = Documents(get_db(), failing, wait_seconds=0.3)
        with pytest.raises(ServiceUnavailable, match="still being generated"):
            documents.wait(document_id)  # no job ran: it waits, then says so
    assert failing.calls == 0 and _pdf(app, document_id) == ("pending", None)
    # A worker makes it while the request waits: the wait returns it.
    worker = threading.Timer(0.3, generate_pdf_job.call_local, (document_id,))
    worker.start()
    try:
        with app.app_context():
            assert Documents(get_db(), failing, wait_seconds=60).wait(document_id).status \
                == "ready"
    finally:
        worker.join()
    assert failing.calls == 0  # the job used the app's LibreOffice, the waiter none
    with app.app_context(), get_db().transaction() as session:
        assert document_bytes(session, session.get(Document, document_id)).startswith(b"%PDF")


def test_a_failed_generation_is_recorded_with_its_reason(app, make_letter, reference_terms):
    make_letter(reference_terms, generate=False)
    document_id = _pdf_id(app)
    failing = FailingConverter()
    with app.app_context():
        generate_document(get_db(), document_id, failing)  # a last attempt
        with pytest.raises(ServiceUnavailable, match="could not be generated: Cannot convert"):
            Documents(get_db(), failing).wait(document_id)
    assert failing.calls == 1
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
        # The job failed once and waits for its retries; run them as a worker would.
        assert run_retries() == PDF_RETRIES
        response = client.get(f"/api/letters/{letter_id}/document.pdf", headers=headers)
        assert response.status_code == 503
        assert "could not be generated: Cannot convert document.docx to PDF" in \
            response.json["error"]
        page = sign_in(client).get(f"/letters/{letter_id}").text
        assert "The PDF could not be generated." in page
    finally:
        app.extensions["counterpart.documents"].close()
        app.extensions["counterpart.db"].dispose()


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
