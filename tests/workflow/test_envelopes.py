"""Execution in counterparts, end to end in the domain: send, view, sign, upload, void, assemble."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import re
import shutil
import threading
from pathlib import Path

import docx
import pypdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from held_jobs import held_jobs
from PIL import Image, ImageDraw
from scans import scan_of
from sqlalchemy import func, select, update
from support import acknowledged, letter_words, pdftotext

from workflow import convert, jobs
from workflow import envelopes as env
from workflow.accounts import create_user
from workflow.audit import events_of, verify_chain
from workflow.errors import (
    CounterpartError,
    DocumentError,
    LinkError,
    ScanCheckError,
    SigningOrderError,
    StateError,
)
from workflow.letters import (
    create_letter,
    generate_document,
    pending_documents,
    revise_terms,
    store_blob,
)
from workflow.models import Counterpart, Document, Envelope, Letter
from workflow.pdfs import PaperSignature, extract_pages, signing_field, stamp_signatures
from workflow.render import ordinal_day
from workflow.seal import check_seal, load_or_create_sealer

STAFF = env.Actor("ann@example.com", "10.0.0.1", "pytest staff browser")
CASES = Path(__file__).resolve().parents[1] / "data" / "cases"
SIGNER = env.Actor("signer", "203.0.113.7", "Mozilla/5.0 (Phone) pytest")


@pytest.fixture(autouse=True)
def _one_libreoffice(converter, monkeypatch):
    """Signing and assembly convert with the suite's one LibreOffice when given no converter."""
    monkeypatch.setattr(convert, "_default", converter)


def outline(pdf: bytes) -> list[tuple[str, int]]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return [(item.title, reader.get_destination_page_number(item)) for item in reader.outline]




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


@pytest.fixture(autouse=True)
def queue(database, converter, sealer):
    """The job queue holds what these tests enqueue (the assembly after the last signature)
    until a test runs it, as a worker would; most call the domain's assembly themselves."""
    with held_jobs(jobs.Runtime(database, converter=converter, sealer=sealer)) as held:
        yield held


def executed_count(database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf"))


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
            ("company", "Eliot Protsch", "ready"), ("executive", "John R. Tucker", "ready")]
        assert all(c.token_hash == env.token_hash(t) for c, t in zip(rows, tokens, strict=True))
        assert tokens[0] not in str([c.token_hash for c in rows])
        envelope = session.get(Envelope, envelope_id)
        assert envelope.expires_at - envelope.created_at == dt.timedelta(days=30)
    assert letter_status(database, letter_id) == "out_for_signature"


@pytest.mark.parametrize(("signers", "message"), [
    ([("company", "Eliot Protsch"), ("witness", "Pat Witness")],
     r"signers\[1\]\.role: 'witness' is not a party of this template; its parties are "
     r"company \(The company, by its chair\), executive \(The executive\)"),
    ([("executive", "John R. Tucker"), ("executive", "Someone Else")],
     r"signers\[1\]\.role: 'executive' is already signer 1; each party signs once"),
    ([("company", "Eliot Protsch")],
     r"signers: every party signs; give a signer for executive \(The executive\)"),
])
def test_sending_needs_each_party_of_the_template_once(database, letter_id, signers, message):
    with database.transaction() as session, pytest.raises(CounterpartError, match=message):
        env.send_envelope(session, letter_id, [env.SignerSpec(*s) for s in signers], STAFF)
    assert letter_status(database, letter_id) == "generated"


def test_a_signer_is_tied_to_a_party_not_to_a_printed_name(database, letter_id):
    # Staff may send to whoever signs for a party: the role's field gives the spot.
    with database.transaction() as session:
        envelope, _links = env.send_envelope(session, letter_id, [
            env.SignerSpec("executive", "Someone Else"),
            env.SignerSpec("company", "Eliot Protsch")], STAFF)
        assert [(c.position, c.role, c.name) for c in envelope.counterparts] == [
            (1, "executive", "Someone Else"), (2, "company", "Eliot Protsch")]


def test_default_signers_come_from_the_template_parties(spec, valid_terms):
    assert env.default_signers(spec, valid_terms) == [
        env.SignerSpec("company", "Eliot Protsch"), env.SignerSpec("executive", "John R. Tucker")]


