"""Seal executed letters with a PAdES signature, and check seals.

The seal is a certification signature (DocMDP: no changes allowed) in an invisible field, made
with pyHanko from either a configured PKCS#12 file or a self-signed certificate that Counterpart
creates on first use and keeps in ``<data_dir>/seal/``. A self-signed seal shows that a file
is the one this system produced and is unchanged; a viewer shows its signer as "not trusted"
unless the certificate is installed as a trust root.

:func:`check_seal` reads PDFs that anyone may hand in, so pyHanko parses them in a child
process with a time limit and a memory limit (see :func:`workflow.pdfs.run_sandboxed`): a
hostile file ends the child, and the caller gets a :class:`SealCheck` saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import struct
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers, timestamps
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .errors import CounterpartError, DocumentError
from .files import write_atomic

__all__ = [
    "Sealer",
    "SealCheck",
    "load_or_create_sealer",
    "seal_pdf",
    "check_seal",
    "certificate_fingerprint",
]

SEAL_FIELD = "CounterpartSeal"
KEY_FILE = "seal-key.pem"
CERT_FILE = "seal-cert.pem"
CHECK_TIME_LIMIT = 20.0
CHECK_MEMORY_LIMIT = 1024 * 1024 * 1024
VALIDITY = timedelta(days=3652)


@dataclass(frozen=True)
class Sealer:
    """The key and certificate that seal executed letters, and an optional time-stamp server."""

    signer: signers.SimpleSigner
    certificate: asn1_x509.Certificate
    timestamp_url: str | None = None

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of the seal certificate, in hex."""
        return certificate_fingerprint(self.certificate)


def certificate_fingerprint(certificate: asn1_x509.Certificate) -> str:
    """Return the SHA-256 fingerprint of a certificate, in lower-case hex."""
    return hashlib.sha256(certificate.dump()).hexdigest()


def load_or_create_sealer(data_dir: Path, *, pkcs12_path: Path | None = None,
                          pkcs12_password: bytes | None = None,
                          timestamp_url: str | None = None,
                          organisation: str = "Counterpart") -> Sealer:
    """Load the seal from a PKCS#12 file, or from ``data_dir/seal/`` creating it on first use.

    Without a PKCS#12 file, a self-signed RSA-2048 certificate named "<organisation> document
    seal", valid for ten years, is made once and reused; its key file is readable only by the
    owner. Any problem with the files is a CounterpartError naming the file.
    """
    if pkcs12_path is not None:
        key, certificate, chain = _load_pkcs12(Path(pkcs12_path), pkcs12_password)
    else:
        key, certificate = _load_or_create_self_signed(Path(data_dir) / "seal", organisation)
        chain = []
    return _sealer(key, certificate, chain, timestamp_url)


def _sealer(key: Any, certificate: x509.Certificate, chain: list[x509.Certificate],
            timestamp_url: str | None) -> Sealer:
    der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    others = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
              for c in chain]
    signer = signers.SimpleSigner(signing_cert=cert,
                                  signing_key=asn1_keys.PrivateKeyInfo.load(der_key),
                                  cert_registry=SimpleCertificateStore.from_certs([cert, *others]))
    return Sealer(signer=signer, certificate=cert, timestamp_url=timestamp_url)


def _load_pkcs12(path: Path, password: bytes | None) -> tuple[Any, x509.Certificate,
                                                               list[x509.Certificate]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CounterpartError(f"The seal certificate file {path} cannot be read "
                               f"({exc.strerror or exc}).") from exc
    try:
        key, certificate, chain = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError) as exc:
        raise CounterpartError(f"The seal certificate file {path} could not be opened: the "
                               f"password is wrong or it is not a PKCS#12 file.") from exc
    if key is None or certificate is None:
        raise CounterpartError(f"The seal certificate file {path} must hold a private key and "
                               f"its certificate.")
    return key, certificate, list(chain)


