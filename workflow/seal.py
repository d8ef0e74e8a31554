"""Seal executed letters with a PAdES signature, and check seals.

The seal is a certification signature (DocMDP: no changes allowed) in an invisible field, made
with pyHanko from either a configured PKCS#12 file or a self-signed certificate that Counterpart
creates on first use and keeps in ``<data_dir>/seal/``. A self-signed seal shows that a file
is the one this system produced and is unchanged; a viewer shows its signer as "not trusted"
unless the certificate is installed as a trust root.

:func:`check_seal` reads PDFs that anyone may hand in, so they are parsed in a child process
with a time limit and a memory limit (see :func:`workflow.pdfs.run_sandboxed`). Before pyHanko
validates anything, the child measures the file (objects, pages, signature fields, objects per
object stream, decoded size of its streams) against :data:`CHECK_LIMITS`, which are far above
what an executed letter needs: pyHanko's work grows with each of them (reading 3,000 fields from
one object stream took it over a minute), so a file over a limit is refused at once, and the
caller gets a :class:`SealCheck` naming the limit.
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
import zlib
from dataclasses import asdict, dataclass
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
from .files import make_private_file, make_private_folder, write_atomic

__all__ = [
    "Sealer",
    "SealCheck",
    "load_or_create_sealer",
    "seal_pdf",
    "check_seal",
    "certificate_fingerprint",
    "CheckLimits",
    "CHECK_LIMITS",
]

SEAL_FIELD = "CounterpartSeal"
KEY_FILE = "seal-key.pem"
CERT_FILE = "seal-cert.pem"
CHECK_TIME_LIMIT = 10.0
CHECK_MEMORY_LIMIT = 1024 * 1024 * 1024


@dataclass(frozen=True)
class CheckLimits:
    """The most of each thing a PDF may hold for its seal to be checked.

    An executed letter of this system has about 50 objects, under 20 pages, one signature
    field (its seal), no object streams and a few hundred KB of decoded streams (more with
    scans of paper counterparts): each limit leaves room for far larger documents.
    """

    objects: int = 5_000
    pages: int = 1_000
    signature_fields: int = 10
    form_fields: int = 1_000
    objects_per_stream: int = 500
    decoded_bytes: int = 256 * 1024 * 1024


CHECK_LIMITS = CheckLimits()
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
        make_private_folder(folder)
        lock_path = make_private_file(folder / ".lock")
    except OSError as exc:
        raise CounterpartError(f"The seal folder {folder} cannot be created "
                               f"({exc.strerror or exc}).") from exc
    # Every file of the seal, the certificate too, is its owner's only (0600), like the rest
    # of the data folder; files kept from before are tightened when the seal is next loaded.
    for path in (key_path, cert_path):
        if path.exists():
            make_private_file(path)
    # Two processes starting at once must not each make a key: one would seal with a
    # certificate the other never sees.
    with open(lock_path, "a+b") as lock:
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
            os.chmod(cert_path, 0o600)
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
    """What a check of a PDF's seal found, with a sentence for the user.

    ``our_certificate`` says the signature names this system's seal certificate, which anyone
    can copy: only ``signed_by_us`` (ours, and cryptographically valid) proves our key made it.
    ``limit`` names the limit a file exceeded (a field of :class:`CheckLimits`, or ``"time"``
    for the time and memory limits of the check); such a file was not checked.
    """

    sealed: bool
    intact: bool
    signed_by_us: bool
    signer_subject: str | None
    signed_at: datetime | None
    modified_after_seal: bool
    message: str
    our_certificate: bool = False
    limit: str | None = None


# What a check imports (this module and pypdf, which measures the file against the limits): a
# warm child has imported them before it is handed the file.
_CHECK_MODULES = ("workflow.seal", "pypdf", "pypdf.generic")


def check_seal(pdf: bytes, sealer_cert: asn1_x509.Certificate, *,
               time_limit: float = CHECK_TIME_LIMIT,
               memory_limit: int = CHECK_MEMORY_LIMIT,
               limits: CheckLimits = CHECK_LIMITS) -> SealCheck:
    """Check whether a PDF carries an intact seal, and whether it is ours.

    ``intact`` is true only when the signature is cryptographically valid and covers the whole
    file: a changed byte or anything appended after the seal makes it false. The PDF is parsed
    in a child process limited to ``time_limit`` seconds and ``memory_limit`` bytes, and measured
    against ``limits`` first; a file that cannot be read gives ``sealed=False`` with a message,
    and one over a limit also names it in ``limit``.
    """
    if not isinstance(pdf, bytes | bytearray):
        raise TypeError("check_seal expects the PDF as bytes")
    if b"%PDF-" not in pdf[:1024]:
        return _unsealed("This file is not a PDF, so it carries no seal.")
    # Imported here so that the child process, which imports this module, stays lean.
    from .pdfs import run_sandboxed

    code = "from workflow.seal import _check_seal_main\n_check_seal_main()\n"
    cert_der = sealer_cert.dump()
    settings = json.dumps(asdict(limits)).encode()
    result = run_sandboxed(code, [], struct.pack(">II", len(cert_der), len(settings)) + cert_der
                           + settings + bytes(pdf),
                           time_limit=time_limit, memory_limit=memory_limit,
                           pythonpath=Path(__file__).resolve().parents[1],
                           preload=_CHECK_MODULES)
    if result.answer is None:
        check = _unsealed(f"This file could not be checked within the time limit "
                          f"({time_limit:g} s) and memory limit "
                          f"({memory_limit // (1024 * 1024)} MB) of a check; it may be damaged "
                          f"or built to exhaust the server.")
        check.limit = "time"
        return check
    answer = dict(result.answer)
    signed_at = answer.pop("signed_at", None)
    return SealCheck(signed_at=datetime.fromisoformat(signed_at) if signed_at else None,
                     **answer)


def _unsealed(message: str) -> SealCheck:
    return SealCheck(sealed=False, intact=False, signed_by_us=False, signer_subject=None,
                     signed_at=None, modified_after_seal=False, message=message)


def _check_seal_main() -> None:
    """Run in the child process: read the certificate, limits and PDF from stdin, print the
    result."""
    data = sys.stdin.buffer.read()
    cert_length, settings_length = struct.unpack(">II", data[:8])
    cert = asn1_x509.Certificate.load(data[8:8 + cert_length])
    limits = CheckLimits(**json.loads(data[8 + cert_length:8 + cert_length + settings_length]))
    pdf = data[8 + cert_length + settings_length:]
    try:
        check = _over_limits(pdf, limits) or _check_seal_here(pdf, cert)
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
                                 f"treat the document as not intact.",
                         our_certificate=our_certificate)

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
                     message=message, our_certificate=our_certificate)


def _over_limits(pdf: bytes, limits: CheckLimits) -> SealCheck | None:
    """Measure ``pdf`` against ``limits`` before pyHanko reads it; None if within them.

    pypdf reads the cross-reference table and the few objects measured (it reads an object
    stream once, however many objects are taken from it); pyHanko would read them again for
    each object. Unreadable files pass: pyHanko's own answer for them is the clearer one.
    """
    from pypdf import PdfReader
    from pypdf.generic import DictionaryObject, IndirectObject, StreamObject

    try:
        reader = PdfReader(io.BytesIO(pdf), strict=False)
        plain = [(number, generation) for generation, numbers in reader.xref.items()
                 for number in numbers]
        in_streams = dict(reader.xref_objStm)
    except Exception:
        return None
    objects = len(plain) + len(in_streams)
    if objects > limits.objects:
        return _refused("objects", f"it has {objects:,} objects, more than the "
                                   f"{limits.objects:,} checked")
    per_stream: dict[int, int] = {}
    for stream_number, _index in in_streams.values():
        per_stream[stream_number] = per_stream.get(stream_number, 0) + 1
    crowded = max(per_stream.values(), default=0)
    root: Any = None
    pages: Any = None
    try:
        root = reader.trailer["/Root"].get_object()
        pages = root["/Pages"].get_object().get("/Count")
    except Exception:
        pass
    if isinstance(pages, int) and pages > limits.pages:
        return _refused("pages", f"it declares {pages:,} pages, more than the "
                                 f"{limits.pages:,} checked")
    decoded = 0
    for number, generation in plain:
        try:
            stream = reader.get_object(IndirectObject(number, generation, reader))
        except Exception:
            continue
        if isinstance(stream, StreamObject):
            decoded += _decoded_size(stream, limits.decoded_bytes - decoded + 1)
            if decoded > limits.decoded_bytes:
                return _refused("decoded_bytes", f"its streams decode to more than "
                                                 f"{limits.decoded_bytes // (1024 * 1024)} MB")
    if isinstance(root, DictionaryObject):
        try:
            form = root.get("/AcroForm")
            fields = form.get_object().get("/Fields") if form is not None else None
            found = _count_fields(fields, limits) if fields is not None else (0, 0)
        except Exception:
            found = (0, 0)
        signature_fields, form_fields = found
        if signature_fields > limits.signature_fields:
            return _refused("signature_fields",
                            f"it has more than {limits.signature_fields} signature fields (an "
                            f"executed letter of this system has one, its seal)")
        if form_fields > limits.form_fields:
            return _refused("form_fields", f"it has more than {limits.form_fields:,} form "
                                           f"fields")
    if crowded > limits.objects_per_stream:
        return _refused("objects_per_stream",
                        f"one of its object streams holds {crowded:,} objects, more than the "
                        f"{limits.objects_per_stream:,} checked")
    return None


def _count_fields(fields: Any, limits: CheckLimits) -> tuple[int, int]:
    """Count (signature fields, form fields) in an AcroForm's field tree, stopping early."""
    from pypdf.generic import ArrayObject, DictionaryObject

    signature_fields = form_fields = 0
    seen: set[int] = set()
    pending: list[tuple[Any, Any]] = [(kid, None) for kid in
                                      (fields.get_object() if fields is not None else [])]
    while pending:
        reference, inherited_type = pending.pop()
        key = getattr(reference, "idnum", None)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        node = reference.get_object()
        if not isinstance(node, DictionaryObject):
            continue
        form_fields += 1
        field_type = node.get("/FT", inherited_type)
        kids = node.get("/Kids")
        kids = kids.get_object() if kids is not None else None
        if isinstance(kids, ArrayObject) and kids:
            pending.extend((kid, field_type) for kid in kids)
        elif field_type == "/Sig":
            signature_fields += 1
        if (signature_fields > limits.signature_fields
                or form_fields > limits.form_fields):
            break
    return signature_fields, form_fields


