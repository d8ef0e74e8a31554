"""Execution in counterparts, end to end in the domain: send, view, sign, upload, void, assemble."""

from __future__ import annotations

import base64
import datetime as dt
import io
import threading

import pypdf
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import func, select
from support import letter_words

from workflow import envelopes as env
from workflow.accounts import create_user
from workflow.audit import events_of, verify_chain
from workflow.errors import CounterpartError, DocumentError, LinkError, StateError
from workflow.letters import create_letter, generate_document, pending_documents, revise_terms
from workflow.models import Counterpart, Document, Envelope, Letter
from workflow.pdfs import extract_pages
from workflow.seal import check_seal, load_or_create_sealer

STAFF = env.Actor("ann@example.com", "10.0.0.1", "pytest staff browser")
SIGNER = env.Actor("signer", "203.0.113.7", "Mozilla/5.0 (Phone) pytest")


def drawn_png() -> str:
    image = Image.new("RGBA", (400, 120), (255, 255, 255, 0))
    ImageDraw.Draw(image).line([(20, 90), (120, 20), (220, 100), (380, 30)], fill="black",
                               width=6)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def sealer(tmp_path_factory):
    return load_or_create_sealer(tmp_path_factory.mktemp("seal"))


@pytest.fixture()
def letter_id(database, converter, reference_terms):
    with database.transaction() as session:
        user = create_user(session, "ann@example.com", "a long password")
        letter = create_letter(session, "separation_letter", reference_terms, user)
        letter_id = letter.id
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)
    return letter_id


def send(database, letter_id, **options):
    with database.transaction() as session:
        envelope, links = env.send_envelope(session, letter_id, None, STAFF, **options)
        return envelope.id, [link.token for link in links]


def sign(database, token, signature=None, **kwargs):
    signature = signature or {"type": "typed", "text": "Eliot Protsch"}
    with database.transaction() as session:
        counterpart, complete = env.sign_counterpart(session, token, consent=True,
                                                     signature=signature, actor=SIGNER, **kwargs)
        return counterpart.status, complete


def letter_status(database, letter_id) -> str:
    with database.transaction() as session:
        return session.get(Letter, letter_id).status


def test_send_issues_a_private_link_per_signer(database, letter_id):
    envelope_id, tokens = send(database, letter_id)
    assert len(tokens) == 2 and len(set(tokens)) == 2
    assert all(len(t) >= 43 for t in tokens)  # 32 random bytes, base64url
    with database.transaction() as session:
        rows = session.scalars(select(Counterpart).order_by(Counterpart.position)).all()
        assert [(c.role, c.name, c.status) for c in rows] == [
            ("company", "Eliot Protsch", "sent"), ("executive", "John R. Tucker", "sent")]
        assert all(c.token_hash == env.token_hash(t) for c, t in zip(rows, tokens, strict=True))
        assert tokens[0] not in str([c.token_hash for c in rows])
        envelope = session.get(Envelope, envelope_id)
        assert envelope.expires_at - envelope.created_at == dt.timedelta(days=30)
    assert letter_status(database, letter_id) == "out_for_signature"


def test_sending_refuses_names_not_in_a_signature_block(database, letter_id):
    with database.transaction() as session, pytest.raises(CounterpartError,
                                                           match=r"signers\[1\]\.name"):
        env.send_envelope(session, letter_id, [env.SignerSpec("company", "Eliot Protsch"),
                                               env.SignerSpec("executive", "Someone Else")],
                          STAFF)
    assert letter_status(database, letter_id) == "generated"


def test_full_execution_typed_and_drawn(database, letter_id, sealer, reference_words):
    envelope_id, (company, executive) = send(database, letter_id)
    with database.transaction() as session:
        view = env.view_signing(session, executive, SIGNER)
        assert view.can_sign and view.counterpart.status == "viewed"
    assert sign(database, company) == ("signed", False)
    assert letter_status(database, letter_id) == "partially_executed"
    assert sign(database, executive, {"type": "drawn", "png": drawn_png()}) == ("signed", True)
    document = env.assemble_envelope(database, envelope_id, sealer)
    assert document is not None
    assert env.assemble_envelope(database, envelope_id, sealer) is None  # exactly once
    assert letter_status(database, letter_id) == "fully_executed"
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == 1
        assert [e.type for e in events_of(session, letter_id)].count("executed") == 1
        assert verify_chain(session, letter_id).ok
        methods = [c.method for c in session.scalars(select(Counterpart)
                                                     .order_by(Counterpart.position))]
    assert methods == ["typed", "drawn"]
    reader = pypdf.PdfReader(io.BytesIO(executed))
    assert len(reader.pages) >= 6  # 3 letter pages, 2 signature pages, the certificate
    letter_text = "\n".join(p.extract_text() for p in reader.pages[:3])
    assert letter_words(letter_text) == reference_words
    executive_page = reader.pages[4].extract_text()
    assert "this " in executive_page and "day of July, 2006" in executive_page
    certificate = " ".join(p.extract_text() for p in reader.pages[5:])
    for words in ("Certificate of completion", envelope_id, "Eliot Protsch", "John R. Tucker",
                  "203.0.113.7", "typed", "drawn"):
        assert words in " ".join(certificate.split()), words
    check = check_seal(executed, sealer.certificate)
    assert check.sealed and check.intact and check.signed_by_us


