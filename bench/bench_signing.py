"""Signing under load: fifty signers at once, each the last signer of a letter.

Sets up fifty letters (their PDFs through LibreOffice), each sent to two signers of which the
first has signed, plus a few more letters whose assembly is timed here, inline with a warm
LibreOffice: the assembly-and-seal time of one letter (the median), measured in the same run.
Then starts a real ``counterpart serve`` with its background worker; each of the fifty signers
opens the signing page (``GET /sign/<token>``), and all sign at the same moment the way the
browser does (``POST /sign/<token>`` with the form's CSRF token, consent and a typed
signature). Prints the sign request's p50/p95 (goal: p95 under 500 ms) and the time from the
first signature to the fiftieth executed letter against 1.5 × one assembly × 50 / cores.

    .venv/bin/python bench/bench_signing.py                     # SQLite
    scripts/with-postgres .venv/bin/python bench/bench_signing.py postgresql
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from bench_web import SERVER_ENV, scratch_queue, serve_options, server_database  # noqa: E402
from serving import ServerProcess  # noqa: E402
from web_load import percentile  # noqa: E402

from workflow.db import Database, open_database  # noqa: E402

__all__ = ["SIGNERS", "prepare", "sign_all", "main"]

SIGNERS = 50
INLINE = 3
DEADLINE_SECONDS = 900


def prepare(database: Database, data_dir: Path) -> tuple[list[tuple[str, str]], list[float]]:
    """Make ``SIGNERS`` letters waiting for their last signer; return [(envelope id, last
    signer's token)] and the seconds of ``INLINE`` assemblies run here."""
    from workflow import envelopes
    from workflow.convert import PdfConverter
    from workflow.letters import create_letter, generate_document, pending_documents
    from workflow.schema import load_template, sample_terms
    from workflow.seal import load_or_create_sealer

    spec = load_template("separation_letter")
    sealer = load_or_create_sealer(data_dir)
    staff = envelopes.Actor("bench@example.com", "127.0.0.1", "bench")
    signature = {"type": "typed", "text": "Chair of the company"}
    waiting: list[tuple[str, str]] = []
    inline: list[float] = []
    with scratch_queue(), PdfConverter(processes=1) as converter:
        with database.transaction() as session:
            letter_ids = [create_letter(session, spec.name, {
                **sample_terms(spec), "company_name": f"Signing Company {n:02d}"}, None).id
                for n in range(SIGNERS + INLINE)]
            pending = pending_documents(session)
        for document_id in pending:
            generate_document(database, document_id, converter)
        for letter_id in letter_ids:
            with database.transaction() as session:
                envelope, links = envelopes.send_envelope(session, letter_id, None, staff)
                envelope_id = envelope.id
            with database.transaction() as session:
                envelopes.sign_counterpart(session, links[0].token, consent=True,
                                           signature=signature, actor=staff,
                                           converter=converter)
            waiting.append((envelope_id, links[1].token))
        for envelope_id, token in waiting[SIGNERS:]:
            copy = envelopes.prepare_signature(database, token, consent=True,
                                               signature=signature, converter=converter)
            with database.transaction() as session:
                envelopes.record_signature(session, token, copy, staff)
            begun = time.perf_counter()
            assert envelopes.assemble_envelope(database, envelope_id, sealer,
                                               converter) is not None
            inline.append(time.perf_counter() - begun)
    return waiting[:SIGNERS], inline


def executed_count(database: Database, envelope_ids: list[str]) -> int:
    """How many of the envelopes have their executed PDF stored."""
    from sqlalchemy import func, select

    from workflow.models import Envelope

    with database.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Envelope).where(
            Envelope.id.in_(envelope_ids), Envelope.executed_document_id.is_not(None))) or 0)