def test_full_execution_typed_and_drawn(database, letter_id, sealer, reference_words, queue):
    envelope_id, (company, executive) = send(database, letter_id)
    with database.transaction() as session:
        view = env.view_signing(session, executive, SIGNER)
        assert view.can_sign and view.counterpart.status == "viewed"
    assert sign(database, company) == ("signed", False)
    assert letter_status(database, letter_id) == "partially_executed"
    assert not any("assemble" in name for name in queue.names())
    assert sign(database, executive, {"type": "drawn", "png": drawn_png()}) == ("signed", True)
    # The last signature queued the assembly; until it runs the letter is being assembled.
    assert [n for n in queue.names() if "assemble" in n] == [
        f"workflow.envelopes.assemble_envelope_job({envelope_id!r},)"]
    with database.transaction() as session:
        assert env.assembly_state(session, envelope_id) == "running"
    assert letter_status(database, letter_id) == "partially_executed"
    document = env.assemble_envelope(database, envelope_id, sealer)
    assert document is not None
    assert env.assemble_envelope(database, envelope_id, sealer) is None  # exactly once
    queue.run()  # the queued job finds the executed PDF made: it adds nothing
    assert executed_count(database) == 1
    with database.transaction() as session:
        assert env.assembly_state(session, envelope_id) == "done"
    assert letter_status(database, letter_id) == "fully_executed"
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "executed_pdf")) == 1
        assert [e.type for e in events_of(session, letter_id)].count("executed") == 1
        assert verify_chain(session, letter_id).ok
        methods = [c.method for c in session.scalars(select(Counterpart)
                                                     .order_by(Counterpart.position))]
        zones_and_dates = [(c.time_zone, c.signed_on) for c in session.scalars(
            select(Counterpart).order_by(Counterpart.position))]
    assert methods == ["typed", "drawn"]
    # No zone from the signer: the date of signing is the date in UTC.
    assert [zone for zone, _ in zones_and_dates] == ["UTC", "UTC"]
    executive_on = zones_and_dates[1][1]
    reader = pypdf.PdfReader(io.BytesIO(executed))
    assert len(reader.pages) >= 6  # the conformed letter, 2 signature pages, the certificate
    # The conformed copy: the model letter word for word, the acknowledgement dated.
    letter_text = "\n".join(p.extract_text() for p in reader.pages[:3])
    notes = re.findall(r"Signed electronically on \w+ \d+, \d{4}", letter_text)
    assert len(notes) == 2  # beside each signer's name
    assert letter_words(re.sub(r"Signed electronically on \w+ \d+, \d{4}", "", letter_text)) \
        == acknowledged(reference_words, executive_on)
    assert reader.pages[2].images  # both signatures stamped on it
    executive_page = " ".join(reader.pages[4].extract_text().split())
    assert (f"this {ordinal_day(executive_on.day)} day of {executive_on:%B}, "
            f"{executive_on.year}") in executive_page
    certificate = " ".join(p.extract_text() for p in reader.pages[5:])
    for words in ("Certificate of completion", envelope_id, "Eliot Protsch", "John R. Tucker",
                  "203.0.113.7", "typed", "drawn"):
        assert words in " ".join(certificate.split()), words
    assert outline(executed) == [
        ("Executed letter (conformed copy)", 0), ("Counterpart signed by Eliot Protsch", 3),
        ("Counterpart signed by John R. Tucker", 4), ("Certificate of completion", 5)]
    check = check_seal(executed, sealer.certificate)
    assert check.sealed and check.intact and check.signed_by_us


def case_letter(database, converter, name: str) -> int:
    """Create and generate a letter from a ``POST /api/letters`` body in tests/data/cases."""
    body = json.loads((CASES / name).read_text(encoding="utf-8"))
    with database.transaction() as session:
        letter_id = create_letter(session, body["template"], body["terms"], None).id
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)
    return letter_id


def signed_copy(database, token) -> bytes:
    with database.transaction() as session:
        counterpart, _ = env.envelope_for_token(session, token)
        return env.document_bytes(session, session.get(Document, counterpart.signed_document_id))


def test_the_acknowledgement_reads_the_true_date_of_signing(database, converter, sealer):
    # The letter is dated February 10, 2026; the executive signs on the evening of March 3,
    # 2027 in New York, when it is already March 4 in UTC.
    letter_id = case_letter(database, converter, "acknowledgement-february-letter.json")
    sent_at = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
    envelope_id, (company, executive) = send(database, letter_id, now=sent_at)
    with database.transaction() as session:
        unsigned = env.letter_pdf_for(session, session.get(Envelope, envelope_id))
    assert "this ___ day of February, 2026" in pdftotext(unsigned)

    sign(database, company, time_zone="Europe/London", converter=converter,
         now=dt.datetime(2027, 3, 2, 15, 0, tzinfo=dt.UTC))
    assert sign(database, executive, {"type": "typed", "text": "John R. Tucker"},
                time_zone="America/New_York", converter=converter,
                now=dt.datetime(2027, 3, 4, 1, 30, tzinfo=dt.UTC)) == ("signed", True)
    with database.transaction() as session:
        rows = session.scalars(select(Counterpart).order_by(Counterpart.position)).all()
        assert [(c.time_zone, c.signed_on) for c in rows] == [
            ("Europe/London", dt.date(2027, 3, 2)), ("America/New_York", dt.date(2027, 3, 3))]

    # Each signed counterpart is the letter rendered again with its own signer's date.
    executive_copy = pdftotext(signed_copy(database, executive))
    assert "this 3rd day of March, 2027" in executive_copy
    assert "Signed electronically on March 3, 2027" in executive_copy
    assert "February, 2026" not in executive_copy.split("Acknowledged")[1]
    company_copy = pdftotext(signed_copy(database, company))
    assert "this ___ day of February, 2026" in company_copy  # the executive has not signed it
    assert "Signed electronically on March 2, 2027" in company_copy

    document = env.assemble_envelope(database, envelope_id, sealer, converter)
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
    text = pdftotext(executed)
    conformed = pdftotext(extract_pages(executed, [0, 1, 2]))
    assert "this 3rd day of March, 2027" in conformed and "day of February" not in conformed
    assert "Signed electronically on March 2, 2027" in conformed
    assert "Signed electronically on March 3, 2027" in conformed
    assert "30th" not in text and "4th day" not in text
    # Then each counterpart's signature page as signed: the chair's, signed before the
    # executive, still has the blank; the executive's has the date.
    assert "this ___ day of February, 2026" in pdftotext(extract_pages(executed, [3]))
    assert "this 3rd day of March, 2027" in pdftotext(extract_pages(executed, [4]))
    assert "2027-03-04 01:30:00 UTC; date of signing March 3, 2027 (America/New_York)" in text
    assert "2027-03-02 15:00:00 UTC; date of signing March 2, 2027 (Europe/London)" in text


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "localtime", 42])
def test_an_unknown_time_zone_is_refused_and_changes_nothing(database, letter_id, zone):
    _, (company, _) = send(database, letter_id)
    with pytest.raises(CounterpartError, match="time_zone"):
        sign(database, company, time_zone=zone)
    with database.transaction() as session:
        assert {c.status for c in session.scalars(select(Counterpart))} == {"ready"}
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "signed_counterpart")) == 0