def test_a_link_signs_once(database, letter_id):
    _, (company, _) = send(database, letter_id)
    sign(database, company)
    with pytest.raises(LinkError, match="already been signed") as caught:
        sign(database, company)
    assert caught.value.reason == "signed"
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "signed_counterpart")) == 1


def test_two_signers_finishing_together_assemble_once(database, letter_id, sealer):
    envelope_id, tokens = send(database, letter_id)
    barrier = threading.Barrier(2)
    outcomes: list = []

    def finish(token: str) -> None:
        barrier.wait()
        _, complete = sign(database, token)
        if complete:
            outcomes.append(env.assemble_envelope(database, envelope_id, sealer))

    threads = [threading.Thread(target=finish, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len([o for o in outcomes if o is not None]) == 1
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == 1
        assert session.get(Letter, letter_id).status == "fully_executed"


def test_signing_order_holds_later_signers(database, letter_id):
    _, (company, executive) = send(database, letter_id, signing_order=True)
    with database.transaction() as session:
        view = env.view_signing(session, executive, SIGNER)
        assert view.waiting_for == ["Eliot Protsch"] and not view.can_sign
        assert view.counterpart.status == "created"
    with pytest.raises(LinkError, match="Eliot Protsch must sign first"):
        sign(database, executive)
    sign(database, company)
    with database.transaction() as session:
        assert env.view_signing(session, executive, SIGNER).can_sign


def test_expired_link_changes_nothing(database, letter_id):
    _, (company, _) = send(database, letter_id, link_days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(LinkError, match="expired"):
        sign(database, company, now=later)
    with database.transaction() as session, pytest.raises(LinkError, match="expired"):
        env.view_signing(session, company, SIGNER, now=later)
    with database.transaction() as session:
        assert {c.status for c in session.scalars(select(Counterpart))} == {"sent"}


def test_unknown_and_tampered_tokens(database, letter_id):
    _, (company, _) = send(database, letter_id)
    for token in ("nope", company[:-1] + ("A" if company[-1] != "A" else "B"), "x" * 43):
        with database.transaction() as session, pytest.raises(env.NotFoundError):
            env.view_signing(session, token, SIGNER)


def test_void_stops_links_and_unlocks_editing(database, letter_id, reference_terms):
    _, (company, _) = send(database, letter_id)
    with database.transaction() as session, pytest.raises(StateError, match="void"):
        revise_terms(session, letter_id, reference_terms, None)
    with database.transaction() as session, pytest.raises(CounterpartError, match="reason"):
        env.void_envelope(session, letter_id, "  ", STAFF)
    with database.transaction() as session:
        env.void_envelope(session, letter_id, "Terms changed", STAFF)
    with pytest.raises(LinkError, match="withdrawn") as caught:
        sign(database, company)
    assert caught.value.reason == "voided"
    assert letter_status(database, letter_id) == "voided"
    with database.transaction() as session:
        assert revise_terms(session, letter_id, reference_terms, None).number == 2


def test_decline_with_a_reason(database, letter_id):
    _, (company, executive) = send(database, letter_id)
    with database.transaction() as session, pytest.raises(CounterpartError, match="reason"):
        env.decline_counterpart(session, executive, reason="", actor=SIGNER)
    with database.transaction() as session:
        env.decline_counterpart(session, executive, reason="Wrong rate", actor=SIGNER)
    assert letter_status(database, letter_id) == "declined"
    with pytest.raises(LinkError, match="declined"):
        sign(database, company)


def test_consent_and_signature_are_required(database, letter_id):
    _, (company, _) = send(database, letter_id)
    with database.transaction() as session, pytest.raises(CounterpartError, match="consent"):
        env.sign_counterpart(session, company, consent=False,
                             signature={"type": "typed", "text": "E"}, actor=SIGNER)
    for signature, message in (({"type": "typed", "text": " "}, "signature.text"),
                               ({"type": "drawn", "png": "%%%"}, "base64"),
                               ({"type": "stamp"}, "signature.type")):
        with database.transaction() as session, pytest.raises(CounterpartError,
                                                               match=message):
            env.sign_counterpart(session, company, consent=True, signature=signature,
                                 actor=SIGNER)
    with database.transaction() as session:
        assert {c.status for c in session.scalars(select(Counterpart))} == {"sent"}


def test_paper_counterparts(database, letter_id, sealer):
    envelope_id, (company, _) = send(database, letter_id)
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        letter_pdf = env.letter_pdf_for(session, envelope)
        executive_id = envelope.counterparts[1].id
    scan = extract_pages(letter_pdf, [2])
    with database.transaction() as session, pytest.raises(DocumentError, match="pages"):
        env.upload_paper_counterpart(session, letter_id, executive_id,
                                     extract_pages(letter_pdf, [0, 1]), "scan.pdf", STAFF)
    with database.transaction() as session:
        _, new, complete = env.upload_paper_counterpart(session, letter_id, executive_id,
                                                        scan, "scan.pdf", STAFF)
    assert new and not complete
    with database.transaction() as session:
        _, new, _ = env.upload_paper_counterpart(session, letter_id, executive_id, scan,
                                                 "scan.pdf", STAFF)
    assert not new  # the same file twice is one upload
    with database.transaction() as session, pytest.raises(StateError, match="already signed"):
        env.upload_paper_counterpart(session, letter_id, executive_id, letter_pdf,
                                     "other.pdf", STAFF)
    assert sign(database, company) == ("signed", True)
    document = env.assemble_envelope(database, envelope_id, sealer)
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
        record = env.audit_record(session, letter_id)
    assert [s["method"] for s in record["envelope"]["signers"]] == ["typed", "paper"]
    assert record["chain"]["ok"]
    assert len(pypdf.PdfReader(io.BytesIO(executed)).pages) >= 6


class BrokenSealer:
    """A sealer whose key is unusable, as when a PKCS#12 file was replaced mid-run."""

    certificate = None
    timestamp_url = None
    signer = None


def test_failed_assembly_leaves_the_letter_partially_executed_and_retries(
        database, letter_id, sealer):
    envelope_id, tokens = send(database, letter_id)
    for token in tokens:
        sign(database, token)
    with pytest.raises(CounterpartError, match="Assembling the executed PDF failed"):
        env.assemble_envelope(database, envelope_id, BrokenSealer())
    assert letter_status(database, letter_id) == "partially_executed"
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == 0
    assert env.retry_assembly(database, envelope_id, sealer) is not None
    assert letter_status(database, letter_id) == "fully_executed"


def test_verify_tells_known_intact_and_modified(database, letter_id, sealer, reference_pdf):
    envelope_id, tokens = send(database, letter_id)
    for token in tokens:
        sign(database, token)
    document = env.assemble_envelope(database, envelope_id, sealer)
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
        good = env.verify_document(session, executed, sealer)
        middle = len(executed) // 3
        flipped = executed[:middle] + bytes([executed[middle] ^ 0x01]) + executed[middle + 1:]
        bad = env.verify_document(session, flipped, sealer)
        stranger = env.verify_document(session, reference_pdf, sealer)
        writer = pypdf.PdfWriter(io.BytesIO(executed), incremental=True)
        writer.add_metadata({"/Note": "amended after execution"})
        buffer = io.BytesIO()
        writer.write(buffer)
        appended = env.verify_document(session, buffer.getvalue(), sealer)
    assert good["known"] and good["intact"]
    assert [s["name"] for s in good["signers"]] == ["Eliot Protsch", "John R. Tucker"]
    assert bad["known"] and not bad["intact"] and bad["modified"]
    assert not stranger["known"] and not stranger["intact"]
    assert appended["known"] and not appended["intact"] and appended["modified"]


def test_a_lost_link_is_replaced_and_the_old_one_stops(database, letter_id):
    _, (company, executive) = send(database, letter_id)
    with database.transaction() as session:
        envelope_id = session.scalar(select(Envelope.id))
        company_id = session.get(Envelope, envelope_id).counterparts[0].id
        fresh = env.reissue_link(session, letter_id, company_id, STAFF)
    assert fresh.counterpart_id == company_id and fresh.token != company
    with database.transaction() as session, pytest.raises(env.NotFoundError):
        env.view_signing(session, company, SIGNER)
    assert sign(database, fresh.token) == ("signed", False)
    with database.transaction() as session, pytest.raises(StateError, match="is signed"):
        env.reissue_link(session, letter_id, company_id, STAFF)
    with database.transaction() as session:
        assert [e.type for e in events_of(session, letter_id)].count("sent") == 3
