"""A sealed letter checks as intact and ours; any change, or another key, shows."""

from __future__ import annotations

import io
import stat
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import FreeText
from pypdf.generic import NameObject, StreamObject

from workflow.errors import CounterpartError
from workflow.render import render_docx, render_pdf
from workflow.schema import load_template, sample_terms, validate_terms
from workflow.seal import (
    CERT_FILE,
    KEY_FILE,
    CheckLimits,
    check_seal,
    load_or_create_sealer,
    seal_pdf,
)

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


@pytest.fixture(scope="module")
def letter_pdf() -> bytes:
    spec = load_template("separation_letter")
    return render_pdf(render_docx(spec, validate_terms(spec, sample_terms(spec))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def sealer(data_dir):
    return load_or_create_sealer(data_dir)


@pytest.fixture(scope="module")
def sealed(letter_pdf, sealer) -> bytes:
    return seal_pdf(letter_pdf, sealer, location="Chatsworth, California")


def test_sealed_letter_is_intact_and_ours(letter_pdf, sealer, sealed):
    check = check_seal(sealed, sealer.certificate)
    assert (check.sealed, check.intact, check.signed_by_us, check.modified_after_seal) == (
        True, True, True, False)
    assert check.our_certificate and check.limit is None
    assert "Counterpart document seal" in check.signer_subject
    assert abs(check.signed_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert "has not changed" in check.message
    # The seal is added after the letter, which stays readable page for page.
    assert sealed.startswith(letter_pdf)
    reader = PdfReader(io.BytesIO(sealed))
    assert len(reader.pages) == 3
    assert "John R. Tucker" in reader.pages[2].extract_text()


def test_seal_is_an_invisible_pades_certification(sealed):
    reader = PdfReader(io.BytesIO(sealed))
    field = reader.get_fields()["CounterpartSeal"]
    signature = field["/V"]
    assert signature["/SubFilter"] == "/ETSI.CAdES.detached"
    assert signature["/Reason"] == "Executed in counterparts"
    assert "/DocMDP" in reader.trailer["/Root"]["/Perms"]
    widget = next(annot.get_object() for annot in reader.pages[0].get("/Annots", [])
                  if annot.get_object().get("/T") == "CounterpartSeal")
    x0, y0, x1, y1 = (float(v) for v in widget["/Rect"])
    assert x1 - x0 == 0 and y1 - y0 == 0


def test_a_flipped_byte_breaks_the_seal(sealed, sealer):
    # Change one byte inside the first content stream: still a PDF, no longer the sealed one.
    position = sealed.index(b"stream", 1000) + 40
    tampered = bytearray(sealed)
    tampered[position] ^= 0x01
    check = check_seal(bytes(tampered), sealer.certificate)
    assert check.intact is False
    assert check.signed_by_us is False
    assert check.sealed and check.our_certificate  # our certificate, but not our seal's bytes
    assert "broken" in check.message


def add_void_note(writer: PdfWriter) -> None:
    writer.add_annotation(page_number=2, annotation=FreeText(text="VOID",
                                                             rect=(72, 72, 200, 100)))


def change_title(writer: PdfWriter) -> None:
    writer.add_metadata({"/Title": "Another letter"})


@pytest.mark.parametrize("change", [add_void_note, change_title])
def test_an_update_appended_after_the_seal_is_reported(sealed, sealer, change):
    writer = PdfWriter(io.BytesIO(sealed), incremental=True)
    change(writer)
    buffer = io.BytesIO()
    writer.write(buffer)
    assert buffer.getvalue().startswith(sealed)
    check = check_seal(buffer.getvalue(), sealer.certificate)
    assert check.sealed is True
    assert check.intact is False
    assert check.modified_after_seal is True
    assert "changed after it was sealed" in check.message


def test_a_seal_made_with_another_key_is_not_ours(letter_pdf, sealer, tmp_path):
    other = load_or_create_sealer(tmp_path, organisation="Someone Else")
    assert other.fingerprint != sealer.fingerprint
    check = check_seal(seal_pdf(letter_pdf, other), sealer.certificate)
    assert (check.sealed, check.intact, check.signed_by_us) == (True, True, False)
    assert check.our_certificate is False
    assert "Someone Else document seal" in check.message


@pytest.mark.parametrize("data", [b"", b"garbage, not a PDF at all",
                                  b"%PDF-1.7\n" + bytes(range(256)) * 20,
                                  b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF"])
def test_garbage_is_not_sealed(data, sealer):
    check = check_seal(data, sealer.certificate)
    assert check.sealed is False and check.intact is False and check.signed_by_us is False
    assert check.message


def test_an_unsealed_pdf_says_so(letter_pdf, sealer):
    check = check_seal(letter_pdf, sealer.certificate)
    assert check.sealed is False
    assert "no seal" in check.message


def test_a_check_that_runs_out_of_time_is_not_a_seal(sealed, sealer):
    check = check_seal(sealed, sealer.certificate, time_limit=0.01)
    assert check.sealed is False and check.limit == "time"
    assert "could not be checked within the time limit (0.01 s)" in check.message


@pytest.mark.parametrize("limits, limit, words", [
    (CheckLimits(objects=10), "objects", "objects, more than the 10 checked"),
    (CheckLimits(pages=2), "pages", "pages, more than the 2 checked"),
    (CheckLimits(decoded_bytes=1000), "decoded_bytes", "its streams decode to more than"),
])
def test_a_seal_over_a_limit_is_not_checked(sealed, sealer, limits, limit, words):
    check = check_seal(sealed, sealer.certificate, limits=limits)
    assert check.limit == limit and check.sealed is False
    assert check.message.startswith("This PDF was not checked: ") and words in check.message


def test_three_thousand_signature_fields_in_one_object_stream_are_refused_at_once(sealer):
    data = (CASES / "verify-3000-signature-fields.pdf").read_bytes()
    started = time.monotonic()
    check = check_seal(data, sealer.certificate)
    assert time.monotonic() - started < 10  # pyHanko alone took over a minute on it
    assert check.limit == "signature_fields"
    assert "more than 10 signature fields" in check.message
    crowded = check_seal(data, sealer.certificate,
                         limits=CheckLimits(signature_fields=5000, form_fields=5000))
    assert crowded.limit == "objects_per_stream"
    assert "one of its object streams holds 3,001 objects" in crowded.message


def test_a_compression_bomb_is_measured_without_being_held(letter_pdf, sealer):
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(letter_pdf)))
    bomb = StreamObject()
    bomb[NameObject("/Filter")] = NameObject("/FlateDecode")
    bomb._data = zlib.compress(bytes(600 * 1024 * 1024), 9)  # 600 MB of zeros in 600 KB
    writer._add_object(bomb)
    buffer = io.BytesIO()
    writer.write(buffer)
    # Held whole, the decoded stream alone would not fit in the child's 512 MB.
    check = check_seal(buffer.getvalue(), sealer.certificate, memory_limit=512 * 1024 * 1024)
    assert check.limit == "decoded_bytes", check.message
    assert "its streams decode to more than 256 MB" in check.message


def test_the_self_signed_seal_is_made_once_and_kept(data_dir, sealer):
    again = load_or_create_sealer(data_dir)
    assert again.fingerprint == sealer.fingerprint
    key_file = data_dir / "seal" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate((data_dir / "seal" / CERT_FILE).read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Counterpart document seal")
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3660)


def make_pkcs12(path, password: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Capstone seal")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30))
                   .add_extension(x509.KeyUsage(True, True, False, False, False, False, False,
                                                False, False), critical=True)
                   .sign(key, hashes.SHA256()))
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"seal", key, certificate, None, BestAvailableEncryption(password)))


def test_a_pkcs12_seal_is_used_with_its_password(tmp_path, letter_pdf):
    path = tmp_path / "seal.p12"
    make_pkcs12(path, b"right")
    sealer = load_or_create_sealer(tmp_path, pkcs12_path=path, pkcs12_password=b"right")
    check = check_seal(seal_pdf(letter_pdf, sealer), sealer.certificate)
    assert (check.sealed, check.intact, check.signed_by_us) == (True, True, True)
    assert "Capstone seal" in check.signer_subject
    assert not (tmp_path / "seal").exists()


def test_a_wrong_pkcs12_password_names_the_file(tmp_path):
    path = tmp_path / "seal.p12"
    make_pkcs12(path, b"right")
    with pytest.raises(CounterpartError, match=f"{path}.*password is wrong"):
        load_or_create_sealer(tmp_path, pkcs12_path=path, pkcs12_password=b"wrong")


def test_a_missing_pkcs12_file_is_named(tmp_path):
    path = tmp_path / "missing.p12"
    with pytest.raises(CounterpartError, match=f"{path} cannot be read"):
        load_or_create_sealer(tmp_path, pkcs12_path=path, pkcs12_password=b"x")


@pytest.fixture()
def time_stamp_server():
    """Run a time-stamp authority on the loopback interface; yield its URL and clock."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # the stamper is RSA-only
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test time-stamp authority")])
    now = datetime.now(UTC).replace(microsecond=0)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                                  critical=True)
                   .sign(key, hashes.SHA256()))
    clock = now - timedelta(seconds=30)
    stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
            Encoding.DER, PrivateFormat.PKCS8, NoEncryption())),
        fixed_dt=clock)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the name http.server calls)
            request = tsp.TimeStampReq.load(self.rfile.read(int(self.headers["Content-Length"])))
            body = stamper.request_tsa_response(request).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", clock
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_time_stamped_seal_carries_the_authoritys_time(tmp_path, letter_pdf,
                                                         time_stamp_server):
    url, clock = time_stamp_server
    sealer = load_or_create_sealer(tmp_path, timestamp_url=url)
    check = check_seal(seal_pdf(letter_pdf, sealer), sealer.certificate)
    assert (check.sealed, check.intact, check.signed_by_us) == (True, True, True)
    assert check.signed_at == clock