def test_a_tap_is_not_a_signature(database, letter_id):
    _, (company, executive) = send(database, letter_id)
    dot = base64.b64encode((CASES / "drawn-single-tap-dot.png").read_bytes()).decode()
    with pytest.raises(CounterpartError, match=r"signature\.png: The drawing is too small to "
                                               r"be a signature"):
        sign(database, company, {"type": "drawn", "png": dot})
    with pytest.raises(CounterpartError, match=r"signature\.pixel_ratio"):
        sign(database, company, {"type": "drawn", "png": dot, "pixel_ratio": "lots"})
    with database.transaction() as session:
        assert {c.status for c in session.scalars(select(Counterpart))} == {"ready"}
    drawing = base64.b64encode((CASES / "drawn-signature.png").read_bytes()).decode()
    assert sign(database, executive, {"type": "drawn", "png": "data:image/png;base64,"
                                      + drawing, "pixel_ratio": 2})[0] == "signed"


def test_a_letter_is_rendered_again_from_the_template_it_was_made_from(database, tmp_path,
                                                                     reference_terms):
    from sqlalchemy import delete

    from workflow.errors import TemplateError
    from workflow.letters import render_version
    from workflow.models import Blob, LetterVersion, Template, TemplateVersion
    from workflow.schema import DEFAULT_TEMPLATE_DIR

    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, templates)
    template = templates / "separation_letter.docx"
    with database.transaction() as session:
        letter_id = create_letter(session, "separation_letter", reference_terms, None,
                                  template_dir=templates).id
    # Legal staff then edit the template file.
    edited = docx.Document(str(template))
    for paragraph in edited.paragraphs:
        if paragraph.text == "Sincerely,":
            paragraph.runs[0].text = "Yours faithfully,"
    edited.save(str(template))

    def rendered(signing=None) -> str:
        with database.transaction() as session:
            version = session.scalar(select(LetterVersion).where(
                LetterVersion.letter_id == letter_id))
            data = render_version(session, version, signing, template_dir=templates)
        return "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)

    text = rendered({"executive": dt.date(2027, 3, 3)})
    assert "Sincerely," in text and "Yours faithfully," not in text
    assert "this 3rd day of March, 2027" in text
    with database.transaction() as session:
        version = session.scalar(select(LetterVersion).where(
            LetterVersion.letter_id == letter_id))
        # As a version made before the template library: no template version, no kept copy.
        version.template_version_id = None
        session.flush()
        session.execute(delete(TemplateVersion))
        session.execute(delete(Template))
        session.delete(session.get(Blob, version.template_sha256))
    # Without its kept copy, a version renders from the file only if the file is unchanged.
    with pytest.raises(TemplateError, match="cannot be rendered again exactly as it was sent"):
        rendered()
    shutil.copy(DEFAULT_TEMPLATE_DIR / "separation_letter.docx", template)
    assert "this ___ day of July, 2006" in rendered()


def image_boxes(pdf: bytes, page_index: int) -> list[tuple[float, ...]]:
    document = pdfium.PdfDocument(pdf)
    try:
        return [tuple(obj.get_bounds()) for obj in document[page_index].get_objects(
            filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])]
    finally:
        document.close()


