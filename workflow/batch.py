"""Render many letters from a CSV file, keeping every LibreOffice process busy."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

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


def _start_quietly(converter: PdfConverter) -> None:
    """Start every LibreOffice now; a failure shows up again, per row, at conversion."""
    try:
        converter.start()
    except CounterpartError:
        pass


def run_batch(spec: TemplateSpec, csv_path: Path, out_dir: Path, converter: PdfConverter,
              *, pdf: bool = True, on_done: Callable[[RowResult], None] | None = None,
              ) -> BatchReport:
    """Render a .docx (and PDF) per CSV row into ``out_dir``; a bad row does not stop the rest.

    The calling thread renders each letter and writes its .docx, staying a few letters ahead
    of the conversions; one thread per LibreOffice process converts the written .docx straight
    to its PDF in ``out_dir``. LibreOffice starts while the first letters render. ``on_done``
    is called in the calling thread, once per row, in the order rows finish. A row whose PDF
    fails keeps no files and reports why.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(read_terms_csv(spec, csv_path))
    finished: Queue[RowResult] = Queue()
    results: list[RowResult] = []

    def finish(result: RowResult) -> None:
        results.append(result)
        if on_done:
            on_done(result)

    def drain(block: bool) -> None:
        while True:
            try:
                finish(finished.get(block=block))
            except Empty:
                return
            block = False

    def render(row: int, raw: dict) -> RowResult:
        result = RowResult(row)
        if "__row__" in raw:
            result.errors = {"row": raw["__row__"]}
            return result
        try:
            terms = validate_terms(spec, {k: v for k, v in raw.items() if v is not None})
            docx = render_docx(spec, terms)
            docx_path = out_dir / f"{_file_stem(spec, row, terms)}.docx"
            write_atomic(docx_path, docx)
            result.docx_path = docx_path
        except TermsError as exc:
            result.errors = exc.errors
        except CounterpartError as exc:
            result.errors = {"row": str(exc)}
        return result

    def convert(result: RowResult) -> None:
        assert result.docx_path is not None
        pdf_path = result.docx_path.with_suffix(".pdf")
        try:
            converter.convert(result.docx_path, pdf_path)
            result.pdf_path = pdf_path
        except CounterpartError as exc:
            result.errors = {"row": str(exc)}
            result.docx_path.unlink(missing_ok=True)
            result.docx_path = None

    if not pdf or not rows:
        for row, raw in rows:
            finish(render(row, raw))
        return BatchReport(sorted(results, key=lambda r: r.row))

    processes = max(1, int(getattr(converter, "processes", 1)))
    # LibreOffice takes a second or two to start: it does so while the first letters render.
    starter = threading.Thread(target=_start_quietly, args=(converter,), daemon=True,
                               name="batch-start-libreoffice")
    starter.start()
    # A few letters rendered ahead keep every LibreOffice busy without holding the batch in
    # memory; rendering (Python) and converting (LibreOffice) use different cores.
    ready: Queue[RowResult | None] = Queue(maxsize=2 * processes)

    crashed: list[BaseException] = []

    def convert_rows() -> None:
        while (result := ready.get()) is not None:
            try:
                convert(result)
            except BaseException as exc:  # raised again below; this thread must keep draining
                crashed.append(exc)
                result.errors = {"row": f"the PDF was not made ({type(exc).__name__})."}
            finished.put(result)

    threads = [threading.Thread(target=convert_rows, daemon=True, name=f"batch-convert-{i}")
               for i in range(processes)]
    for thread in threads:
        thread.start()
    try:
        for row, raw in rows:
            result = render(row, raw)
            if result.ok:
                ready.put(result)
            else:
                finish(result)
            drain(block=False)
    finally:
        for _ in threads:
            ready.put(None)
        for thread in threads:
            thread.join()
        starter.join()
    if crashed:
        raise crashed[0]
    drain(block=False)
    return BatchReport(sorted(results, key=lambda r: r.row))
