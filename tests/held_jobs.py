"""A job queue that holds what is enqueued until the test runs it.

This is how a server with workers looks between a request's commit and a worker taking the job:
the request has answered, the job waits in the queue. :func:`held_jobs` switches the process's
queue (:mod:`workflow.jobs`) to Huey's in-memory storage, not in immediate mode, and gives it
back as it was afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from huey.storage import MemoryStorage

from workflow import jobs


class HeldJobs:
    """The jobs waiting in the held queue, and running them as a worker would."""

    def names(self) -> list[str]:
        """The name and arguments of each waiting job, oldest first: ``"module.func(args)"``."""
        return [f"{type(task).__module__}.{type(task).__name__}{tuple(task.args)!r}"
                for task in self._tasks()]

    def _tasks(self) -> list:
        storage = jobs.huey.storage
        return [jobs.huey.deserialize_task(data) for data in storage.enqueued_items()]

    def run(self) -> int:
        """Run every waiting job (and any job they enqueue) as a worker would; return how many
        ran. A failed job's retry is scheduled, not run (see :meth:`run_retries`)."""
        ran = 0
        while (task := jobs.huey.dequeue()) is not None:
            jobs.huey.execute(task)
            ran += 1
        return ran

    def run_retries(self) -> int:
        """Run the scheduled retries as if their time had come, until none is left; return
        how many ran."""
        ran = 0
        while True:
            later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=1)
            due = jobs.huey.read_schedule(later)
            if not due:
                return ran
            for task in due:
                task.eta = None
                jobs.huey.execute(task)
                ran += 1
            ran += self.run()


@contextmanager
def held_jobs(runtime: jobs.Runtime | None = None) -> Iterator[HeldJobs]:
    """Hold enqueued jobs in memory until the test runs them; with ``runtime``, run them with
    it (else with the process's runtime, e.g. the app's)."""
    saved_storage, saved_immediate = jobs.huey.storage, jobs.huey.immediate
    if runtime is not None:
        jobs.set_runtime(runtime)
    jobs.huey.use(MemoryStorage(jobs.QUEUE_NAME), immediate=False)
    try:
        yield HeldJobs()
    finally:
        jobs.huey.use(saved_storage, immediate=saved_immediate)


def run_retries() -> int:
    """In immediate mode, run the scheduled retries as if their time had come, until none is
    left; return how many ran."""
    ran = 0
    while count := jobs.run_due(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)):
        ran += count
    return ran