def ink_crop() -> bytes:
    """The signer's ink as the paper upload crops it from a scan: transparent around it."""
    image = Image.new("RGBA", (300, 80), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(10, 60), (80, 12), (160, 66), (290, 20)],
                               fill=(20, 30, 120, 255), width=5)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_executed_letter_shows_a_paper_signature_from_its_scan(database, letter_id,
                                                                  converter, sealer):
    envelope_id, (company, _) = send(database, letter_id)
    with database.transaction() as session:
        letter_pdf = env.letter_pdf_for(session, session.get(Envelope, envelope_id))
    line = signing_field(letter_pdf, "executive").line_box
    crop_box = [line[0] + 4, line[1] - 4, line[0] + 154, line[1] + 36]
    # The scan: a cover page, then the signature page signed in ink (its page index 1).
    signed_page = extract_pages(stamp_signatures(letter_pdf, [
        PaperSignature("executive", ink_crop(), tuple(crop_box))]), [2])
    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(io.BytesIO(extract_pages(letter_pdf, [0]))))
    writer.append(pypdf.PdfReader(io.BytesIO(signed_page)))
    buffer = io.BytesIO()
    writer.write(buffer)
    scan = buffer.getvalue()
    # What the paper upload records for the executive (its own rules are tested with it).
    with database.transaction() as session:
        executive = session.get(Envelope, envelope_id).counterparts[1]
        document = env._store_document(session, executive.envelope, "scanned_counterpart",
                                       scan, "counterpart-2-john-r-tucker-scan.pdf")
        now = env.utcnow()
        executive.status, executive.method = "signed", "paper"
        executive.signed_at = executive.uploaded_at = now
        executive.signed_on = dt.date(2027, 3, 2)
        executive.signed_document_id = document.id
        executive.signature_sha256 = env.store_blob(session, ink_crop())
        executive.paper = {"filename": "tucker.pdf", "sha256": "0" * 64, "signature_page": 1,
                           "ink": "found", "ink_accepted_by": None,
                           "order_override_reason": None, "order_override_by": None,
                           "crop_box": crop_box, "recorded_by": "ann@example.com"}
    assert sign(database, company, converter=converter) == ("signed", True)
    document = env.assemble_envelope(database, envelope_id, sealer, converter)
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
    assert outline(executed)[:3] == [
        ("Executed letter (conformed copy)", 0), ("Counterpart signed by Eliot Protsch", 3),
        ("Counterpart signed by John R. Tucker", 4)]
    conformed_page = pdftotext(extract_pages(executed, [2]))
    assert "this 2nd day of March, 2027" in conformed_page
    assert "Signed on paper on March 2, 2027" in conformed_page
    assert "Signed electronically on" in conformed_page  # the chair, online
    boxes = image_boxes(executed, 2)
    assert any(box == pytest.approx(crop_box, abs=0.05) for box in boxes)  # the ink at 1:1
    assert len(boxes) == 2
    # The executive's own page is the signed page of the scan, redrawn as one picture the
    # size of the page (recorded without an inert copy, it is made at assembly): the ink is
    # where it was signed, and nothing of the scan's own structure (its text) is kept.
    (picture,) = image_boxes(executed, 4)
    assert picture == pytest.approx((0, 0, 612, 792), abs=0.05)
    assert pdftotext(extract_pages(executed, [4])).strip() == ""
    rendered = pdfium.PdfDocument(executed)
    try:
        grey = rendered[4].render(scale=1).to_pil().convert("L")
    finally:
        rendered.close()
    x0, y0, x1, y1 = crop_box
    assert min(grey.crop((int(x0), int(792 - y1), int(x1), int(792 - y0))).getdata()) < 100
    certificate = pdftotext(executed).split("Certificate of completion", 1)[1]
    for words in ("March 2, 2027 (as given by staff from the signed copy)",
                  "ink found on the signer's signature line", "Recorded by ann@example.com",
                  "link handed over by staff"):
        assert words in certificate, words


def test_a_signed_copy_is_made_outside_the_transaction_then_recorded_once(database, letter_id):
    _, (company, _) = send(database, letter_id)
    copies = [env.prepare_signature(database, company, consent=True, time_zone="Asia/Tokyo",
                                    signature={"type": "typed", "text": "Eliot Protsch"})
              for _ in range(2)]
    with database.transaction() as session:
        # Making the copies recorded nothing.
        assert {c.status for c in session.scalars(select(Counterpart))} == {"ready"}
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "signed_counterpart")) == 0
        counterpart, complete = env.record_signature(session, company, copies[0], SIGNER)
        assert (counterpart.status, complete) == ("signed", False)
        assert counterpart.signed_at == copies[0].at and counterpart.time_zone == "Asia/Tokyo"
    with database.transaction() as session, pytest.raises(LinkError, match="already been signed"):
        env.record_signature(session, company, copies[1], SIGNER)
    assert "Signed electronically on" in pdftotext(signed_copy(database, company))


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
        assert {c.status for c in session.scalars(select(Counterpart))} == {"ready"}


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
        assert {c.status for c in session.scalars(select(Counterpart))} == {"ready"}


def paper_scan(database, envelope_id, **options) -> bytes:
    with database.transaction() as session:
        letter_pdf = env.letter_pdf_for(session, session.get(Envelope, envelope_id))
    return scan_of(letter_pdf, **options)


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def upload_paper(database, letter_id, counterpart_id, data, name="scan.pdf", **choices):
    choices.setdefault("signed_on", today())
    with database.transaction() as session:
        counterpart, new, complete = env.upload_paper_counterpart(
            session, letter_id, counterpart_id, data, name, STAFF,
            choices=env.PaperChoices(**choices))
        return counterpart.status, new, complete


def counterpart_row(database, counterpart_id) -> Counterpart:
    with database.transaction() as session:
        counterpart = session.get(Counterpart, counterpart_id)
        session.expunge(counterpart)
        return counterpart


