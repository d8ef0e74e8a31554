"""DOCX to PDF conversion against a real LibreOffice: output, reuse, crashes, hangs and shutdown."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docx
import pypdfium2 as pdfium
import pytest
from docx.oxml import parse_xml
from pypdf import PdfReader

from workflow.convert import (
    PdfConverter,
    WorkerPids,
    check_libreoffice,
    default_converter,
    fresh_process_convert,
)
from workflow.errors import ConversionError


def test_libreoffice_is_installed():
    # `make test` installs it; a machine without it must fail loudly, not skip.
    assert check_libreoffice() is None


def make_docx(path: Path, *words: str, paragraphs: int = 3) -> Path:
    """Write a small Word document whose first paragraph holds ``words``."""
    document = docx.Document()
    document.add_heading("Conversion test", level=1)
    document.add_paragraph(" ".join(words))
    for index in range(paragraphs):
        document.add_paragraph(f"Paragraph {index} of filler text for the converter test.")
    document.save(str(path))
    return path


def pdf_text(data: bytes) -> str:
    """Return a PDF's text with whitespace normalised (pypdf doubles spaces on some lines)."""
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() or "" for page in reader.pages))


def embedded_fonts(data: bytes) -> tuple[int, int]:
    """Return how many fonts a PDF uses and how many of them carry an embedded font file."""
    reader = PdfReader(io.BytesIO(data))
    total = embedded = 0
    for page in reader.pages:
        fonts: Any = page["/Resources"].get_object().get("/Font", {})
        for ref in fonts.get_object().values():
            font = ref.get_object()
            if "/DescendantFonts" in font:
                font = font["/DescendantFonts"][0].get_object()
            descriptor = font.get("/FontDescriptor")
            total += 1
            if descriptor is not None and any(
                key in descriptor.get_object() for key in ("/FontFile", "/FontFile2", "/FontFile3")
            ):
                embedded += 1
    return total, embedded


def process_gone(pid: int) -> bool:
    """Tell whether a process has exited (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until a process has exited; return whether it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)


def only_pids(converter: PdfConverter) -> WorkerPids:
    """Return the pids of a one-process converter's running worker."""
    pids = converter.worker_pids()
    assert len(pids) == 1
    return pids[0]


@pytest.fixture(scope="module")
def converter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdfConverter]:
    """One warm LibreOffice shared by the tests that do not break it."""
    with PdfConverter(work_dir=tmp_path_factory.mktemp("lo")) as shared:
        yield shared


@pytest.fixture()
def own_converter(tmp_path: Path) -> Iterator[PdfConverter]:
    """A converter of its own, for tests that kill or stop LibreOffice."""
    conv = PdfConverter(timeout=3.0, work_dir=tmp_path / "lo")
    try:
        yield conv
    finally:
        for pids in conv.worker_pids():
            # A test failing between SIGSTOP and the timeout must not leave a frozen soffice.
            try:
                os.kill(pids.soffice, signal.SIGCONT)
            except ProcessLookupError:
                pass
        conv.close()


def test_pdf_has_the_words_and_embedded_fonts(converter: PdfConverter, tmp_path: Path) -> None:
    src = make_docx(tmp_path / "letter.docx", "Quartermaster", "zephyr", "indemnity")
    out = tmp_path / "letter.pdf"
    converter.convert(src, out)
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    for word in ("Quartermaster", "zephyr", "indemnity", "Conversion test"):
        assert word in text
    total, embedded = embedded_fonts(data)
    assert total > 0
    assert embedded == total
    assert sorted(p.name for p in tmp_path.iterdir()) == ["letter.docx", "letter.pdf"]


def test_process_is_reused(converter: PdfConverter, tmp_path: Path) -> None:
    src = make_docx(tmp_path / "a.docx", "reuse")
    converter.convert(src, tmp_path / "1.pdf")
    before = converter.worker_pids()
    converter.convert(src, tmp_path / "2.pdf")
    converter.convert(src, tmp_path / "3.pdf")
    assert converter.worker_pids() == before
    assert "reuse" in pdf_text((tmp_path / "3.pdf").read_bytes())


