"""LibreOffice in the web process, and waiting for the letter PDFs that background jobs make.

Letter PDFs and executed letters are made by jobs (:func:`workflow.letters.generate_pdf_job`,
:func:`workflow.envelopes.assemble_envelope_job`), run by ``counterpart worker``. A request
never makes one: a download of a PDF still being made reads the database until it is ready,
for at most ``DOWNLOAD_WAIT_SECONDS`` (:meth:`Documents.wait`). The web process keeps its own
LibreOffice only for the conversions a request must answer with at once: a signer's signed
counterpart, a template's test render, a redline PDF.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, current_app
from werkzeug.exceptions import ServiceUnavailable

from workflow.convert import PdfConverter, default_converter
from workflow.db import Database
from workflow.errors import CounterpartError, NotReadyError
from workflow.letters import wait_for_document
from workflow.models import Document

__all__ = ["Documents", "init_app", "get_documents"]

EXTENSION = "counterpart.documents"
log = logging.getLogger(__name__)


class Documents:
    """The app's LibreOffice converter, and waiting for letter PDFs made in the background."""

    def __init__(self, db: Database, converter: PdfConverter | None = None, *,
                 wait_seconds: float = 120.0) -> None:
        self._db = db
        self._converter = converter
        self._lock = threading.Lock()
        self.wait_seconds = wait_seconds

    @property
    def converter(self) -> PdfConverter:
        """The LibreOffice converter: the one given, or the process-wide one on first use."""
        with self._lock:
            if self._converter is None:
                self._converter = default_converter()
            return self._converter

    def wait(self, document_id: int) -> Document:
        """Return a letter PDF once it is ready, reading the database until then.

        Raises ServiceUnavailable (503) if making it failed (the letter page offers "Retry"),
        or if it is still being made after ``wait_seconds``; NotFoundError if unknown.
        """
        try:
            document = wait_for_document(self._db, document_id, timeout=self.wait_seconds)
        except NotReadyError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        if document.status != "ready":
            # Not the asker's fault, and perhaps passing (LibreOffice restarts): 503.
            raise ServiceUnavailable(f"{document.filename} could not be generated: "
                                     f"{document.error or 'the converter gave no reason'} "
                                     "Retry it from the letter page.")
        return document

    def warm_up(self) -> None:
        """Start LibreOffice in the background so that the first conversion is quick."""
        def start() -> None:
            try:
                self.converter.start()
            except CounterpartError as exc:
                log.warning("LibreOffice did not start: %s", exc)

        threading.Thread(target=start, name="counterpart-pdf-warm-up", daemon=True).start()

    def close(self, *, close_converter: bool = False) -> None:
        """Stop the app's LibreOffice when ``close_converter`` (the process is stopping)."""
        with self._lock:
            converter = self._converter
        if close_converter and converter is not None:
            converter.close()


def init_app(app: Flask, db: Database) -> Documents:
    """Give the app its converter and the waiting for letter PDFs."""
    documents = Documents(db, app.config.get("PDF_CONVERTER"),
                          wait_seconds=app.config["DOWNLOAD_WAIT_SECONDS"])
    app.extensions[EXTENSION] = documents
    return documents


def get_documents() -> Documents:
    """Return the running app's converter and document waiting."""
    return current_app.extensions[EXTENSION]