def test_paper_counterparts(database, letter_id, sealer):
    envelope_id, (company, _) = send(database, letter_id)
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        letter_pdf = env.letter_pdf_for(session, envelope)
        executive_id = envelope.counterparts[1].id
    signed = scan_of(letter_pdf, signed_by=["executive"], angle=-2.0, paper="a4")
    with pytest.raises(DocumentError, match="pages"):
        upload_paper(database, letter_id, executive_id, extract_pages(letter_pdf, [0, 1]))
    # The system's own documents, or their pages with nothing added, are not signed scans.
    for data, name, message in (
            (letter_pdf, "letter.pdf", "letter.pdf is the letter's PDF"),
            (extract_pages(letter_pdf, [2]), "page3.pdf", "page3.pdf is the unsigned counterpart"),
            (scan_of(letter_pdf, angle=1.5, noise=18), "blank-scan.pdf",
             "blank-scan.pdf is the unsigned counterpart")):
        with pytest.raises(ScanCheckError, match=message) as refused:
            upload_paper(database, letter_id, executive_id, data, name)
        assert refused.value.code == "unsigned_copy"
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Document).where(
            Document.kind == "scanned_counterpart")) == 0

    assert upload_paper(database, letter_id, executive_id, signed, "tucker.pdf",
                        signed_on=today()) == ("signed", True, False)
    row = counterpart_row(database, executive_id)
    assert row.method == "paper" and row.signed_on.isoformat() == today()
    assert row.uploaded_at == row.signed_at
    assert row.paper["filename"] == "tucker.pdf" and row.paper["ink"] == "found"
    assert row.paper["sha256"] == hashlib.sha256(signed).hexdigest()
    assert row.paper["signature_page"] == 0 and row.paper["recorded_by"] == STAFF.name
    assert row.paper["ink_accepted_by"] is None and row.paper["order_override_reason"] is None
    x0, y0, x1, y1 = row.paper["crop_box"]
    line = signing_field(letter_pdf, "executive").line_box
    assert x0 < line[2] and x1 > line[0] and y0 <= line[3] + 4 < y1
    with database.transaction() as session:
        ink = Image.open(io.BytesIO(env.blob_bytes(session, row.signature_sha256)))
        assert ink.mode == "RGBA" and ink.getchannel("A").getextrema() == (0, 255)
        stored = env.document_bytes(session, session.get(Document, row.signed_document_id))
    assert stored == signed  # the scan as uploaded, byte for byte

    assert upload_paper(database, letter_id, executive_id, signed, "again.pdf")[1] is False
    with pytest.raises(StateError, match="already signed"):
        upload_paper(database, letter_id, executive_id,
                     scan_of(letter_pdf, signed_by=["executive"], seed=9))
    assert sign(database, company) == ("signed", True)
    document = env.assemble_envelope(database, envelope_id, sealer)
    with database.transaction() as session:
        executed = env.document_bytes(session, session.get(Document, document.id))
        record = env.audit_record(session, letter_id)
    assert [s["method"] for s in record["envelope"]["signers"]] == ["typed", "paper"]
    assert record["chain"]["ok"]
    assert len(pypdf.PdfReader(io.BytesIO(executed)).pages) >= 6


def test_the_systems_own_documents_are_not_signed_scans(database, letter_id):
    envelope_id, (company, _) = send(database, letter_id)
    sign(database, company)
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        stamped = env.document_bytes(session, session.get(
            Document, envelope.counterparts[0].signed_document_id))
        executive_id = envelope.counterparts[1].id
        # An executed PDF of this system, stored as the assembly stores one.
        executed = b"%PDF-1.7\n% an executed letter\n"
        session.add(Document(letter_id=letter_id, version_id=envelope.version_id,
                             kind="executed_pdf", status="ready",
                             blob_sha256=store_blob(session, executed), size=len(executed),
                             media_type="application/pdf", filename="executed.pdf"))
    for data, name, message in (
            (stamped, "stamped.pdf", "stamped.pdf is a counterpart this system stamped when it "
                                     "was signed online"),
            (executed, "sealed.pdf", "sealed.pdf is an executed PDF this system sealed")):
        with pytest.raises(ScanCheckError, match=message) as refused:
            upload_paper(database, letter_id, executive_id, data, name)
        assert refused.value.code == "unsigned_copy"
    assert counterpart_row(database, executive_id).status == "ready"


def test_no_ink_on_the_signers_line_is_refused_until_staff_accept_it(database, letter_id):
    envelope_id, _ = send(database, letter_id)
    with database.transaction() as session:
        executive_id = session.get(Envelope, envelope_id).counterparts[1].id
    # Signed, but by the chair on the chair's line: nothing on the executive's.
    scan = paper_scan(database, envelope_id, signed_by=["company"], paper="letter")
    with pytest.raises(ScanCheckError, match="No signature was found on John R. Tucker's "
                                             "signature line in chair.pdf") as refused:
        upload_paper(database, letter_id, executive_id, scan, "chair.pdf")
    assert refused.value.code == "ink_not_found" and "accept it anyway" in str(refused.value)
    assert counterpart_row(database, executive_id).status == "ready"
    assert upload_paper(database, letter_id, executive_id, scan, "chair.pdf",
                        accept_without_ink=True)[:2] == ("signed", True)
    row = counterpart_row(database, executive_id)
    assert row.paper["ink"] == "accepted_without_ink"
    assert row.paper["ink_accepted_by"] == STAFF.name
    with database.transaction() as session:
        signed = [e for e in events_of(session, letter_id) if e.type == "signed"][-1]
    assert signed.detail["ink"] == "accepted_without_ink"
    assert signed.detail["ink_accepted_by"] == STAFF.name


def test_the_signing_order_holds_on_paper_unless_staff_override_it(database, letter_id):
    envelope_id, _ = send(database, letter_id, signing_order=True)
    with database.transaction() as session:
        executive_id = session.get(Envelope, envelope_id).counterparts[1].id
    scan = paper_scan(database, envelope_id, signed_by=["executive"])
    with pytest.raises(SigningOrderError, match="Eliot Protsch must sign before John R. "
                                                "Tucker") as refused:
        upload_paper(database, letter_id, executive_id, scan)
    assert refused.value.code == "signing_order"
    with pytest.raises(CounterpartError, match="reason"):
        upload_paper(database, letter_id, executive_id, scan, override_order=True, reason=" ")
    assert counterpart_row(database, executive_id).status == "created"
    assert upload_paper(database, letter_id, executive_id, scan, override_order=True,
                        reason="The chair signs at the board meeting next week")[:2] == \
        ("signed", True)
    row = counterpart_row(database, executive_id)
    assert row.paper["order_override_reason"] == "The chair signs at the board meeting next week"
    assert row.paper["order_override_by"] == STAFF.name
    with database.transaction() as session:
        signed = [e for e in events_of(session, letter_id) if e.type == "signed"][-1]
    assert signed.detail["order_override_reason"].startswith("The chair signs")
    assert letter_status(database, letter_id) == "partially_executed"


