"""Jobs that only the tests enqueue: each writes what it did into a table of its own.

A ``counterpart worker`` started by a test imports this module through
``COUNTERPART_EXTRA_TASK_MODULES=queue_jobs`` (with ``tests/`` on its ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from workflow import jobs

RUNS_TABLE = "test_job_runs"


def create_runs_table(database) -> None:
    """Create the table the test jobs write to (id, key, stage, pid)."""
    with database.transaction() as session:
        session.execute(text(
            f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (id {_serial(database)} PRIMARY KEY, "
            "job_key VARCHAR(100) NOT NULL, stage VARCHAR(20) NOT NULL, pid INTEGER NOT NULL)"))


def _serial(database) -> str:
    return "INTEGER" if database.is_sqlite else "SERIAL"


def runs(database) -> list[tuple[str, str, int]]:
    """Every (key, stage, pid) the test jobs wrote, in order."""
    with database.transaction() as session:
        return [tuple(row) for row in session.execute(text(
            f"SELECT job_key, stage, pid FROM {RUNS_TABLE} ORDER BY id"))]


def _write(key: str, stage: str) -> None:
    with jobs.runtime().db.transaction() as session:
        session.execute(text(f"INSERT INTO {RUNS_TABLE} (job_key, stage, pid) "
                             "VALUES (:key, :stage, :pid)"),
                        {"key": key, "stage": stage, "pid": os.getpid()})


@jobs.job(retries=0)
def write_row(key: str) -> None:
    """Record one run of the job ``key``."""
    _write(key, "done")


@jobs.job(retries=0)
def slow_write(key: str, seconds: float) -> None:
    """Record the start, wait ``seconds``, then record the end."""
    _write(key, "started")
    time.sleep(seconds)
    _write(key, "done")