def _load_or_create_self_signed(folder: Path, organisation: str) -> tuple[Any, x509.Certificate]:
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CounterpartError(f"The seal folder {folder} cannot be created "
                               f"({exc.strerror or exc}).") from exc
    # Two processes starting at once must not each make a key: one would seal with a
    # certificate the other never sees.
    with open(folder / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not key_path.exists() and not cert_path.exists():
            new_key, new_certificate = _self_signed(organisation)
            # write_atomic's temporary file is created with mode 0600, so the key is never
            # readable by others, not even for a moment.
            write_atomic(key_path, new_key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
            os.chmod(key_path, 0o600)
            write_atomic(cert_path, new_certificate.public_bytes(serialization.Encoding.PEM))
            os.chmod(cert_path, 0o644)
            return new_key, new_certificate
    for path in (key_path, cert_path):
        if not path.exists():
            raise CounterpartError(f"The seal file {path} is missing while its partner is there; "
                                   f"restore it, or remove both files to make a new seal.")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CounterpartError(f"The seal key file {key_path} cannot be read.") from exc
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CounterpartError(f"The seal certificate file {cert_path} cannot be read.") from exc
    if _public_der(certificate.public_key()) != _public_der(key.public_key()):
        raise CounterpartError(f"The seal certificate {cert_path} does not belong to the key "
                               f"{key_path}.")
    return key, certificate


def _public_der(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))


def _self_signed(organisation: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    common_name = f"{organisation.strip()} document seal"
    if not organisation.strip() or len(common_name) > 64:
        raise CounterpartError("The organisation name for the seal must have 1 to 50 "
                               "characters.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation.strip()[:64])])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def seal_pdf(pdf: bytes, sealer: Sealer, *, reason: str = "Executed in counterparts",
             location: str | None = None) -> bytes:
    """Return the PDF with a PAdES certification seal added in an invisible signature field."""
    metadata = signers.PdfSignatureMetadata(
        field_name=SEAL_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        location=location,
        certify=True,
        docmdp_permissions=fields.MDPPerm.NO_CHANGES,
    )
    timestamper = (timestamps.HTTPTimeStamper(sealer.timestamp_url, timeout=10)
                   if sealer.timestamp_url else None)
    pdf_signer = signers.PdfSigner(metadata, signer=sealer.signer, timestamper=timestamper,
                                   new_field_spec=fields.SigFieldSpec(sig_field_name=SEAL_FIELD))
    # Reserving room to fit the signature saves pyHanko's estimate, a whole dry-run signature
    # (and with a time-stamp server, a request to it). The CMS holds the certificates, about
    # 1 KB of signed attributes and signature, and a time-stamp token with its certificates
    # when a server is used; it is embedded as hex, two characters a byte.
    der_size = 3072 + sum(len(c.dump()) for c in sealer.signer.cert_registry)
    if timestamper is not None:
        der_size += 12288
    reserved = 2 * der_size
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except (PdfError, ValueError, OSError) as exc:
        raise DocumentError(f"The PDF to seal could not be read ({exc}).") from exc
    try:
        output = pdf_signer.sign_pdf(writer, bytes_reserved=reserved)
    except timestamps.TimestampRequestError as exc:
        raise CounterpartError(f"The time-stamp server {sealer.timestamp_url} did not give a "
                               f"time-stamp ({exc}).") from exc
    return output.getvalue()


@dataclass
class SealCheck:
    """What a check of a PDF's seal found, with a sentence for the user."""

    sealed: bool
    intact: bool
    signed_by_us: bool
    signer_subject: str | None
    signed_at: datetime | None
    modified_after_seal: bool
    message: str


def check_seal(pdf: bytes, sealer_cert: asn1_x509.Certificate, *,
               time_limit: float = CHECK_TIME_LIMIT,
               memory_limit: int = CHECK_MEMORY_LIMIT) -> SealCheck:
    """Check whether a PDF carries an intact seal, and whether it is ours.

    ``intact`` is true only when the signature is cryptographically valid and covers the whole
    file: a changed byte or anything appended after the seal makes it false. The PDF is parsed
    in a child process limited to ``time_limit`` seconds and ``memory_limit`` bytes; a file that
    cannot be read, or not within the limits, gives ``sealed=False`` with a message.
    """
    if not isinstance(pdf, bytes | bytearray):
        raise TypeError("check_seal expects the PDF as bytes")
    if b"%PDF-" not in pdf[:1024]:
        return _unsealed("This file is not a PDF, so it carries no seal.")
    # Imported here so that the child process, which imports this module, stays lean.
    from .pdfs import run_sandboxed

    code = "from workflow.seal import _check_seal_main\n_check_seal_main()\n"
    cert_der = sealer_cert.dump()
    result = run_sandboxed(code, [], struct.pack(">I", len(cert_der)) + cert_der + bytes(pdf),
                           time_limit=time_limit, memory_limit=memory_limit,
                           pythonpath=Path(__file__).resolve().parents[1])
    if result.answer is None:
        return _unsealed("This file could not be checked within the time and memory limits; "
                         "it may be damaged or built to exhaust the server.")
    answer = dict(result.answer)
    signed_at = answer.pop("signed_at", None)
    return SealCheck(signed_at=datetime.fromisoformat(signed_at) if signed_at else None,
                     **answer)


def _unsealed(message: str) -> SealCheck:
    return SealCheck(sealed=False, intact=False, signed_by_us=False, signer_subject=None,
                     signed_at=None, modified_after_seal=False, message=message)


def _check_seal_main() -> None:
    """Run in the child process: read the certificate and PDF from stdin, print the result."""
    data = sys.stdin.buffer.read()
    (length,) = struct.unpack(">I", data[:4])
    cert = asn1_x509.Certificate.load(data[4:4 + length])
    try:
        check = _check_seal_here(data[4 + length:], cert)
    except MemoryError:
        raise SystemExit(3) from None
    fields_ = dict(check.__dict__)
    fields_["signed_at"] = check.signed_at.isoformat() if check.signed_at else None
    sys.stdout.write(json.dumps(fields_))


def _check_seal_here(pdf: bytes, sealer_cert: asn1_x509.Certificate) -> SealCheck:
    """Validate the seal of ``pdf`` in this process (untrusted input: see check_seal)."""
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        signatures = list(reader.embedded_signatures)
    except Exception:  # any parser failure on hostile bytes means "not a readable PDF"
        return _unsealed("This file could not be read as a PDF, so its seal cannot be checked.")
    if not signatures:
        return _unsealed("This PDF carries no seal.")

    ours = certificate_fingerprint(sealer_cert)
    chosen = signatures[0]
    for embedded in signatures:
        with contextlib.suppress(Exception):
            if certificate_fingerprint(embedded.signer_cert) == ours:
                chosen = embedded
                break
    try:
        signer_cert = chosen.signer_cert
        subject = signer_cert.subject.human_friendly
        signer_name = signer_cert.subject.native.get("common_name") or subject
        our_certificate = certificate_fingerprint(signer_cert) == ours
    except Exception:
        return SealCheck(sealed=True, intact=False, signed_by_us=False, signer_subject=None,
                         signed_at=None, modified_after_seal=False,
                         message="This PDF has a signature that cannot be read; it is not a "
                                 "valid seal.")
    context = ValidationContext(trust_roots=[sealer_cert], allow_fetching=False)
    try:
        status = validate_pdf_signature(chosen, signer_validation_context=context)
    except Exception as exc:
        return SealCheck(sealed=True, intact=False, signed_by_us=False,
                         signer_subject=subject, signed_at=None, modified_after_seal=False,
                         message=f"The seal could not be validated ({type(exc).__name__}); "
                                 f"treat the document as not intact.")

    # Prefer the time-stamp authority's time to the time the signer claims, if the token holds.
    token = status.timestamp_validity
    signed_at = status.signer_reported_dt
    if token is not None and token.intact and token.valid:
        signed_at = token.timestamp
    if signed_at is not None:
        signed_at = signed_at.astimezone(UTC)
    # Anyone can embed our public certificate: the seal is ours only if our key made it.
    signed_by_us = our_certificate and bool(status.intact and status.valid)
    modified = (status.coverage != SignatureCoverageLevel.ENTIRE_FILE
                or status.docmdp_ok is False)
    intact = bool(status.intact and status.valid and not modified)
    when = f" on {signed_at:%Y-%m-%d %H:%M:%S} UTC" if signed_at else ""
    if not (status.intact and status.valid):
        message = ("The seal is broken: the document was changed after it was sealed, or the "
                   "seal itself is damaged.")
    elif modified:
        message = (f"The seal made{when} is valid for an earlier version of this file, but the "
                   f"document was changed after it was sealed.")
    elif not signed_by_us:
        message = (f"The document is signed by {signer_name}{when} and unchanged since, but "
                   f"not with this system's seal.")
    else:
        message = f"Sealed by {signer_name}{when}; the document has not changed since."
    return SealCheck(sealed=True, intact=intact, signed_by_us=signed_by_us,
                     signer_subject=subject, signed_at=signed_at, modified_after_seal=modified,
                     message=message)