_IMAGE_FILTERS = frozenset({"/DCTDecode", "/JPXDecode", "/CCITTFaxDecode", "/JBIG2Decode"})


def _decoded_size(stream: Any, budget: int) -> int:
    """Return how many bytes ``stream`` decodes to, counting no further than ``budget``.

    Flate streams are inflated a piece at a time and not kept, so a compression bomb costs
    ``budget`` bytes of work and none of memory; image codecs, which a seal check never
    decodes, count as their encoded size.
    """
    encoded = stream._data if hasattr(stream, "_data") else b""
    filters = stream.get("/Filter")
    first = filters[0] if isinstance(filters, list) and filters else filters
    if first in ("/FlateDecode", "/Fl"):
        inflater = zlib.decompressobj()
        total, data = 0, bytes(encoded)
        try:
            while data and total <= budget:
                total += len(inflater.decompress(data, 1024 * 1024))
                data = inflater.unconsumed_tail
        except zlib.error:
            pass
        return total
    if first in _IMAGE_FILTERS or first is None:
        return len(encoded)
    try:
        return len(stream.get_data())
    except Exception:
        return len(encoded)


def _refused(limit: str, reason: str) -> SealCheck:
    check = _unsealed(f"This PDF was not checked: {reason}. It is not an executed letter of "
                      f"this system as sealed.")
    check.limit = limit
    return check
