"""Speed of the document pipeline, measured against a baseline in the same run.

Prints a table: .docx render; PDF with the long-lived converter against a fresh
``soffice --convert-to pdf`` per file (the baseline); and a 100-letter batch with LibreOffice
start-up included. Not a test: the machine is noisy, so read the ratios.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from workflow.batch import run_batch
from workflow.convert import PdfConverter, fresh_process_convert
from workflow.render import render_docx
from workflow.schema import load_template, sample_terms, validate_terms

TARGET_RENDER_S = 0.050
TARGET_WARM_SPEEDUP = 10.0
TARGET_BATCH_PER_LETTER_S = 0.15


def median_time(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_batch_csv(path: Path, spec, count: int) -> None:
    base = sample_terms(spec)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(base))
        writer.writeheader()
        for index in range(count):
            row = dict(base)
            row["executive_full_name"] = f"Executive {index:03d}"
            row["option_shares"] = 2_000_000 + index
            row["cancelled_option_grant_dates"] = ";".join(base["cancelled_option_grant_dates"])
            row["repurchase_unvested_restricted"] = "true" if index % 2 else "false"
            writer.writerow(row)


def main() -> int:
    spec = load_template("separation_letter")
    terms = validate_terms(spec, sample_terms(spec))
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="counterpart-bench-") as tmp:
        work = Path(tmp)
        docx = render_docx(spec, terms)
        source = work / "letter.docx"
        source.write_bytes(docx)

        render_s = median_time(lambda: render_docx(spec, terms), 30)
        rows.append(("render one .docx (median of 30)", f"{render_s * 1000:.1f} ms",
                     f"< {TARGET_RENDER_S * 1000:.0f} ms",
                     "met" if render_s < TARGET_RENDER_S else "MISSED"))

        fresh_s = median_time(lambda: fresh_process_convert(source, work / "fresh.pdf"), 5)
        rows.append(("PDF, fresh soffice per file (baseline, median of 5)",
                     f"{fresh_s * 1000:.0f} ms", "", ""))

        with PdfConverter(processes=1) as converter:
            converter.convert(source, work / "warm.pdf")  # start-up is not part of this figure
            warm_s = median_time(lambda: converter.convert(source, work / "warm.pdf"), 15)
        speedup = fresh_s / warm_s
        rows.append(("PDF, long-lived converter (median of 15)", f"{warm_s * 1000:.0f} ms",
                     f">= {TARGET_WARM_SPEEDUP:.0f}x faster",
                     f"{speedup:.1f}x " + ("met" if speedup >= TARGET_WARM_SPEEDUP else "MISSED")))

        count = 100
        csv_path = work / "batch.csv"
        write_batch_csv(csv_path, spec, count)
        processes = os.cpu_count() or 1
        started = time.perf_counter()
        with PdfConverter(processes=processes) as converter:
            report = run_batch(spec, csv_path, work / "batch", converter)
        batch_s = time.perf_counter() - started
        if report.failed:
            print(f"batch rows failed: {[r.row for r in report.failed]}", file=sys.stderr)
            return 1
        per_letter = batch_s / count
        rows.append((f"batch of {count} letters, {processes} LibreOffice, start-up included",
                     f"{batch_s:.1f} s total, {per_letter * 1000:.0f} ms/letter",
                     f"< {TARGET_BATCH_PER_LETTER_S * 1000:.0f} ms/letter",
                     "met" if per_letter < TARGET_BATCH_PER_LETTER_S else "MISSED"))

    widths = [max(len(r[i]) for r in rows + [("step", "time", "target", "result")])
              for i in range(4)]
    header = ("step", "time", "target", "result")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
