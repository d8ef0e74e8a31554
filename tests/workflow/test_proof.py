"""What a file handed in is, said truly: executed and intact, changed after sealing, another file
this system made (named by its SHA-256), someone else's, or too complex to check."""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path

import pypdf
import pytest
from scans import scan_of
from support import create_server_database, drop_server_database, server_database_url

from workflow import convert
from workflow import envelopes as env
from workflow.accounts import create_user
from workflow.db import open_database
from workflow.errors import DocumentError
from workflow.letters import (
    create_letter,
    document_bytes,
    generate_document,
    get_letter,
    get_version,
    latest_document,
    pending_documents,
    revise_terms,
)
from workflow.models import Counterpart, Document, Envelope
from workflow.proof import verify_document
from workflow.seal import load_or_create_sealer, seal_pdf

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"
STAFF = env.Actor("ann@example.com", "10.0.0.1", "pytest staff browser")
SIGNER = env.Actor("signer", "203.0.113.7", "pytest signer browser")
TITLE = "“Separation letter of John R. Tucker, Capstone Turbine Corporation”"


def _generate(database, converter) -> None:
    with database.transaction() as session:
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)


def _bytes(database, document_id: int) -> bytes:
    with database.transaction() as session:
        return document_bytes(session, session.get(Document, document_id))


@pytest.fixture(scope="module")
def executed(tmp_path_factory, converter, spec):
    """One letter executed in counterparts (the company online, the executive on paper), and
    a second letter revised to version 2 and never sent; every stored file, by name."""
    from workflow.schema import sample_terms

    terms = sample_terms(spec)
    server = server_database_url()
    url = create_server_database(server) if server else None
    database = open_database(tmp_path_factory.mktemp("proof"), url)
    sealer = load_or_create_sealer(tmp_path_factory.mktemp("seal"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert, "_default", converter)
        with database.transaction() as session:
            user = create_user(session, "ann@example.com", "a long password")
            letter_id = create_letter(session, "separation_letter", terms, user).id
            other_id = create_letter(session, "separation_letter", terms, user).id
        _generate(database, converter)
        with database.transaction() as session:
            revise_terms(session, other_id, {**terms, "consulting_months": 7}, user)
        _generate(database, converter)
        with database.transaction() as session:
            envelope, links = env.send_envelope(session, letter_id, None, STAFF)
            envelope_id = envelope.id
            letter_pdf = env.letter_pdf_for(session, envelope)
        with database.transaction() as session:
            company, _ = env.sign_counterpart(
                session, links[0].token, consent=True,
                signature={"type": "typed", "text": "Eliot Protsch"}, actor=SIGNER)
            company_id = company.id
        scan = scan_of(letter_pdf, signed_by=["executive"])
        with database.transaction() as session:
            executive_id = session.get(Envelope, envelope_id).counterparts[1].id
            env.upload_paper_counterpart(
                session, letter_id, executive_id, scan, "tucker-signed.pdf", STAFF,
                choices=env.PaperChoices(dt.datetime.now(dt.UTC).date().isoformat()))
        document = env.assemble_envelope(database, envelope_id, sealer)
        assert document is not None
    with database.transaction() as session:
        letter = get_letter(session, letter_id)
        version = get_version(session, letter)
        other = get_version(session, get_letter(session, other_id))
        files = {
            "executed": document_bytes(session, session.get(Document, document.id)),
            "letter_pdf": document_bytes(session, latest_document(session, version,
                                                                  "letter_pdf")),
            "letter_docx": document_bytes(session, latest_document(session, version,
                                                                   "letter_docx")),
            "version_2_pdf": document_bytes(session, latest_document(session, other,
                                                                     "letter_pdf")),
            "signed": document_bytes(session, session.get(
                Document, session.get(Counterpart, company_id).signed_document_id)),
            "scan": scan,
        }
    yield database, sealer, files
    database.dispose()
    if server:
        drop_server_database(server, url)


def test_the_executed_letter_is_genuine_and_names_its_signers(executed):
    database, sealer, files = executed
    answer = verify_document(database, files["executed"], sealer)
    assert answer["known"] and answer["intact"] and not answer["modified"]
    assert answer["seal"] == "intact" and answer["document"] is None
    assert answer["message"].startswith(f"This is the executed {TITLE}, exactly as this "
                                        f"system sealed it on ")
    assert [(s["name"], s["method"]) for s in answer["signers"]] == [
        ("Eliot Protsch", "typed"), ("John R. Tucker", "paper")]


def test_a_changed_copy_says_the_seal_is_broken_never_someone_elses(executed):
    database, sealer, files = executed
    data = files["executed"]
    middle = len(data) // 3
    flipped = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]
    writer = pypdf.PdfWriter(io.BytesIO(data), incremental=True)
    writer.add_metadata({"/Note": "amended after execution"})
    buffer = io.BytesIO()
    writer.write(buffer)
    for changed, detail in ((flipped, "differs from the document this system sealed"),
                            (buffer.getvalue(), "Something was added to this copy")):
        answer = verify_document(database, changed, sealer)
        assert answer["known"] and answer["modified"] and not answer["intact"]
        assert answer["seal"] == "broken"
        assert answer["message"].startswith("The seal is broken: changed after sealing.")
        assert detail in answer["message"] and TITLE in answer["message"]
        assert "someone else" not in answer["message"]
        assert "not with this system's seal" not in answer["message"]


