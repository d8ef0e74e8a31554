"""Speed of the document pipeline, measured against a baseline in the same run.

Prints a table: .docx render; PDF with the long-lived converter against a fresh
``soffice --convert-to pdf`` per file (the baseline); batches of 10, 100 and 1,000 letters with
LibreOffice start-up included, each against its floor (the warm conversion of this run times the
rows, divided by the LibreOffice processes, one per core); signing one counterpart (the letter
rendered again with the date of signing, converted by the warm LibreOffice, stamped and stored);
assembling and sealing a two-signer letter (the conformed copy rendered and converted too).
Not a test: the machine is noisy, so read the ratios.

``--batch-only`` measures only the warm conversion and the batches; ``--batch-sizes 10,100``
chooses the batches.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
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
# A batch, LibreOffice's start-up included, within this many times its floor: the warm
# conversion measured in the same run, times the rows, divided by the processes (one per core).
TARGET_BATCH_FLOOR_RATIO = 1.2
TARGET_BATCH_ROWS = 1000
# Signing and assembly each convert the letter once with the warm LibreOffice: their targets
# are that conversion, as measured in the same run, plus a budget for the rest (render, stamp
# and store; for assembly also the certificate, the merge and the seal).
TARGET_SIGN_EXTRA_S = 0.250
TARGET_ASSEMBLY_EXTRA_S = 0.600


def median_time(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def process_cpu_s(pid: int) -> float:
    """Return the CPU seconds (user and system) a running process has used."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_and_children_cpu_s() -> tuple[float, float]:
    """Return the CPU seconds of this process and of its reaped children (and theirs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


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


def bench_execution(work: Path, spec, terms, warm_s: float) -> list[tuple[str, str, str, str]]:
    """Time signing one counterpart and assembling and sealing a two-signer letter.

    Both convert with one warm LibreOffice, as the web app's does; starting it is not timed.
    ``warm_s`` is one warm conversion in this run, which each target includes.
    """
    from workflow import envelopes
    from workflow.db import open_database
    from workflow.letters import create_letter, generate_document, pending_documents
    from workflow.seal import load_or_create_sealer

    database = open_database(work / "data")
    sealer = load_or_create_sealer(work / "data")
    staff = envelopes.Actor("bench@example.com", "127.0.0.1", "bench")
    signature = {"type": "typed", "text": "Eliot Protsch"}
    runs = 9
    converter = PdfConverter(processes=1)
    with database.transaction() as session:
        letter_ids = [create_letter(session, spec.name, sample_terms(spec), None).id
                      for _ in range(runs + 1)]
        pending = pending_documents(session)
    for document_id in pending:
        generate_document(database, document_id, converter)

    def send(letter_id: int) -> tuple[str, list[str]]:
        with database.transaction() as session:
            envelope, links = envelopes.send_envelope(session, letter_id, None, staff)
            return envelope.id, [link.token for link in links]

    def sign(token: str) -> bool:
        with database.transaction() as session:
            return envelopes.sign_counterpart(session, token, consent=True,
                                              signature=signature, actor=staff,
                                              time_zone="America/Los_Angeles",
                                              converter=converter)[1]

    sign_times, assembly_times = [], []
    try:
        for letter_id in letter_ids[:runs]:
            envelope_id, tokens = send(letter_id)
            started = time.perf_counter()
            sign(tokens[0])
            sign_times.append(time.perf_counter() - started)
            sign(tokens[1])
            started = time.perf_counter()
            assert envelopes.assemble_envelope(database, envelope_id, sealer,
                                               converter) is not None
            assembly_times.append(time.perf_counter() - started)
    finally:
        converter.close()
        database.dispose()
    sign_s, assembly_s = statistics.median(sign_times), statistics.median(assembly_times)
    sign_target = warm_s + TARGET_SIGN_EXTRA_S
    assembly_target = warm_s + TARGET_ASSEMBLY_EXTRA_S
    return [
        (f"sign one counterpart: render, convert, stamp, store (median of {runs})",
         f"{sign_s * 1000:.0f} ms",
         f"< PDF + {TARGET_SIGN_EXTRA_S * 1000:.0f} ms = {sign_target * 1000:.0f} ms",
         "met" if sign_s < sign_target else "MISSED"),
        (f"assemble (conformed copy converted) and seal two signers (median of {runs})",
         f"{assembly_s * 1000:.0f} ms",
         f"< PDF + {TARGET_ASSEMBLY_EXTRA_S * 1000:.0f} ms = {assembly_target * 1000:.0f} ms",
         "met" if assembly_s < assembly_target else "MISSED"),
    ]


def bench_batches(work: Path, spec, warm_s: float, warm_cpu_s: float, sizes: list[int],
                  rows: list[tuple[str, str, str, str]]) -> bool:
    """Time a batch of each size, start-up included, against its floor; True if a row failed.

    Besides the time, each batch's CPU (this process, its LibreOffice processes and their
    workers, start and stop included) is compared with the CPU of as many warm conversions:
    on a machine busy with other work, where the times say little, that ratio is about what
    the time's ratio would be on an idle one.
    """
    processes = os.cpu_count() or 1
    for count in sizes:
        csv_path = work / f"batch-{count}.csv"
        write_batch_csv(csv_path, spec, count)
        own_before, children_before = own_and_children_cpu_s()
        started = time.perf_counter()
        with PdfConverter(processes=processes) as converter:
            report = run_batch(spec, csv_path, work / f"batch-{count}", converter)
        batch_s = time.perf_counter() - started
        own_after, children_after = own_and_children_cpu_s()
        own_cpu, office_cpu = own_after - own_before, children_after - children_before
        if report.failed:
            print(f"batch rows failed: {[r.row for r in report.failed]}", file=sys.stderr)
            return True
        floor_s = warm_s * count / processes
        ratio = batch_s / floor_s
        target = (f"<= {TARGET_BATCH_FLOOR_RATIO:g}x floor" if count >= TARGET_BATCH_ROWS
                  else "")
        verdict = ("met" if ratio <= TARGET_BATCH_FLOOR_RATIO else "MISSED") if target else ""
        rows.append((f"batch of {count} letters, {processes} LibreOffice, start-up included",
                     f"{batch_s:.1f} s, {batch_s / count * 1000:.0f} ms/letter, "
                     f"floor {floor_s:.1f} s, {ratio:.2f}x", target, verdict))
        rows.append((f"  its CPU a letter: Python {own_cpu / count * 1000:.0f} ms, LibreOffice "
                     f"{office_cpu / count * 1000:.0f} ms",
                     f"{(own_cpu + office_cpu) / (warm_cpu_s * count):.2f}x the CPU of warm "
                     "conversions", "", ""))
    return False


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """Print the rows as a table with a header."""
    header = ("step", "time", "target", "result")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-only", action="store_true",
                        help="measure the warm conversion and the batches only")
    parser.add_argument("--batch-sizes", default="10,100,1000",
                        type=lambda raw: [int(part) for part in raw.split(",") if part.strip()],
                        help="comma-separated batch sizes (default 10,100,1000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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

        fresh_s = 0.0
        if not args.batch_only:
            fresh_s = median_time(lambda: fresh_process_convert(source, work / "fresh.pdf"), 5)
            rows.append(("PDF, fresh soffice per file (baseline, median of 5)",
                         f"{fresh_s * 1000:.0f} ms", "", ""))

        with PdfConverter(processes=1) as converter:
            converter.convert(source, work / "warm.pdf")  # start-up is not part of this figure
            [pids] = converter.worker_pids()
            cpu_before = (process_cpu_s(pids.soffice) + process_cpu_s(pids.worker)
                          + time.process_time())
            warm_s = median_time(lambda: converter.convert(source, work / "warm.pdf"), 15)
            warm_cpu_s = (process_cpu_s(pids.soffice) + process_cpu_s(pids.worker)
                          + time.process_time() - cpu_before) / 15
        if args.batch_only:
            rows.append(("PDF, long-lived converter (median of 15)",
                         f"{warm_s * 1000:.0f} ms, CPU {warm_cpu_s * 1000:.0f} ms", "", ""))
        else:
            speedup = fresh_s / warm_s
            rows.append(("PDF, long-lived converter (median of 15)", f"{warm_s * 1000:.0f} ms",
                         f">= {TARGET_WARM_SPEEDUP:.0f}x faster",
                         f"{speedup:.1f}x "
                         + ("met" if speedup >= TARGET_WARM_SPEEDUP else "MISSED")))

        failed = bench_batches(work, spec, warm_s, warm_cpu_s, args.batch_sizes, rows)
        if failed:
            return 1
        if args.batch_only:
            print_table(rows)
            return 0

        rows.extend(bench_execution(work, spec, terms, warm_s))

    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
