"""Speed of the background-job queue, against the same work done inline in the same run.

For each queue storage, with one real ``counterpart worker`` process (its default 2 threads):

* a trivial job (it writes one row) through the queue: 500 enqueued at once, enqueue to done,
  in jobs per second; and one job at a time after half a second of quiet, enqueue to done,
  against calling the same job inline (``call_local``);
* the executed letter: from the commit of a letter's last signature to its sealed executed
  PDF stored by the worker (median and 95th percentile of 10 letters), against the same
  assembly (:func:`workflow.envelopes.assemble_envelope`) run inline in this process with a
  warm LibreOffice, on 10 other letters of the same run.

The embedded default is Huey's SQLite storage (``queue.db`` beside a SQLite database; a
worker polls it, backing off up to ``COUNTERPART_QUEUE_POLL_MS``, 2 s); PostgreSQL keeps the
queue in the app's database and wakes workers with LISTEN/NOTIFY. PostgreSQL is measured
when ``COUNTERPART_TEST_DATABASE_URL`` names a server (``scripts/with-postgres`` does;
``make bench`` runs this under it). Not a test: the machine is noisy, so read the ratios.

    .venv/bin/python bench/bench_jobs.py
    scripts/with-postgres .venv/bin/python bench/bench_jobs.py

A worker started here imports this module (``COUNTERPART_EXTRA_TASK_MODULES=bench_jobs``)
to know the trivial job.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from workflow import jobs

ROOT = Path(__file__).resolve().parents[1]
RUNS_TABLE = "bench_job_runs"
BATCH = 500
SINGLE = 20
LETTERS = 10
SERVER_ENV = "COUNTERPART_TEST_DATABASE_URL"


# --- the trivial job (imported by the worker too) -----------------------------------------------

@jobs.job(retries=0)
def record_run(enqueued_at: float) -> None:
    """Write one row: when the job was enqueued and when it ran (UNIX seconds)."""
    with jobs.runtime().db.transaction() as session:
        session.execute(text(f"INSERT INTO {RUNS_TABLE} (enqueued_at, done_at) "
                             "VALUES (:enqueued, :done)"),
                        {"enqueued": enqueued_at, "done": time.time()})


def _create_runs_table(database) -> None:
    serial = "INTEGER" if database.is_sqlite else "SERIAL"
    with database.transaction() as session:
        session.execute(text(f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (id {serial} PRIMARY KEY, "
                             "enqueued_at DOUBLE PRECISION NOT NULL, "
                             "done_at DOUBLE PRECISION NOT NULL)"))


def _runs(database) -> list[tuple[float, float]]:
    with database.transaction() as session:
        return [(float(e), float(d)) for e, d in session.execute(text(
            f"SELECT enqueued_at, done_at FROM {RUNS_TABLE} ORDER BY id"))]


def _clear_runs(database) -> None:
    with database.transaction() as session:
        session.execute(text(f"DELETE FROM {RUNS_TABLE}"))


# --- the worker ---------------------------------------------------------------------------------

class Worker:
    """A ``counterpart worker`` process on a data folder (and database URL)."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERPART_")}
        env.update({"COUNTERPART_DATA_DIR": str(data_dir),
                    "COUNTERPART_CONVERTER_PROCESSES": "1",
                    jobs.EXTRA_TASK_MODULES_ENV: "bench_jobs",
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)])})
        if database_url:
            env["COUNTERPART_DATABASE_URL"] = database_url
        self.log = data_dir.parent / "worker.log"
        self._handle = self.log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "web.cli", "worker"], cwd=ROOT,
                                        env=env, stdout=self._handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "is running" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._handle.close()


def _wait(check: Callable[[], bool], what: str, worker: Worker, timeout: float = 300,
          interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s:\n"
                               f"{worker.output()}")
        time.sleep(interval)


# --- what is measured ---------------------------------------------------------------------------