def test_convert_bytes_round_trip(converter: PdfConverter, tmp_path: Path) -> None:
    src = make_docx(tmp_path / "bytes.docx", "roundtrip", "marmalade")
    data = converter.convert_bytes(src.read_bytes())
    assert data.startswith(b"%PDF")
    assert "roundtrip marmalade" in pdf_text(data)


def test_non_docx_fails_naming_the_file_and_worker_survives(
    converter: PdfConverter, tmp_path: Path
) -> None:
    good = make_docx(tmp_path / "good.docx", "survivor")
    converter.convert(good, tmp_path / "warm.pdf")
    before = converter.worker_pids()
    bad = tmp_path / "notes.docx"
    bad.write_bytes(b"this is plain text, not a Word document\n" * 20)
    out = tmp_path / "notes.pdf"
    with pytest.raises(ConversionError, match=r"notes\.docx"):
        converter.convert(bad, out)
    assert not out.exists()
    converter.convert(good, tmp_path / "good.pdf")
    assert "survivor" in pdf_text((tmp_path / "good.pdf").read_bytes())
    assert converter.worker_pids() == before


def test_failed_conversion_leaves_no_file_and_keeps_the_old_one(
    converter: PdfConverter, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.docx"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    out = tmp_path / "broken.pdf"
    with pytest.raises(ConversionError, match=r"broken\.docx"):
        converter.convert(bad, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.docx"]
    out.write_bytes(b"previous version")
    with pytest.raises(ConversionError):
        converter.convert(bad, out)
    assert out.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.docx", "broken.pdf"]


def test_missing_input_names_the_file(converter: PdfConverter, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"absent\.docx"):
        converter.convert(tmp_path / "absent.docx", tmp_path / "absent.pdf")
    assert not (tmp_path / "absent.pdf").exists()


def test_killed_soffice_is_restarted_transparently(
    own_converter: PdfConverter, tmp_path: Path
) -> None:
    src = make_docx(tmp_path / "crash.docx", "phoenix")
    own_converter.convert(src, tmp_path / "first.pdf")
    old = only_pids(own_converter)
    os.kill(old.soffice, signal.SIGKILL)
    assert wait_gone(old.soffice)
    own_converter.convert(src, tmp_path / "second.pdf")
    assert "phoenix" in pdf_text((tmp_path / "second.pdf").read_bytes())
    new = only_pids(own_converter)
    assert new.soffice != old.soffice
    assert wait_gone(old.worker)


def test_killed_worker_takes_soffice_with_it_and_is_restarted(
    own_converter: PdfConverter, tmp_path: Path
) -> None:
    src = make_docx(tmp_path / "orphan.docx", "orphan")
    own_converter.start()
    old = only_pids(own_converter)
    os.kill(old.worker, signal.SIGKILL)
    assert wait_gone(old.soffice), "LibreOffice outlived its worker"
    own_converter.convert(src, tmp_path / "orphan.pdf")
    assert "orphan" in pdf_text((tmp_path / "orphan.pdf").read_bytes())
    assert only_pids(own_converter).worker != old.worker


def test_hang_times_out_then_next_conversion_succeeds(
    own_converter: PdfConverter, tmp_path: Path
) -> None:
    src = make_docx(tmp_path / "frozen.docx", "thaw")
    own_converter.convert(src, tmp_path / "warm.pdf")
    old = only_pids(own_converter)
    os.kill(old.soffice, signal.SIGSTOP)
    out = tmp_path / "frozen.pdf"
    started = time.monotonic()
    with pytest.raises(ConversionError, match=r"frozen\.docx.*timed out"):
        own_converter.convert(src, out)
    assert time.monotonic() - started < 3.0 + 5.0
    assert not out.exists()
    assert wait_gone(old.soffice)
    assert wait_gone(old.worker)
    own_converter.convert(src, out)
    assert "thaw" in pdf_text(out.read_bytes())
    assert only_pids(own_converter).soffice != old.soffice


def test_two_processes_convert_in_parallel(tmp_path: Path) -> None:
    words = ["alpha", "bravo", "charlie", "delta"]
    sources = [make_docx(tmp_path / f"{word}.docx", f"Codeword{word}") for word in words]
    with PdfConverter(processes=2, work_dir=tmp_path / "lo") as pool:
        pool.start()
        pids = pool.worker_pids()
        assert len({p.worker for p in pids}) == 2
        assert len({p.soffice for p in pids}) == 2
        with ThreadPoolExecutor(max_workers=4) as executor:
            list(executor.map(lambda src: pool.convert(src, src.with_suffix(".pdf")), sources))
        assert pool.worker_pids() == pids
    for word, src in zip(words, sources, strict=True):
        text = pdf_text(src.with_suffix(".pdf").read_bytes())
        assert f"Codeword{word}" in text
        assert all(f"Codeword{other}" not in text for other in words if other != word)


def test_close_stops_every_process_and_is_idempotent(tmp_path: Path) -> None:
    conv = PdfConverter(processes=2, work_dir=tmp_path / "lo")
    conv.start()
    pids = conv.worker_pids()
    assert len(pids) == 2
    conv.close()
    for worker, soffice in pids:
        assert process_gone(worker)
        assert wait_gone(soffice, timeout=2.0)
    assert conv.worker_pids() == []
    conv.close()
    with pytest.raises(ConversionError, match="closed"):
        conv.convert(make_docx(tmp_path / "late.docx", "late"), tmp_path / "late.pdf")
    assert not any((tmp_path / "lo").iterdir())


def test_fresh_process_baseline(tmp_path: Path) -> None:
    src = make_docx(tmp_path / "fresh.docx", "baseline")
    out = tmp_path / "fresh.pdf"
    fresh_process_convert(src, out)
    assert "baseline" in pdf_text(out.read_bytes())
    bad = tmp_path / "junk.docx"
    bad.write_bytes(b"junk")
    with pytest.raises(ConversionError, match=r"junk\.docx"):
        fresh_process_convert(bad, tmp_path / "junk.pdf")
    assert not (tmp_path / "junk.pdf").exists()


def test_check_libreoffice_names_what_is_missing() -> None:
    assert check_libreoffice() is None
    message = check_libreoffice(python="/nonexistent/python3", soffice="no-such-soffice")
    assert message is not None
    assert "no-such-soffice" in message
    assert "apt-get install libreoffice-writer-nogui python3-uno fonts-liberation" in message


def test_default_converter_is_shared() -> None:
    first = default_converter()
    assert first is default_converter()
    assert first.processes >= 1


def bookmarked_docx(path: Path) -> Path:
    """A document with a Word bookmark around a word, as a signing field is made."""
    document = docx.Document()
    paragraph = document.add_paragraph("Sign ")
    namespace = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    paragraph._p.append(parse_xml(f'<w:bookmarkStart {namespace} w:id="7" '
                                  f'w:name="sign_here_buyer"/>'))
    paragraph.add_run("__________")
    paragraph._p.append(parse_xml(f'<w:bookmarkEnd {namespace} w:id="7"/>'))
    document.save(path)
    return path


@pytest.mark.parametrize("how", ["warm", "fresh"])
def test_word_bookmarks_become_named_destinations(converter: PdfConverter, tmp_path: Path,
                                                  how: str) -> None:
    src = bookmarked_docx(tmp_path / "bookmarked.docx")
    out = tmp_path / "bookmarked.pdf"
    if how == "warm":
        converter.convert(src, out)
    else:
        fresh_process_convert(src, out)
    reader = PdfReader(io.BytesIO(out.read_bytes()))
    # LibreOffice escapes the name: "_" is written "5F".
    (name,) = [n for n in reader.named_destinations if "sign" in n]
    assert name.lstrip("/") == "sign5Fhere5Fbuyer"
    destination = reader.named_destinations[name]
    assert reader.get_destination_page_number(destination) == 0
    # The place of the bookmark: the start of its underscores, after "Sign " in the margin.
    page = pdfium.PdfDocument(out.read_bytes())[0]
    text = page.get_textpage()
    start = text.get_text_range().index("_")
    assert float(destination.left) == pytest.approx(text.get_charbox(start)[0], abs=0.5)