@pytest.mark.parametrize("name, message", [
    ("letter_pdf", f"This is the unsigned letter, version 1, of {TITLE}, as sent to its "
                   f"signers (the blank counterpart they sign) — not an executed document."),
    ("letter_docx", f"This is the Word file of the unsigned letter, version 1, of {TITLE} — "
                    f"not an executed document."),
    ("version_2_pdf", f"This is the unsigned letter, version 2, of {TITLE} — not an executed "
                      f"document."),
    ("signed", f"This is the counterpart, version 1, of {TITLE}, signed electronically by "
               f"Eliot Protsch (the company, by its chair) — one signer's copy, not the executed "
               f"document."),
    ("scan", f"This is the scan of the counterpart, version 1, of {TITLE}, signed on paper by "
             f"John R. Tucker (the executive), as uploaded — one signer's copy, not the "
             f"executed document."),
])
def test_a_file_this_system_made_is_named_by_its_sha256(executed, name, message):
    database, sealer, files = executed
    answer = verify_document(database, files[name], sealer)
    assert answer["message"] == message
    assert answer["document"]["description"] in message
    assert not answer["known"] and not answer["intact"] and answer["seal"] == "none"
    assert answer["title"] == TITLE.strip("“”")


def test_a_pdf_this_system_never_saw_is_not_known(executed, reference_pdf):
    database, sealer, _ = executed
    answer = verify_document(database, reference_pdf, sealer)
    assert not answer["known"] and answer["document"] is None and answer["seal"] == "none"
    assert answer["message"] == ("This PDF carries no seal. It is not an executed letter of "
                                 "this system.")


def test_another_signature_is_named_as_not_this_systems(executed, reference_pdf,
                                                        tmp_path_factory):
    database, sealer, _ = executed
    stranger = load_or_create_sealer(tmp_path_factory.mktemp("stranger"), organisation="Other")
    answer = verify_document(database, seal_pdf(reference_pdf, stranger), sealer)
    assert answer["seal"] == "other" and not answer["known"]
    assert answer["message"].startswith("The document is signed by Other document seal")
    assert "not with this system's seal" in answer["message"]


def test_three_thousand_signature_fields_are_refused_quickly(executed):
    database, sealer, _ = executed
    data = (CASES / "verify-3000-signature-fields.pdf").read_bytes()
    started = time.monotonic()
    with pytest.raises(DocumentError, match="more than 10 signature fields"):
        verify_document(database, data, sealer)
    assert time.monotonic() - started < 10  # it used to hold a request for the full 20 s