@dataclass
class Figures:
    """One queue storage's measurements (seconds, and jobs per second)."""

    batch_jobs_per_s: float
    single_s: float
    inline_s: float
    executed_queue: list[float]
    executed_inline: list[float]


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def measure_trivial(database, worker: Worker) -> tuple[float, float, float]:
    """Return (jobs per second for a batch, median single enqueue-to-done, median inline)."""
    _clear_runs(database)
    started = time.time()
    for _ in range(BATCH):
        record_run(time.time())
    _wait(lambda: len(_runs(database)) >= BATCH, f"{BATCH} trivial jobs", worker,
          interval=0.05)
    finished = max(done for _, done in _runs(database))
    batch_rate = BATCH / (finished - started)

    single = []
    for _ in range(SINGLE):
        _clear_runs(database)
        time.sleep(0.5)
        record_run(time.time())
        _wait(lambda: bool(_runs(database)), "a trivial job", worker)
        [(enqueued, done)] = _runs(database)
        single.append(done - enqueued)

    inline = []
    for _ in range(SINGLE):
        begun = time.perf_counter()
        record_run.call_local(time.time())
        inline.append(time.perf_counter() - begun)
    _clear_runs(database)
    return batch_rate, statistics.median(single), statistics.median(inline)


def measure_executed(database, data_dir: Path, queue_url: str, scratch_queue: str,
                     worker: Worker) -> tuple[list[float], list[float]]:
    """Return the seconds from the last signature's commit to the stored executed PDF, through
    the queue, and of the same assembly run inline, for ``LETTERS`` letters each."""
    from workflow import envelopes
    from workflow.convert import PdfConverter
    from workflow.letters import create_letter, generate_document, pending_documents
    from workflow.models import Document, Envelope
    from workflow.schema import load_template, sample_terms
    from workflow.seal import load_or_create_sealer

    spec = load_template("separation_letter")
    sealer = load_or_create_sealer(data_dir)
    staff = envelopes.Actor("bench@example.com", "127.0.0.1", "bench")
    signature = {"type": "typed", "text": "Eliot Protsch"}
    # What the setting-up enqueues (PDFs, the outbox) goes to a queue no worker reads.
    jobs.configure(scratch_queue)
    with PdfConverter(processes=1) as converter:
        with database.transaction() as session:
            letter_ids = [create_letter(session, spec.name, sample_terms(spec), None).id
                          for _ in range(2 * LETTERS)]
            pending = pending_documents(session)
        for document_id in pending:
            generate_document(database, document_id, converter)
        last_links = []
        for letter_id in letter_ids:
            with database.transaction() as session:
                envelope, links = envelopes.send_envelope(session, letter_id, None, staff)
                envelope_id = envelope.id
            with database.transaction() as session:
                envelopes.sign_counterpart(session, links[0].token, consent=True,
                                           signature=signature, actor=staff,
                                           converter=converter)
            last_links.append((envelope_id, links[1].token))

        def sign_last(token: str) -> None:
            copy = envelopes.prepare_signature(database, token, consent=True,
                                               signature=signature, converter=converter)
            with database.transaction() as session:
                envelopes.record_signature(session, token, copy, staff)

        def executed_at(envelope_id: str) -> float | None:
            with database.transaction() as session:
                envelope = session.get(Envelope, envelope_id)
                if envelope.executed_document_id is None:
                    return None
                stored = session.get(Document, envelope.executed_document_id).created_at
                return stored.timestamp()

        inline = []
        for envelope_id, token in last_links[:LETTERS]:
            sign_last(token)  # its assembly job goes to the scratch queue, and is not run
            begun = time.perf_counter()
            assert envelopes.assemble_envelope(database, envelope_id, sealer,
                                               converter) is not None
            inline.append(time.perf_counter() - begun)

        jobs.configure(queue_url)
        through_queue = []
        for envelope_id, token in last_links[LETTERS:]:
            sign_last(token)
            committed = time.time()
            _wait(lambda envelope_id=envelope_id: executed_at(envelope_id) is not None,
                  "an executed PDF", worker, interval=0.02)
            through_queue.append(executed_at(envelope_id) - committed)
    return through_queue, inline