def sign_all(url: str, waiting: list[tuple[str, str]]) -> tuple[list[float], float]:
    """Open every signing page, then sign all at once; return the POSTs' seconds and the
    monotonic time the signing began."""
    start = threading.Barrier(len(waiting) + 1)
    began = [0.0]

    def sign(index: int, token: str) -> float:
        with httpx.Client(base_url=url, timeout=600) as browser:
            page = browser.get(f"/sign/{token}")
            assert page.status_code == 200, page.text[:300]
            csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
            assert csrf, "the signing page has no CSRF token"
            start.wait()
            begun = time.perf_counter()
            answer = browser.post(f"/sign/{token}", data={
                "csrf_token": csrf.group(1), "consent": "yes", "signature_type": "typed",
                "signature_text": f"Executive {index:02d}", "time_zone": "UTC"})
            elapsed = time.perf_counter() - begun
            assert answer.status_code in (302, 303), f"{answer.status_code}: {answer.text[:300]}"
            return elapsed

    with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
        answers = [pool.submit(sign, n, token) for n, (_, token) in enumerate(waiting)]
        start.wait()
        began[0] = time.monotonic()
        return [answer.result() for answer in answers], began[0]


def measure(data_dir: Path, database_url: str | None) -> dict[str, float]:
    """Set up, sign, wait for the fifty executed letters; return the figures (seconds)."""
    database = open_database(data_dir, database_url)
    started = time.perf_counter()
    waiting, inline = prepare(database, data_dir)
    print(f"  {SIGNERS} letters ready to sign in {time.perf_counter() - started:.0f} s; one "
          f"assembly inline: {statistics.median(inline) * 1000:.0f} ms (median of {INLINE})",
          flush=True)
    envelope_ids = [envelope_id for envelope_id, _ in waiting]
    server = ServerProcess(data_dir, database_url, serve_options=serve_options())
    try:
        server.wait_until_up(180)
        # The worker starts beside the server: wait until it says so (at most 2 minutes).
        ready = time.monotonic() + 120
        while "Counterpart worker" not in server.log.read_text(errors="replace") and \
                time.monotonic() < ready:
            time.sleep(0.2)
        posts, began = sign_all(server.url, waiting)
        deadline = began + DEADLINE_SECONDS
        while executed_count(database, envelope_ids) < SIGNERS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {executed_count(database, envelope_ids)} of {SIGNERS} "
                                   f"letters executed after {DEADLINE_SECONDS} s:\n"
                                   f"{server.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        all_done = time.monotonic() - began
    finally:
        server.stop()
        database.dispose()
    posts.sort()
    one = statistics.median(inline)
    return {"p50": percentile(posts, 0.5), "p95": percentile(posts, 0.95),
            "max": posts[-1], "all_executed": all_done, "one_assembly": one,
            "goal": 1.5 * one * SIGNERS / (os.cpu_count() or 1)}


def main(argv: list[str] | None = None) -> int:
    """Measure on the engine named in ``argv`` (``sqlite``, the default, or ``postgresql``,
    the server of ``COUNTERPART_TEST_DATABASE_URL``); print the figures."""
    engine = (argv if argv is not None else sys.argv[1:] or ["sqlite"])[0]
    print(f"\nSigning under load ({engine}): {SIGNERS} signers at once, a real worker",
          flush=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-signing-{engine}-") as folder:
        data_dir = Path(folder) / "data"
        if engine == "sqlite":
            figures = measure(data_dir, None)
        else:
            server_url = os.environ.get(SERVER_ENV)
            if not server_url:
                print(f"  skipped: {SERVER_ENV} names no PostgreSQL server")
                return 0
            with server_database(server_url, "counterpart_bench_signing") as url:
                figures = measure(data_dir, url)
    print(f"- sign request (POST /sign/<token>): p50 {figures['p50'] * 1000:.0f} ms, p95 "
          f"{figures['p95'] * 1000:.0f} ms, max {figures['max'] * 1000:.0f} ms; goal p95 < "
          f"500 ms: {'met' if figures['p95'] < 0.5 else 'NOT met'}")
    met = figures["all_executed"] <= figures["goal"]
    print(f"- all {SIGNERS} executed after {figures['all_executed']:.1f} s; goal ≤ 1.5 × "
          f"{figures['one_assembly'] * 1000:.0f} ms × {SIGNERS} / {os.cpu_count()} cores = "
          f"{figures['goal']:.1f} s: {'met' if met else 'NOT met'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