def test_the_date_of_signing_is_required_and_checked(database, letter_id):
    envelope_id, _ = send(database, letter_id)
    with database.transaction() as session:
        executive_id = session.get(Envelope, envelope_id).counterparts[1].id
    scan = paper_scan(database, envelope_id, signed_by=["executive"])
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).date().isoformat()
    for value, message in ((None, "signed_on: give the date"), ("tomorrow", "YYYY-MM-DD"),
                           (future, "is in the future"), ("1999-01-01", "before the letter")):
        with pytest.raises(CounterpartError, match=message):
            upload_paper(database, letter_id, executive_id, scan, signed_on=value)
    assert counterpart_row(database, executive_id).status == "ready"


def test_a_paper_upload_can_be_undone_until_the_letter_is_executed(database, letter_id,
                                                                   sealer, queue):
    envelope_id, (company, _) = send(database, letter_id)
    with database.transaction() as session:
        executive_id = session.get(Envelope, envelope_id).counterparts[1].id
    scan = paper_scan(database, envelope_id, signed_by=["executive"])
    upload_paper(database, letter_id, executive_id, scan, "first.pdf")
    scanned = counterpart_row(database, executive_id).paper["original_document_id"]
    with database.transaction() as session:
        undone = env.undo_paper_counterpart(session, letter_id, executive_id, STAFF)
        assert undone.status == "ready" and undone.method is None
    row = counterpart_row(database, executive_id)
    assert (row.signed_at, row.signed_document_id, row.paper, row.signed_on) == \
        (None, None, None, None)
    assert letter_status(database, letter_id) == "out_for_signature"
    with database.transaction() as session:
        assert session.get(Document, scanned).kind == "scanned_counterpart"  # kept
        event = events_of(session, letter_id)[-1]
        assert verify_chain(session, letter_id).ok
    assert event.type == "upload_undone" and event.actor == STAFF.name
    assert event.detail["document_id"] == scanned and event.detail["file"] == "first.pdf"
    with database.transaction() as session, pytest.raises(StateError, match="not signed on "
                                                                            "paper"):
        env.undo_paper_counterpart(session, letter_id, executive_id, STAFF)

    # Uploaded again; with the chair signed too the letter is partially executed after undo.
    upload_paper(database, letter_id, executive_id, scan, "again.pdf")
    assert sign(database, company) == ("signed", True)
    with database.transaction() as session:  # the assembly is queued
        assert env.assembly_state(session, envelope_id) == "running"
    with database.transaction() as session, pytest.raises(StateError, match="being assembled"):
        env.undo_paper_counterpart(session, letter_id, executive_id, STAFF)
    with database.transaction() as session:
        session.execute(update(Envelope).where(Envelope.id == envelope_id)
                        .values(assembly_state="failed"))
    with database.transaction() as session:
        env.undo_paper_counterpart(session, letter_id, executive_id, STAFF)
    assert letter_status(database, letter_id) == "partially_executed"
    queue.run()  # the job queued before the undo: not every counterpart is signed now
    assert executed_count(database) == 0
    with database.transaction() as session:
        assert not env.retry_assembly(session, envelope_id)  # nothing to retry either
    upload_paper(database, letter_id, executive_id, scan, "third.pdf")
    assert queue.run() >= 1
    assert executed_count(database) == 1
    with database.transaction() as session, pytest.raises(StateError, match="completed"):
        env.undo_paper_counterpart(session, letter_id, executive_id, STAFF)


def test_a_scan_staged_on_the_page_counts_only_when_confirmed(database, letter_id):
    envelope_id, _ = send(database, letter_id)
    with database.transaction() as session:
        executive_id = session.get(Envelope, envelope_id).counterparts[1].id
    unsigned_line = paper_scan(database, envelope_id, signed_by=["company"])
    signed = paper_scan(database, envelope_id, signed_by=["executive"], seed=4)
    with database.transaction() as session:
        first = env.stage_paper_counterpart(session, letter_id, executive_id, unsigned_line,
                                            "first.pdf", STAFF, signed_on=today())
    assert not first.ink_found and first.matched and first.filename == "first.pdf"
    assert counterpart_row(database, executive_id).status == "ready"
    with database.transaction() as session:
        second = env.stage_paper_counterpart(session, letter_id, executive_id, signed,
                                             "second.pdf", STAFF, signed_on=today())
    assert second.ink_found and second.document_id != first.document_id
    assert second.blank_page == 2 and second.signature_page == 0
    with database.transaction() as session, pytest.raises(StateError, match="Another scan"):
        env.confirm_paper_counterpart(session, letter_id, executive_id, STAFF,
                                      document_id=first.document_id,
                                      choices=env.PaperChoices(today()))
    with database.transaction() as session:
        env.discard_paper_upload(session, letter_id, executive_id, STAFF,
                                 document_id=second.document_id)
        assert env.pending_paper_upload(session, letter_id, executive_id) is None
    with database.transaction() as session:
        third = env.stage_paper_counterpart(session, letter_id, executive_id, signed,
                                            "third.pdf", STAFF, signed_on=today())
    with database.transaction() as session:
        counterpart, complete = env.confirm_paper_counterpart(
            session, letter_id, executive_id, STAFF, document_id=third.document_id,
            choices=env.PaperChoices(today()))
        assert counterpart.status == "signed" and not complete
    row = counterpart_row(database, executive_id)
    assert row.pending_document_id is None and row.paper["filename"] == "third.pdf"
    assert row.uploaded_at == third.uploaded_at < row.signed_at
    with database.transaction() as session:
        types = [e.type for e in events_of(session, letter_id)]
    assert types[-5:] == ["uploaded", "uploaded", "upload_discarded", "uploaded", "signed"]


