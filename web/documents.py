"""Letter PDFs made in the background of the app process, and waiting for them.

Creating a letter stores its .docx at once and a ``pending`` PDF; :class:`DocumentGenerator`
hands each pending PDF to a small thread pool that runs :func:`workflow.letters.generate_document`.
The domain claims each document with a conditional update, so a PDF is made once even when a
download waits for it at the same moment, or another app process works on the same database.
At start-up the generator resumes whatever an earlier process left pending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from flask import Flask, current_app
from werkzeug.exceptions import ServiceUnavailable

from workflow.convert import PdfConverter, default_converter
from workflow.db import Database
from workflow.errors import CounterpartError
from workflow.letters import generate_document, pending_documents, retry_document, wait_for_document
from workflow.models import Document

__all__ = ["DocumentGenerator", "init_app", "get_generator"]

EXTENSION = "counterpart.documents"
log = logging.getLogger(__name__)


class DocumentGenerator:
    """Make pending letter PDFs in a few threads, and let requests wait for one."""

    def __init__(self, db: Database, converter: PdfConverter | None = None, *,
                 background: bool = True, wait_seconds: float = 120.0) -> None:
        self._db = db
        self._converter = converter
        self._lock = threading.Lock()
        self._queued: set[int] = set()
        self._closed = False
        self.background = background
        self.wait_seconds = wait_seconds
        self._executor: ThreadPoolExecutor | None = None

    @property
    def converter(self) -> PdfConverter:
        """The LibreOffice converter: the one given, or the process-wide one on first use."""
        with self._lock:
            if self._converter is None:
                self._converter = default_converter()
            return self._converter

    def _pool(self) -> ThreadPoolExecutor:
        # One thread per LibreOffice process keeps each busy without queueing threads.
        threads = max(1, self.converter.processes)
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=threads,
                                                    thread_name_prefix="counterpart-pdf")
            return self._executor

    def submit(self, document_ids: Iterable[int]) -> None:
        """Queue documents for generation (nothing happens when background work is off)."""
        if not self.background:
            return
        for document_id in document_ids:
            with self._lock:
                if self._closed or document_id in self._queued:
                    continue
                self._queued.add(document_id)
            future = self._pool().submit(self._generate, document_id)
            future.add_done_callback(_log_failure)

    def _generate(self, document_id: int) -> None:
        try:
            generate_document(self._db, document_id, self.converter)
        except CounterpartError as exc:
            log.warning("document %s could not be generated: %s", document_id, exc)
        finally:
            with self._lock:
                self._queued.discard(document_id)

    def resume_pending(self) -> int:
        """Queue every document an earlier process left pending; return how many."""
        with self._db.transaction() as session:
            ids = pending_documents(session)
        self.submit(ids)
        return len(ids)

    def wait(self, document_id: int) -> Document:
        """Return a document once it is ready, making it here if no one else is.

        A document whose generation failed is tried once more. Raises ServiceUnavailable if
        it fails again, or if it is still being made elsewhere after ``wait_seconds``.
        """
        try:
            document = wait_for_document(self._db, document_id, self.converter,
                                         timeout=self.wait_seconds)
            if document.status == "failed":
                with self._db.transaction() as session:
                    retry_document(session, document_id)
                document = wait_for_document(self._db, document_id, self.converter,
                                             timeout=self.wait_seconds)
        except CounterpartError as exc:
            if self._status(document_id) in ("pending", "generating"):
                raise ServiceUnavailable(str(exc)) from exc  # made elsewhere, not done in time
            raise
        if document.status != "ready":
            # Not the asker's fault, and perhaps passing (LibreOffice restarts): 503.
            raise ServiceUnavailable(f"{document.filename} could not be generated: "
                                     f"{document.error or 'the converter gave no reason'}")
        return document

    def _status(self, document_id: int) -> str | None:
        with self._db.transaction() as session:
            document = session.get(Document, document_id)
            return document.status if document else None

    def warm_up(self) -> None:
        """Start LibreOffice in the background so that the first letter is quick."""
        def start() -> None:
            try:
                self.converter.start()
            except CounterpartError as exc:
                log.warning("LibreOffice did not start: %s", exc)

        threading.Thread(target=start, name="counterpart-pdf-warm-up", daemon=True).start()

    def close(self, *, close_converter: bool = False) -> None:
        """Stop taking work, finish what is running, and optionally stop LibreOffice."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            # Queued documents stay pending in the database; the next start resumes them.
            executor.shutdown(wait=True, cancel_futures=True)
        if close_converter and self._converter is not None:
            self._converter.close()


def _log_failure(future: Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("document generation crashed", exc_info=future.exception())


def init_app(app: Flask, db: Database) -> DocumentGenerator:
    """Give the app its document generator and resume pending documents."""
    generator = DocumentGenerator(
        db, app.config.get("PDF_CONVERTER"),
        background=app.config["GENERATE_IN_BACKGROUND"],
        wait_seconds=app.config["DOWNLOAD_WAIT_SECONDS"])
    app.extensions[EXTENSION] = generator
    generator.resume_pending()
    return generator


def get_generator() -> DocumentGenerator:
    """Return the running app's document generator."""
    return current_app.extensions[EXTENSION]
