"""Render many letters from a CSV file, keeping every LibreOffice process busy."""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .convert import PdfConverter
from .errors import CounterpartError, TermsError
from .files import write_atomic
from .render import render_docx
from .schema import TemplateSpec, document_names, validate_terms

__all__ = ["RowResult", "BatchReport", "read_terms_csv", "run_batch"]


@dataclass
class RowResult:
    """What became of one CSV row: its files, or its errors."""

    row: int
    docx_path: Path | None = None
    pdf_path: Path | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class BatchReport:
    """Every row's result, in row order."""

    results: list[RowResult]

    @property
    def failed(self) -> list[RowResult]:
        return [r for r in self.results if not r.ok]


def read_terms_csv(spec: TemplateSpec, path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Yield (row number, raw terms) per data row; the header names term keys.

    Row numbers count the header as row 1, as a spreadsheet shows them. Empty cells are
    absent terms, so derived fields are computed.
    """
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CounterpartError(f"{path}: cannot be read ({exc.strerror}).") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        unknown = [h for h in header if h not in spec.fields]
        if not header:
            raise CounterpartError(f"{path}: the file is empty; the first row must name terms.")
        if unknown:
            raise CounterpartError(
                f"{path}: column(s) {', '.join(map(repr, unknown))} are not terms of the "
                f"{spec.name} template.")
        for number, row in enumerate(reader, start=2):
            if None in row:
                yield number, {"__row__": "has more cells than the header has columns"}
                continue
            yield number, {k: (v if v is not None and v.strip() else None) for k, v in row.items()}


def _file_stem(spec: TemplateSpec, row: int, terms: dict) -> str:
    return f"row{row:04d}-{document_names(spec, terms).file_stem}"


def run_batch(spec: TemplateSpec, csv_path: Path, out_dir: Path, converter: PdfConverter,
              *, pdf: bool = True, on_done: Callable[[RowResult], None] | None = None,
              ) -> BatchReport:
    """Render a .docx (and PDF) per CSV row into ``out_dir``; a bad row does not stop the rest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(read_terms_csv(spec, csv_path))
    lock = threading.Lock()

    def one(row: int, raw: dict) -> RowResult:
        result = RowResult(row)
        if "__row__" in raw:
            result.errors = {"row": raw["__row__"]}
            return result
        try:
            terms = validate_terms(spec, {k: v for k, v in raw.items() if v is not None})
            with lock:  # rendering is CPU-bound Python; one at a time leaves the GIL to I/O
                docx = render_docx(spec, terms)
            stem = _file_stem(spec, row, terms)
            data_pdf = converter.convert_bytes(docx) if pdf else None
            result.docx_path = out_dir / f"{stem}.docx"
            write_atomic(result.docx_path, docx)
            if data_pdf is not None:
                result.pdf_path = out_dir / f"{stem}.pdf"
                write_atomic(result.pdf_path, data_pdf)
        except TermsError as exc:
            result.errors = exc.errors
        except CounterpartError as exc:
            result.errors = {"row": str(exc)}
        return result

    results: list[RowResult] = []
    # Two jobs per LibreOffice process: one renders while the other's PDF is being made.
    workers = max(1, getattr(converter, "processes", os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, row, raw) for row, raw in rows]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_done:
                on_done(result)
    return BatchReport(sorted(results, key=lambda r: r.row))
