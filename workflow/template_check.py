"""Check a .docx template before it is parsed: a zip or XML bomb, or an external entity, is
refused with an error that names the file, and nothing in it is read or executed.
"""

from __future__ import annotations

import io
import re
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import IO

from .errors import TemplateError

__all__ = ["check_template_file", "check_template_bytes", "MAX_TEMPLATE_BYTES",
           "MAX_UNCOMPRESSED_BYTES"]

MAX_TEMPLATE_BYTES = 10 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 50 * 1024 * 1024
MAX_ENTRIES = 1000
MAX_RATIO = 200
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_SUFFIXES = (".xml", ".rels", ".vml")


def check_template_file(path: Path) -> None:
    """Refuse a template that is not a safe .docx: too large, a zip bomb, or with DTDs."""
    path = Path(path)
    stat = path.stat()
    _check(path, stat.st_size, stat.st_mtime_ns)


def check_template_bytes(data: bytes, name: str) -> None:
    """Refuse .docx bytes (a template kept with a letter version) as the file check does."""
    _check_archive(name, len(data), io.BytesIO(data))


@lru_cache(maxsize=64)
def _check(path: Path, size: int, mtime_ns: int) -> None:
    _check_archive(path.name, size, path)


def _check_archive(name: str, size: int, source: Path | IO[bytes]) -> None:
    if size > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{name}: the template is {size // 1024} KB; the limit is "
                            f"{MAX_TEMPLATE_BYTES // 1024 // 1024} MB.")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TemplateError(f"{name}: not a .docx file (it is not a zip archive).") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise TemplateError(f"{name}: the template holds {len(entries)} files; a .docx "
                                f"has far fewer (limit {MAX_ENTRIES}).")
        total = 0
        for entry in entries:
            if entry.filename.startswith("/") or ".." in entry.filename.split("/"):
                raise TemplateError(f"{name}: the entry {entry.filename!r} points outside the "
                                    "document.")
            total += entry.file_size
            ratio = entry.file_size / max(entry.compress_size, 1)
            if total > MAX_UNCOMPRESSED_BYTES or (entry.file_size > 1_000_000
                                                  and ratio > MAX_RATIO):
                raise TemplateError(f"{name}: {entry.filename} expands to "
                                    f"{entry.file_size // 1024} KB from "
                                    f"{entry.compress_size // 1024} KB; refused as a zip "
                                    "bomb.")
        if "word/document.xml" not in archive.namelist():
            raise TemplateError(f"{name}: not a Word document (no word/document.xml).")
        for entry in entries:
            if not entry.filename.endswith(_XML_SUFFIXES):
                continue
            with archive.open(entry) as handle:
                # Read in bounded pieces: the sizes above were declared, not yet proven.
                seen = 0
                tail = b""
                while chunk := handle.read(1 << 16):
                    seen += len(chunk)
                    if seen > MAX_UNCOMPRESSED_BYTES:
                        raise TemplateError(f"{name}: {entry.filename} is larger than it "
                                            "claims; refused as a zip bomb.")
                    if _DECLARATION.search(tail + chunk):
                        raise TemplateError(
                            f"{name}: {entry.filename} declares a DTD or entities, which a "
                            "Word document never needs; refused so that no external entity "
                            "or entity expansion is processed.")
                    tail = chunk[-16:]