@contextmanager
def server_database(server_url: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server, dropped afterwards."""
    name = f"counterpart_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def measure(work: Path, database_url: str | None) -> Figures:
    """Every measurement on one queue storage: SQLite files, or the PostgreSQL database."""
    from workflow.db import open_database

    data_dir = work / "data"
    database = open_database(data_dir, database_url)
    _create_runs_table(database)
    queue_url = jobs.queue_url_for({"DATA_DIR": data_dir, "DATABASE_URL": database_url})
    jobs.configure(queue_url)
    jobs.set_runtime(jobs.Runtime(database))
    worker = Worker(data_dir, database_url)
    try:
        batch, single, inline = measure_trivial(database, worker)
        queued, assembled = measure_executed(database, data_dir, queue_url,
                                             f"sqlite:///{work / 'scratch-queue.db'}", worker)
    finally:
        worker.stop()
        jobs.use_immediate()
        database.dispose()
    return Figures(batch, single, inline, queued, assembled)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def ratio(through_queue: list[float], inline: list[float]) -> str:
    return f"{statistics.median(through_queue) / statistics.median(inline):.2f}x"


def table(results: dict[str, Figures]) -> list[tuple[str, ...]]:
    """The rows to print: a column per queue storage."""
    names = list(results)
    rows: list[tuple[str, ...]] = [("measure", *names)]

    def row(label: str, cell: Callable[[Figures], str]) -> None:
        rows.append((label, *(cell(results[n]) for n in names)))

    row(f"trivial job, {BATCH} enqueued at once: jobs/s (1 worker, 2 threads)",
        lambda f: f"{f.batch_jobs_per_s:.0f}/s")
    row(f"trivial job, one after 0.5 s quiet: enqueue to done (median of {SINGLE})",
        lambda f: ms(f.single_s))
    row("the same job run inline, call_local (baseline)", lambda f: ms(f.inline_s))
    row("  queue / inline", lambda f: f"{f.single_s / f.inline_s:.0f}x")
    row(f"last signature to executed PDF through the queue (median / p95 of {LETTERS})",
        lambda f: f"{ms(statistics.median(f.executed_queue))} / {ms(p95(f.executed_queue))}")
    row(f"the same assembly run inline (baseline; median / p95 of {LETTERS})",
        lambda f: f"{ms(statistics.median(f.executed_inline))} / {ms(p95(f.executed_inline))}")
    row("  queue / inline (median)", lambda f: ratio(f.executed_queue, f.executed_inline))
    return rows


def main() -> int:
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="counterpart-bench-jobs-") as tmp:
        (Path(tmp) / "sqlite").mkdir()
        results["embedded (SQLite queue.db)"] = measure(Path(tmp) / "sqlite", None)
        server_url = os.environ.get(SERVER_ENV)
        if server_url:
            (Path(tmp) / "postgresql").mkdir()
            with server_database(server_url) as database_url:
                results["PostgreSQL"] = measure(Path(tmp) / "postgresql", database_url)
    rows = table(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for index, cells in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    if "PostgreSQL" not in results:
        print(f"\nPostgreSQL not measured: no server ({SERVER_ENV} is unset); run "
              "scripts/with-postgres .venv/bin/python bench/bench_jobs.py")
    else:
        sqlite, postgres = results["embedded (SQLite queue.db)"], results["PostgreSQL"]
        print(f"\nPostgreSQL / SQLite, trivial jobs per second: "
              f"{postgres.batch_jobs_per_s / sqlite.batch_jobs_per_s:.2f}x")
    return 0


if __name__ == "__main__":
    # Run as the module the worker imports, so the trivial job has the name it knows.
    import bench_jobs

    sys.exit(bench_jobs.main())
