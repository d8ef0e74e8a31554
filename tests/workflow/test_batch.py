"""A batch renders ahead of LibreOffice, converts every good row and reports each bad one."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pypdf
import pytest

from workflow.batch import RowResult, run_batch
from workflow.convert import PdfConverter
from workflow.errors import ConversionError
from workflow.schema import TemplateSpec


def write_csv(path: Path, base: dict, names: list[str], bad: dict[int, dict]) -> Path:
    """Write one row per name; ``bad`` overrides the terms of some rows (by index)."""
    row = {**base, "cancelled_option_grant_dates": ";".join(base["cancelled_option_grant_dates"]),
           "repurchase_unvested_restricted": "true"}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        for index, name in enumerate(names):
            writer.writerow({**row, "executive_full_name": name, **bad.get(index, {})})
    return path


def pdf_words(path: Path) -> str:
    return " ".join(" ".join(page.extract_text() or "" for page in pypdf.PdfReader(path).pages)
                    .split())


class FailingFor:
    """A converter that refuses the letters of one executive and passes the rest on."""

    def __init__(self, real: PdfConverter, name: str) -> None:
        self.real, self.name, self.processes = real, name, real.processes
        self.started = False

    def start(self) -> None:
        self.started = True
        self.real.start()

    def convert(self, docx_path: Path, pdf_path: Path) -> None:
        if self.name.lower().replace(" ", "-") in docx_path.name:
            raise ConversionError(f"Cannot convert {docx_path.name} to PDF: refused.")
        self.real.convert(docx_path, pdf_path)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory):
    with PdfConverter(processes=2, work_dir=tmp_path_factory.mktemp("lo")) as pool:
        yield pool


def test_every_good_row_gets_its_own_pdf(tmp_path: Path, spec: TemplateSpec,
                                         reference_terms: dict,
                                         two_processes: PdfConverter) -> None:
    names = ["Ada Quill", "Bo Renn", "Cy Tamm", "Di Vosk", "Ed Wynn", "Flo Yarr", "Gus Zell"]
    csv_path = write_csv(tmp_path / "rows.csv", reference_terms, names,
                         {2: {"letter_date": "2006-13-01"}})
    calls: list[tuple[int, str]] = []
    report = run_batch(spec, csv_path, tmp_path / "out", two_processes,
                       on_done=lambda r: calls.append((r.row, threading.current_thread().name)))
    assert [r.row for r in report.results] == list(range(2, 9))
    assert sorted(row for row, _ in calls) == list(range(2, 9))
    assert {thread for _, thread in calls} == {threading.current_thread().name}
    assert [r.row for r in report.failed] == [4]
    assert "not a real calendar date" in report.failed[0].errors["letter_date"]
    for result, name in zip(report.results, names, strict=True):
        if result.row == 4:
            assert result.docx_path is None and result.pdf_path is None
            continue
        assert result.docx_path is not None and result.pdf_path is not None
        assert result.pdf_path == result.docx_path.with_suffix(".pdf")
        words = pdf_words(result.pdf_path)
        assert name in words
        assert all(other not in words for other in names if other != name)
    # No temporary files are left beside the letters.
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".docx"] * 6 + [".pdf"] * 6


def test_a_row_whose_pdf_fails_keeps_no_files_and_the_rest_finish(
        tmp_path: Path, spec: TemplateSpec, reference_terms: dict,
        two_processes: PdfConverter) -> None:
    names = ["Hal Abbe", "Ivy Bose", "Jo Cato"]
    csv_path = write_csv(tmp_path / "rows.csv", reference_terms, names, {})
    converter = FailingFor(two_processes, "Ivy Bose")
    done: list[RowResult] = []
    report = run_batch(spec, csv_path, tmp_path / "out", converter,  # type: ignore[arg-type]
                       on_done=done.append)
    assert converter.started
    assert len(done) == 3
    [failed] = report.failed
    assert failed.row == 3 and "refused" in failed.errors["row"]
    assert failed.docx_path is None and failed.pdf_path is None
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 4 and not any("ivy-bose" in name for name in written)


def test_without_pdf_only_docx_files_and_libreoffice_never_starts(
        tmp_path: Path, spec: TemplateSpec, reference_terms: dict) -> None:
    csv_path = write_csv(tmp_path / "rows.csv", reference_terms, ["Kim Dahl", "Lu Egan"], {})
    with PdfConverter(work_dir=tmp_path / "lo") as converter:
        report = run_batch(spec, csv_path, tmp_path / "out", converter, pdf=False)
        assert converter.worker_pids() == []
    assert not report.failed
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".docx", ".docx"]
