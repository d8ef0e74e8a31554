"""Letter PDFs made by a background job: once however often the job runs, retried with backoff
when LibreOffice fails, marked failed after the last try, queued again by "Retry", and waited
for by reading the database only."""

from __future__ import annotations

import datetime as dt

import pytest
from held_jobs import held_jobs
from sqlalchemy import func, select, update

from workflow import jobs
from workflow import letters as lt
from workflow.errors import ConversionError, NotReadyError
from workflow.models import Blob, Document, Event, Letter, utcnow


class CountingConverter:
    """The suite's LibreOffice, counting conversions; it may fail the first ``failures``."""

    processes = 1

    def __init__(self, real, failures: int = 0) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def convert_bytes(self, docx: bytes) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConversionError("Cannot convert letter.docx to PDF: LibreOffice crashed.")
        return self.real.convert_bytes(docx)


def new_letter(database, terms, *, queue: bool = True) -> tuple[int, int]:
    """Create a letter (its PDF's job enqueued when ``queue``); return (letter, PDF) ids."""
    with database.transaction() as session:
        letter_id = lt.create_letter(session, "separation_letter", terms, None).id
        queued = lt.queue_pending_pdfs(session, letter_id) if queue else []
        pdf_id = session.scalar(select(Document.id).where(Document.letter_id == letter_id,
                                                          Document.kind == "letter_pdf"))
    assert queued in ([], [pdf_id])
    return letter_id, pdf_id


def pdf_row(database, pdf_id) -> Document:
    with database.transaction() as session:
        return session.get(Document, pdf_id)


def generated_events(database, letter_id) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Event).where(
            Event.letter_id == letter_id, Event.type == "generated"))


def test_the_job_runs_after_commit_and_a_second_run_changes_nothing(database, converter,
                                                                  reference_terms):
    counting = CountingConverter(converter)
    with held_jobs(jobs.Runtime(database, converter=counting)) as queue:
        letter_id, pdf_id = new_letter(database, reference_terms)
        assert pdf_row(database, pdf_id).status == "pending"  # the request has answered
        assert [n for n in queue.names() if "generate_pdf_job" in n] == [
            f"workflow.letters.generate_pdf_job({pdf_id},)"]
        queue.run()
        made = pdf_row(database, pdf_id)
        assert made.status == "ready" and made.blob_sha256
        # The same job again (a retry after a timeout, a dead worker's job taken over).
        lt.generate_pdf_job(pdf_id)
        lt.generate_pdf_job.call_local(pdf_id)
        queue.run()
    assert counting.calls == 1  # converted once; the later runs found it made
    assert pdf_row(database, pdf_id).blob_sha256 == made.blob_sha256
    assert generated_events(database, letter_id) == 1
    with database.transaction() as session:
        assert session.get(Letter, letter_id).status == "generated"


def test_two_runs_at_once_store_one_pdf(database, converter, reference_terms):
    letter_id, pdf_id = new_letter(database, reference_terms, queue=False)

    class Overtaken:
        """While this run converts, another run of the job makes and stores the PDF."""

        def convert_bytes(self, docx: bytes) -> bytes:
            assert lt.generate_document(database, pdf_id, converter)
            return converter.convert_bytes(docx) + b"\n% a second copy\n"

    assert lt.generate_document(database, pdf_id, Overtaken()) is False  # not stored
    stored = pdf_row(database, pdf_id)
    assert stored.status == "ready"
    with database.transaction() as session:
        assert not bytes(session.get(Blob, stored.blob_sha256).data).endswith(
            b"% a second copy\n")
        assert not any(bytes(b.data).endswith(b"% a second copy\n")
                       for b in session.scalars(select(Blob)))  # the late copy was not kept
    assert generated_events(database, letter_id) == 1


def test_libreoffice_failures_are_retried_then_marked_failed_then_retried_by_staff(
        database, converter, reference_terms):
    failing = CountingConverter(converter, failures=99)
    with held_jobs(jobs.Runtime(database, converter=failing)) as queue:
        letter_id, pdf_id = new_letter(database, reference_terms)
        queue.run()
        # Failed once: still waiting (shown as being made), its retry scheduled.
        waiting = pdf_row(database, pdf_id)
        assert (waiting.status, waiting.error) == ("generating", None)
        assert queue.run_retries() == lt.PDF_RETRIES
        assert failing.calls == 1 + lt.PDF_RETRIES
        failed = pdf_row(database, pdf_id)
        assert failed.status == "failed"
        assert failed.error == "Cannot convert letter.docx to PDF: LibreOffice crashed."
        with database.transaction() as session:
            assert session.get(Letter, letter_id).status == "draft"

        failing.failures = 0  # LibreOffice works again: "Retry" on the letter page
        with database.transaction() as session:
            assert lt.retry_document(session, pdf_id)
        with database.transaction() as session:
            assert not lt.retry_document(session, pdf_id)  # pending now, not failed
        assert pdf_row(database, pdf_id).status == "pending"
        queue.run()
    assert pdf_row(database, pdf_id).status == "ready"
    assert generated_events(database, letter_id) == 1


def test_a_retry_that_succeeds_leaves_no_error(database, converter, reference_terms):
    flaky = CountingConverter(converter, failures=1)
    with held_jobs(jobs.Runtime(database, converter=flaky)) as queue:
        _, pdf_id = new_letter(database, reference_terms)
        queue.run()
        queue.run_retries()
    made = pdf_row(database, pdf_id)
    assert (made.status, made.error, flaky.calls) == ("ready", None, 2)


def test_waiting_reads_the_database_until_the_job_has_made_it(database, converter,
                                                             reference_terms):
    letter_id, pdf_id = new_letter(database, reference_terms, queue=False)
    naps: list[float] = []

    def worker_meanwhile(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:  # the job runs while the download waits
            lt.generate_document(database, pdf_id, converter)

    document = lt.wait_for_document(database, pdf_id, timeout=60, sleep=worker_meanwhile)
    assert document.status == "ready" and len(naps) == 3
    assert naps == sorted(naps) and naps[1] > naps[0]  # polling slows down

    other_letter, other_pdf = new_letter(database, reference_terms, queue=False)
    with pytest.raises(NotReadyError, match="still being generated"):
        lt.wait_for_document(database, other_pdf, timeout=0.2, poll=0.05)
    assert pdf_row(database, other_pdf).status == "pending"  # waiting never makes it


def test_the_safety_net_queues_only_pdfs_left_waiting(database, converter, reference_terms):
    counting = CountingConverter(converter)
    with jobs.immediate(jobs.Runtime(database, converter=counting)):
        _, lost = new_letter(database, reference_terms, queue=False)  # its enqueue was lost
        _, fresh = new_letter(database, reference_terms, queue=False)
        long_ago = utcnow() - lt.RESUME_PENDING_AFTER - dt.timedelta(minutes=1)
        with database.transaction() as session:
            session.execute(update(Document).where(Document.id == lost)
                            .values(created_at=long_ago))
        assert lt.resume_pending_pdfs.call_local() == 1  # its job ran after the commit
        assert lt.resume_pending_pdfs.call_local() is None  # this period's slot is taken
    assert counting.calls == 1
    assert pdf_row(database, lost).status == "ready"
    assert pdf_row(database, fresh).status == "pending"
    with database.transaction() as session:  # marked when queued again: not re-queued soon
        assert lt.pending_documents(session, waiting_since=utcnow()
                                    - lt.RESUME_PENDING_AFTER) == []
