"""A job only the scale proof enqueues: the reminder sweep run by several workers at once.

The periodic :func:`workflow.notices.sweep_notices` claims its time slot first, so of the copies
the workers' schedulers enqueue only one does the work. This job does the same work without the
slot claim, after waiting until the other workers' copies have started too, so that the
reminders' own guard (a conditional UPDATE per counterpart) is what keeps each reminder single.

A ``counterpart worker`` started by a test imports this module through
``COUNTERPART_EXTRA_TASK_MODULES=scale_jobs`` (with ``tests/`` on its ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from workflow import jobs, notices

RUNS_TABLE = "test_sweep_runs"


def create_runs_table(database) -> None:
    """Create the table the sweeps write to (id, stage, pid, made)."""
    serial = "INTEGER" if database.is_sqlite else "SERIAL"
    with database.transaction() as session:
        session.execute(text(
            f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (id {serial} PRIMARY KEY, "
            "stage VARCHAR(20) NOT NULL, pid INTEGER NOT NULL, made INTEGER NOT NULL)"))


def runs(database) -> list[tuple[str, int, int]]:
    """Every (stage, pid, notices made) the sweeps wrote, in order."""
    with database.transaction() as session:
        return [tuple(row) for row in session.execute(text(
            f"SELECT stage, pid, made FROM {RUNS_TABLE} ORDER BY id"))]


def _write(stage: str, made: int = 0) -> None:
    with jobs.runtime().db.transaction() as session:
        session.execute(text(f"INSERT INTO {RUNS_TABLE} (stage, pid, made) "
                             "VALUES (:stage, :pid, :made)"),
                        {"stage": stage, "pid": os.getpid(), "made": made})


@jobs.job(retries=0)
def sweep_together(workers: int, wait_seconds: float) -> None:
    """Record this start; wait until ``workers`` processes have started a copy (at most
    ``wait_seconds``); then queue the due reminders and expiry warnings as the periodic sweep
    does, and record how many notices this copy made."""
    _write("started")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if len({pid for stage, pid, _ in runs(jobs.runtime().db) if stage == "started"}) \
                >= workers:
            break
        time.sleep(0.05)
    db = jobs.runtime().db
    made = notices.queue_due_reminders(db) + notices.queue_expiry_warnings(db)
    _write("swept", len(made))