def test_a_scan_with_only_an_owner_password_counts_from_a_readable_copy(database, letter_id):
    envelope_id, _ = send(database, letter_id)
    with database.transaction() as session:
        company_id = session.get(Envelope, envelope_id).counterparts[0].id
    original = (CASES / "scan-owner-password-only.pdf").read_bytes()
    assert upload_paper(database, letter_id, company_id, original, "owner.pdf")[:2] == \
        ("signed", True)
    row = counterpart_row(database, company_id)
    with database.transaction() as session:
        kept = env.document_bytes(session, session.get(Document,
                                                       row.paper["original_document_id"]))
        readable = env.document_bytes(session, session.get(Document, row.signed_document_id))
    assert kept == original and row.paper["sha256"] == hashlib.sha256(original).hexdigest()
    reader = pypdf.PdfReader(io.BytesIO(readable))
    assert not reader.is_encrypted and len(reader.pages) == 1


class BrokenSealer:
    """A sealer whose key is unusable, as when a PKCS#12 file was replaced mid-run."""

    certificate = None
    timestamp_url = None
    signer = None


def test_failed_assembly_leaves_the_letter_partially_executed_and_retries(
        database, letter_id, sealer, queue):
    envelope_id, tokens = send(database, letter_id)
    for token in tokens:
        sign(database, token)
    with database.transaction() as session:
        assert not env.retry_assembly(session, envelope_id)  # queued, not failed
    with pytest.raises(CounterpartError, match="Assembling the executed PDF failed"):
        env.assemble_envelope(database, envelope_id, BrokenSealer())
    assert letter_status(database, letter_id) == "partially_executed"
    assert executed_count(database) == 0
    with database.transaction() as session:
        envelope = session.get(Envelope, envelope_id)
        assert envelope.assembly_state == "failed" and envelope.assembly_error
    with database.transaction() as session:
        assert env.retry_assembly(session, envelope_id)  # enqueued once this commits
        assert env.assembly_state(session, envelope_id) == "running"
    queue.run()
    assert letter_status(database, letter_id) == "fully_executed"
    assert executed_count(database) == 1


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
        types = [e.type for e in events_of(session, letter_id)]
    assert types.count("sent") == 2 and types.count("new_link") == 1


# --- what statuses say, copies for signers, renewed links ----------------------------------

def counterparts(database) -> list[tuple[str, str, dt.datetime | None]]:
    with database.transaction() as session:
        return [(c.name, c.status, c.emailed_at) for c in session.scalars(
            select(Counterpart).order_by(Counterpart.position))]


def test_sent_means_the_mail_server_accepted_the_invitation(database, letter_id):
    with database.transaction() as session:
        _, links = env.send_envelope(session, letter_id, [
            env.SignerSpec("company", "Eliot Protsch", "eliot@capstone.test"),
            env.SignerSpec("executive", "John R. Tucker", "jt@home.test")], STAFF,
            signing_order=True, email_invitations=True)
    company, executive = (link.token for link in links)
    assert [(n, s) for n, s, _ in counterparts(database)] == [
        ("Eliot Protsch", "ready"), ("John R. Tucker", "created")]
    accepted_at = dt.datetime(2006, 7, 24, 14, 5, tzinfo=dt.UTC)
    with database.transaction() as session:
        company_id, executive_id = (c.id for c in session.scalars(
            select(Counterpart).order_by(Counterpart.position)))
        env.record_delivery(session, company_id, to="eliot@capstone.test", accepted=True,
                            answer="250 2.0.0 Ok: queued as 4F1A",
                            link_hash=env.token_hash(company), at=accepted_at)
        env.record_delivery(session, executive_id, to="jt@home.test", accepted=False,
                            answer="550 5.1.1 <jt@home.test>: mailbox unavailable",
                            link_hash=env.token_hash(executive), at=accepted_at)
    assert counterparts(database) == [("Eliot Protsch", "sent", accepted_at),
                                      ("John R. Tucker", "created", None)]
    with database.transaction() as session:
        events = events_of(session, letter_id)
    emailed = next(e for e in events if e.type == "emailed")
    assert emailed.detail["to"] == "eliot@capstone.test" and emailed.at == accepted_at
    assert emailed.detail["answer"].startswith("250 ")
    failed = next(e for e in events if e.type == "email_failed")
    assert failed.detail["to"] == "jt@home.test" and "550 5.1.1" in failed.detail["error"]
    assert [e.detail["delivery"] for e in events if e.type == "sent"] == ["email", "email"]

    # The company signs: the executive's turn comes, but nobody told them: "ready", not sent.
    sign(database, company)
    assert [(n, s) for n, s, _ in counterparts(database)] == [
        ("Eliot Protsch", "signed"), ("John R. Tucker", "ready")]
    with database.transaction() as session:
        turn = [e for e in events_of(session, letter_id) if e.type == "link_ready"]
        assert [e.counterpart_id for e in turn] == [executive_id]
        assert verify_chain(session, letter_id).ok


