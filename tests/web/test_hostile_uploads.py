"""Hostile uploads: whatever arrives as a scanned counterpart or a PDF to verify, the answer is a
clear 4xx, the app keeps serving, and the counterpart's state and the stored files are unchanged.
"""

from __future__ import annotations

import io
import random
import time
import zlib

import pypdf
import pytest
from scans import scan_of
from sqlalchemy import func, inspect, select, table

from web.database import get_db
from workflow import envelopes as env
from workflow.models import Counterpart, Document, utcnow
from workflow.pdfs import extract_pages

STAFF = env.Actor("counsel@example.com", "127.0.0.1", "pytest")


@pytest.fixture()
def sent(app, make_letter, reference_terms):
    """A generated letter sent for signature: (letter id, counterpart ids, letter PDF)."""
    letter_id = make_letter(reference_terms)
    with app.app_context(), get_db().transaction() as session:
        envelope, _links = env.send_envelope(session, letter_id, None, STAFF)
        return (letter_id, [c.id for c in envelope.counterparts],
                env.letter_pdf_for(session, envelope))


BOUNDARY = "counterpart-test-boundary"


def multipart(data: bytes, name: str, fields: dict[str, str] | None = None) -> bytes:
    """Encode one file (and any plain fields) as multipart/form-data in memory (the test
    client would spool a large body to a temporary file that nobody closes)."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    parts = b"".join(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n"
                     f"{value}\r\n".encode() for key, value in (fields or {}).items())
    return parts + (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
                    f"filename=\"{quoted}\"\r\nContent-Type: application/pdf\r\n\r\n").encode() \
        + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def post_file(client, url: str, data: bytes, name: str, headers=None,
              fields: dict[str, str] | None = None):
    return client.post(url, headers=headers or {}, data=multipart(data, name, fields),
                       content_type=f"multipart/form-data; boundary={BOUNDARY}")


def upload(client, api, letter_id, counterpart_id, data: bytes, name: str = "scan.pdf"):
    return post_file(client, f"/api/letters/{letter_id}/counterparts/{counterpart_id}/upload",
                     data, name, api, {"signed_on": utcnow().date().isoformat()})


def snapshot(app) -> dict:
    with app.app_context(), get_db().transaction() as session:
        names = inspect(session.get_bind()).get_table_names()
        counts = {n: session.scalar(select(func.count()).select_from(table(n))) for n in names}
        statuses = [c.status for c in session.scalars(select(Counterpart)
                                                      .order_by(Counterpart.id))]
        return {"counts": counts, "statuses": statuses}


def pdf_bytes(writer: pypdf.PdfWriter) -> bytes:
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def encrypted(pdf: bytes) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf)))
    writer.encrypt("secret")
    return pdf_bytes(writer)


def looping_xref() -> bytes:
    """A PDF whose cross-reference sections point at each other for ever."""
    body = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    body += b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    first = len(body)
    body += (b"xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n"
             b"trailer\n<< /Size 3 /Root 1 0 R /Prev %d >>\n" % first)
    second = len(body)
    body += (b"xref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 3 /Root 1 0 R /Prev %d >>\n"
             % first)
    return body + b"startxref\n%d\n%%%%EOF\n" % second


def flate_bomb() -> bytes:
    """A one-page PDF whose content stream inflates to 200 MB from a few hundred KB."""
    compressor = zlib.compressobj(9)
    chunk = b"0" * (1 << 20)
    data = b"".join(compressor.compress(chunk) for _ in range(200)) + compressor.flush()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data
               + b"\nendstream"]
    out, offsets = b"%PDF-1.4\n", []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + (b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
                  % (len(objects) + 1, xref))


def deeply_nested() -> bytes:
    depth = 100_000
    obj = b"[" * depth + b"]" * depth
    return (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R /X " + obj + b" >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n"
            b"<< /Root 1 0 R >>\n%%EOF\n")


def test_over_the_size_limit_is_413_and_writes_nothing(app, client, api, sent):
    letter_id, (company, _), _pdf = sent
    before = snapshot(app)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    response = upload(client, api, letter_id, company, b"%PDF-1.4\n" + b"0" * (2 << 20))
    assert response.status_code == 413
    assert "too large" in response.json["error"].lower() or "limit" in response.json["error"]
    assert snapshot(app) == before


@pytest.mark.parametrize("name", ["scan.pdf", "../../x.pdf", "/etc/passwd", "..\\..\\x.pdf"])
def test_not_a_pdf_is_400_and_names_never_become_paths(app, client, api, sent, name,
                                                       tmp_path):
    letter_id, (company, _), _pdf = sent
    before = snapshot(app)
    response = upload(client, api, letter_id, company, b"GIF89a not a pdf at all", name)
    assert response.status_code in (400, 415)
    assert "PDF" in response.json["error"]
    assert snapshot(app) == before
    assert not (tmp_path.parent / "x.pdf").exists()


def test_stored_files_get_generated_names(app, client, api, sent):
    letter_id, (_, executive), pdf = sent
    response = upload(client, api, letter_id, executive,
                      scan_of(pdf, signed_by=["executive"]), "../../../etc/evil name.pdf")
    assert response.status_code == 201, response.text
    with app.app_context(), get_db().transaction() as session:
        document = session.scalar(select(Document).where(Document.kind ==
                                                         "scanned_counterpart"))
        assert ".." not in document.filename and "/" not in document.filename
        assert document.filename.startswith("counterpart-2-")


def test_truncated_pdf_is_400_then_a_retry_works(app, client, api, sent):
    letter_id, (_, executive), pdf = sent
    scan = scan_of(pdf, signed_by=["executive"])
    before = snapshot(app)
    cut = scan[: scan.rfind(b"xref")]  # no cross-reference table, no %%EOF
    response = upload(client, api, letter_id, executive, cut)
    assert response.status_code == 400
    assert snapshot(app) == before
    assert upload(client, api, letter_id, executive, scan).status_code == 201


def test_encrypted_pdf_is_refused_as_password_protected(app, client, api, sent):
    letter_id, (company, _), pdf = sent
    before = snapshot(app)
    response = upload(client, api, letter_id, company, encrypted(extract_pages(pdf, [2])))
    assert response.status_code == 400
    assert "password-protected" in response.json["error"]
    assert snapshot(app) == before


def test_wrong_page_count_is_refused_with_the_reason(app, client, api, sent):
    letter_id, (company, _), pdf = sent
    before = snapshot(app)
    response = upload(client, api, letter_id, company, extract_pages(pdf, [0, 1]))
    assert response.status_code == 400
    assert "2 pages" in response.json["error"]
    assert snapshot(app) == before


@pytest.mark.parametrize("make", [looping_xref, flate_bomb, deeply_nested],
                         ids=["xref-loop", "flate-bomb", "deep-nesting"])
def test_parser_traps_end_within_the_time_limit(app, client, api, sent, make):
    letter_id, (company, _), _pdf = sent
    before = snapshot(app)
    started = time.monotonic()
    response = upload(client, api, letter_id, company, make())
    assert 400 <= response.status_code < 500, response.text
    assert time.monotonic() - started < 30
    assert snapshot(app) == before
    assert client.get("/api/letters", headers=api).status_code == 200  # still serving


def malformed_corpus(pdf: bytes, count: int = 24) -> list[bytes]:
    """Truncations, bit flips and garbage objects made from a real one-page PDF."""
    chance = random.Random(2006)
    corpus = []
    for _ in range(count // 3):
        corpus.append(pdf[: chance.randrange(8, len(pdf) - 1)])
        flipped = bytearray(pdf)
        for _ in range(chance.randrange(1, 40)):
            index = chance.randrange(len(flipped))
            flipped[index] ^= 1 << chance.randrange(8)
        corpus.append(bytes(flipped))
        garbage = bytes(chance.randrange(256) for _ in range(chance.randrange(10, 400)))
        at = chance.randrange(len(pdf))
        corpus.append(pdf[:at] + b"\n99 0 obj\n" + garbage + b"\nendobj\n" + pdf[at:])
    return corpus


def test_malformed_corpus_always_gets_a_4xx_or_a_clean_answer(app, client, api, sent):
    letter_id, (company, _), pdf = sent
    scan = scan_of(pdf, signed_by=["company"], dpi=72)
    accepted = 0
    for data in malformed_corpus(scan):
        if not accepted:
            before = snapshot(app)
            response = upload(client, api, letter_id, company, data)
            # A flipped bit inside a stream may leave a readable one-page PDF: that is a
            # signature on paper (201), or a picture whose signature line no longer reads as
            # signed (422). Anything else is refused with a reason, never a 500.
            assert response.status_code in (201, 400, 415, 422), (response.status_code,
                                                                  response.text)
            if response.status_code == 201:
                accepted += 1
            else:
                assert response.json["error"]
                assert snapshot(app) == before
        verify = post_file(client, "/api/verify", data, "x.pdf")
        assert verify.status_code in (200, 400, 415), verify.text
        if verify.status_code == 200:
            assert verify.json["known"] is False and verify.json["intact"] is False
