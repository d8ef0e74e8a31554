"""Faults: a process killed mid-way, or a full disk, loses nothing and can be retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from held_jobs import held_jobs
from sqlalchemy import event, func, select, text

import workflow.envelopes as envelopes
import workflow.letters as letters
from workflow.backup import verify_store
from workflow.db import open_database
from workflow.errors import StorageFullError
from workflow.models import Blob, Document, Envelope, Letter
from workflow.seal import load_or_create_sealer

ROOT = Path(__file__).resolve().parents[2]
STAFF = envelopes.Actor("ann@example.com", "127.0.0.1", "pytest")


def run_until_marker(script: str, marker: Path, *args: str) -> None:
    """Run a child that does real work and hangs at a chosen point; kill it there with -9."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                             cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if child.poll() is not None:
            pytest.fail(f"the child ended early: {child.stderr.read().decode()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the child never reached the point where it is killed")
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    child.stderr.close()


def new_letter(database, terms) -> tuple[int, int]:
    with database.transaction() as session:
        letter = letters.create_letter(session, "separation_letter", terms, None)
        pdf = session.scalar(select(Document.id).where(Document.letter_id == letter.id,
                                                       Document.kind == "letter_pdf"))
        return letter.id, pdf


KILLED_DURING_CONVERSION = """
    import sys, time, pathlib
    from workflow.db import open_database
    from workflow.letters import generate_document

    class HangingConverter:
        def convert_bytes(self, docx):
            pathlib.Path(sys.argv[2]).write_text("converting")
            time.sleep(120)

    database = open_database(pathlib.Path(sys.argv[1]), sys.argv[4] or None)
    generate_document(database, int(sys.argv[3]), HangingConverter())
"""


def test_killed_during_generation_then_retried(database, tmp_path, converter, reference_terms,
                                               database_url):
    letter_id, pdf_id = new_letter(database, reference_terms)
    marker = tmp_path / "converting"
    run_until_marker(KILLED_DURING_CONVERSION, marker, str(tmp_path), str(marker), str(pdf_id),
                     database_url or "")
    with database.transaction() as session:
        document = session.get(Document, pdf_id)
        assert (document.status, document.blob_sha256) == ("generating", None)
        assert session.get(Letter, letter_id).status == "draft"
        assert letters.pending_documents(session) == [pdf_id]  # still waiting for its PDF
    # The queue puts the dead worker's job back (workflow.jobs); its next run makes the PDF.
    assert letters.generate_document(database, pdf_id, converter)
    assert not letters.generate_document(database, pdf_id, converter)  # and only once
    with database.transaction() as session:
        assert session.get(Document, pdf_id).status == "ready"
        assert session.get(Letter, letter_id).status == "generated"
    assert verify_store(database).ok


KILLED_DURING_ASSEMBLY = """
    import sys, time, pathlib
    import workflow.envelopes as envelopes
    from workflow.db import open_database
    from workflow.seal import load_or_create_sealer

    def hang(pdf, sealer, **options):
        pathlib.Path(sys.argv[2]).write_text("sealing")
        time.sleep(120)

    envelopes.seal_pdf = hang
    data = pathlib.Path(sys.argv[1])
    envelopes.assemble_envelope(open_database(data, sys.argv[4] or None), sys.argv[3],
                                load_or_create_sealer(data))
"""


def test_killed_during_assembly_then_retried(database, tmp_path, converter, reference_terms,
                                             database_url):
    letter_id, pdf_id = new_letter(database, reference_terms)
    letters.generate_document(database, pdf_id, converter)
    with database.transaction() as session:
        envelope, links = envelopes.send_envelope(session, letter_id, None, STAFF)
        envelope_id = envelope.id
    with held_jobs():  # the assembly the last signature queues is the child's to run
        for link in links:
            with database.transaction() as session:
                envelopes.sign_counterpart(session, link.token, consent=True, actor=STAFF,
                                           signature={"type": "typed", "text": "Signed"})
    marker = tmp_path / "sealing"
    run_until_marker(KILLED_DURING_ASSEMBLY, marker, str(tmp_path), str(marker), envelope_id,
                     database_url or "")
    with database.transaction() as session:
        assert session.get(Envelope, envelope_id).assembly_state == "running"
        assert session.get(Letter, letter_id).status == "partially_executed"
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == 0
    # The queue puts the dead worker's job back (workflow.jobs); its next run makes it, once.
    sealer = load_or_create_sealer(tmp_path)
    assert envelopes.assemble_envelope(database, envelope_id, sealer) is not None
    assert envelopes.assemble_envelope(database, envelope_id, sealer) is None
    with database.transaction() as session:
        assert session.get(Letter, letter_id).status == "fully_executed"
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == 1
    assert verify_store(database).ok


def test_full_disk_is_a_clear_error_and_loses_nothing(tmp_path, reference_terms):
    # The embedded SQLite database, whatever server the rest of the suite runs against.
    database = open_database(tmp_path / "embedded")
    first_id, _ = new_letter(database, reference_terms)
    with database.engine.connect() as connection:
        pages = connection.execute(text("PRAGMA page_count")).scalar_one()

    # SQLite answers SQLITE_FULL ("database or disk is full") past max_page_count, exactly
    # as it does when the file system has no space left.
    @event.listens_for(database.engine, "connect")
    def _small_disk(dbapi_connection, _record):
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 8}")

    database.engine.dispose()  # the pooled connections were opened before: open new ones
    with database.transaction() as session:
        before = session.scalar(select(func.count()).select_from(Blob))
    with pytest.raises(StorageFullError, match="disk is full, so nothing was saved"):
        for index in range(50):
            new_letter(database, {**reference_terms, "executive_full_name": f"Exec {index}",
                                  "company_name": f"Company {index} " + "x" * 150})
    with database.transaction() as session:
        assert session.get(Letter, first_id).status == "draft"
        assert session.scalar(select(func.count()).select_from(Blob)) >= before
    event.remove(database.engine, "connect", _small_disk)
    database.engine.dispose()
    assert verify_store(database).ok
    second_id, _ = new_letter(database, reference_terms)  # room again: it works
    assert second_id > first_id
    database.dispose()


def test_a_failing_writer_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch,
                                                             reference_terms):
    import errno
    import json

    from click.testing import CliRunner

    from workflow import files
    from workflow.cli import cli

    target = tmp_path / "letter.docx"
    target.write_bytes(b"the earlier letter")
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(reference_terms))

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    result = CliRunner().invoke(cli, ["render", "separation_letter", "--terms", str(terms),
                                      "--docx", str(target)])
    assert result.exit_code == 1
    assert f"{target}: could not be written (No space left on device)" in result.output
    assert target.read_bytes() == b"the earlier letter"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["letter.docx", "terms.json"]