def test_an_email_of_a_link_replaced_meanwhile_changes_no_status(database, letter_id):
    _, (company, _) = send(database, letter_id)
    with database.transaction() as session:
        company_id = session.scalars(select(Counterpart).order_by(Counterpart.position)).first().id
        env.reissue_link(session, letter_id, company_id, STAFF)
        env.record_delivery(session, company_id, to="eliot@capstone.test", accepted=True,
                            answer="250 OK", link_hash=env.token_hash(company))
    assert counterparts(database)[0] == ("Eliot Protsch", "ready", None)


def test_a_signed_link_reads_and_gives_the_signer_their_copies(database, letter_id, sealer):
    envelope_id, (company, executive) = send(database, letter_id, link_days=5)
    with database.transaction() as session, pytest.raises(StateError, match="not signed"):
        env.signer_document(session, company, "signed", SIGNER)
    sign(database, company)
    with database.transaction() as session:
        view = env.view_signing(session, company, SIGNER)
        assert view.signed and not view.can_sign
        copy = env.signer_document(session, company, "signed", SIGNER)
        own = session.get(Document, session.get(Envelope, envelope_id)
                          .counterparts[0].signed_document_id)
        assert copy.id == own.id and copy.kind == "signed_counterpart"
    with database.transaction() as session, pytest.raises(StateError,
                                                           match="still to sign: John R"):
        env.signer_document(session, company, "executed", SIGNER)
    with pytest.raises(LinkError, match="already been signed"):
        sign(database, company)  # the link reads; it never signs again
    sign(database, executive)
    executed = env.assemble_envelope(database, envelope_id, sealer)
    with database.transaction() as session:
        assert env.signer_document(session, executive, "executed", SIGNER).id == executed.id
        downloads = [e for e in events_of(session, letter_id) if e.type == "downloaded"]
    assert [(d.actor, d.detail["document"]) for d in downloads] == [
        ("Eliot Protsch", "counterpart-1-eliot-protsch-signed.pdf"),
        ("John R. Tucker", executed.filename)]
    assert downloads[0].ip == SIGNER.ip
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
    with database.transaction() as session, pytest.raises(LinkError, match="lifetime") as gone:
        env.signer_document(session, company, "signed", SIGNER, now=later)
    assert gone.value.reason == "expired"


def test_a_signed_copy_is_refused_once_the_letter_is_voided_or_declined(database, letter_id):
    _, (company, executive) = send(database, letter_id)
    sign(database, company)
    with database.transaction() as session:
        env.decline_counterpart(session, executive, reason="Wrong rate", actor=SIGNER)
    with database.transaction() as session, pytest.raises(LinkError) as declined:
        env.signer_document(session, company, "signed", SIGNER)
    assert declined.value.reason == "declined"
    with database.transaction() as session:
        env.void_envelope(session, letter_id, "Start over", STAFF)
    with database.transaction() as session, pytest.raises(LinkError) as voided:
        env.view_signing(session, company, SIGNER)
    assert voided.value.reason == "voided"


def test_an_expired_link_is_renewed_and_only_that_one_reopens(database, letter_id):
    envelope_id, (company, executive) = send(database, letter_id, link_days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with database.transaction() as session:
        assert env.expire_links(session, now=later) == 2
        company_id = session.get(Envelope, envelope_id).counterparts[0].id
    with database.transaction() as session, pytest.raises(CounterpartError, match="link_days"):
        env.reissue_link(session, letter_id, company_id, STAFF, link_days=366, now=later)
    with database.transaction() as session:
        fresh = env.reissue_link(session, letter_id, company_id, STAFF, link_days=10,
                                 now=later)
        envelope = session.get(Envelope, envelope_id)
        assert envelope.expires_at == later + dt.timedelta(days=10)
        assert [c.status for c in envelope.counterparts] == ["ready", "expired"]
        renewed = [e for e in events_of(session, letter_id) if e.type == "new_link"][0]
        assert renewed.detail["status_before"] == "expired"
        assert renewed.detail["expires_at"] == envelope.expires_at.isoformat()
    with database.transaction() as session:
        assert env.view_signing(session, fresh.token, SIGNER, now=later).can_sign
    with database.transaction() as session, pytest.raises(LinkError, match="expired"):
        env.view_signing(session, executive, SIGNER, now=later)  # theirs stays expired
    with database.transaction() as session, pytest.raises(env.NotFoundError):
        env.view_signing(session, company, SIGNER, now=later)  # the old link is gone
    # A shorter lifetime never shortens the envelope's links.
    with database.transaction() as session:
        env.reissue_link(session, letter_id, company_id, STAFF, link_days=1, now=later)
        assert session.get(Envelope, envelope_id).expires_at == \
            later + dt.timedelta(days=10)


def test_links_of_a_voided_envelope_are_not_renewed(database, letter_id):
    envelope_id, _ = send(database, letter_id)
    with database.transaction() as session:
        company_id = session.get(Envelope, envelope_id).counterparts[0].id
        env.void_envelope(session, letter_id, "Wrong terms", STAFF)
    with database.transaction() as session, pytest.raises(StateError,
                                                           match="voided; its links cannot"):
        env.reissue_link(session, letter_id, company_id, STAFF)
