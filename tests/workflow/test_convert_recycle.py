"""LibreOffice is restarted after a number of conversions, while idle, without failing any."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader

from workflow.convert import RECYCLE_ENV, PdfConverter
from workflow.errors import ConversionError


def make_docx(path: Path, word: str) -> Path:
    """Write a small Word document that says ``word``."""
    document = docx.Document()
    document.add_heading("Recycling test", level=1)
    document.add_paragraph(word)
    document.save(str(path))
    return path


def pdf_text(data: bytes) -> str:
    """Return a PDF's text with whitespace normalised."""
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() or "" for page in reader.pages))


def wait_idle(converter: PdfConverter, timeout: float = 60.0) -> None:
    """Wait until no worker is being restarted."""
    deadline = time.monotonic() + timeout
    while converter._recycling and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not converter._recycling, "the restart did not finish"


def test_recycle_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECYCLE_ENV, raising=False)
    assert PdfConverter().recycle_after == 300
    monkeypatch.setenv(RECYCLE_ENV, "25")
    assert PdfConverter().recycle_after == 25
    assert PdfConverter(recycle_after=4).recycle_after == 4
    monkeypatch.setenv(RECYCLE_ENV, "0")
    assert PdfConverter().recycle_after == 0
    monkeypatch.setenv(RECYCLE_ENV, "often")
    with pytest.raises(ConversionError, match=RECYCLE_ENV):
        PdfConverter()
    with pytest.raises(ValueError, match="recycle_after"):
        PdfConverter(recycle_after=-1)


def test_worker_restarts_every_few_conversions(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workflow.convert")
    sources = [make_docx(tmp_path / f"letter{i}.docx", f"Codeword{i}x") for i in range(7)]
    seen: set[int] = set()
    with PdfConverter(work_dir=tmp_path / "lo", recycle_after=3) as converter:
        for src in sources:
            # Not waiting for a restart to finish: a conversion may arrive in the middle of one.
            converter.convert(src, src.with_suffix(".pdf"))
            seen.update(pids.soffice for pids in converter.worker_pids())
        wait_idle(converter)
        seen.update(pids.soffice for pids in converter.worker_pids())
        assert converter.restarts >= 2
    assert len(seen) >= 3, "each restart runs a new LibreOffice"
    for index, src in enumerate(sources):
        text = pdf_text(src.with_suffix(".pdf").read_bytes())
        assert f"Codeword{index}x" in text
        assert all(f"Codeword{other}x" not in text for other in range(7) if other != index)
    restarts = [r for r in caplog.records
                if r.levelno == logging.INFO and "Restarted LibreOffice worker" in r.getMessage()]
    assert len(restarts) >= 2
    assert "after 3 conversions" in restarts[0].getMessage()


def test_conversion_during_a_restart_waits_for_it_and_succeeds(tmp_path: Path) -> None:
    first = make_docx(tmp_path / "first.docx", "Firstword")
    second = make_docx(tmp_path / "second.docx", "Secondword")
    with PdfConverter(work_dir=tmp_path / "lo", recycle_after=1) as converter:
        converter.convert(first, tmp_path / "first.pdf")
        # The restart was set off as the first conversion ended; the only worker is busy with it.
        assert converter._recycling == 1
        assert converter.restarts == 0
        converter.convert(second, tmp_path / "second.pdf")
        assert converter.restarts >= 1
        wait_idle(converter)
    assert "Firstword" in pdf_text((tmp_path / "first.pdf").read_bytes())
    assert "Secondword" in pdf_text((tmp_path / "second.pdf").read_bytes())


def test_zero_never_restarts(tmp_path: Path) -> None:
    src = make_docx(tmp_path / "same.docx", "Sameword")
    with PdfConverter(work_dir=tmp_path / "lo", recycle_after=0) as converter:
        converter.convert(src, tmp_path / "1.pdf")
        before = converter.worker_pids()
        for index in range(2, 5):
            converter.convert(src, tmp_path / f"{index}.pdf")
        assert converter.worker_pids() == before
        assert converter.restarts == 0


def test_close_during_a_restart_stops_everything(tmp_path: Path) -> None:
    src = make_docx(tmp_path / "last.docx", "Lastword")
    converter = PdfConverter(work_dir=tmp_path / "lo", recycle_after=1)
    converter.convert(src, tmp_path / "last.pdf")
    assert converter._recycling == 1
    converter.close()
    assert converter.worker_pids() == []
    assert not any((tmp_path / "lo").iterdir())
