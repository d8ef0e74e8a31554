"""Background jobs: a Huey queue, durable in the app's own storage, run by ``counterpart worker``.

Huey gives the queue, retries with exponential backoff, periodic tasks, a threaded consumer and
an immediate mode for tests. Counterpart adds three things on top of it, all in this module:

* **Storage from the app's settings** (:func:`queue_url_for`, :func:`configure`): the embedded
  default is Huey's ``SqliteStorage`` in ``queue.db`` beside the app's database (a file of its
  own, so queue writes never wait for the app database's write lock); a PostgreSQL database
  holds the queue in its own ``queue_*`` tables (Huey's ``PostgresStorage``: ``FOR UPDATE SKIP
  LOCKED`` and LISTEN/NOTIFY); ``COUNTERPART_QUEUE_URL`` may name Redis, a SQLite file, or
  ``immediate`` (jobs run in the process that enqueues them, right after its commit).
* **Takeover of a dead worker's jobs.** Huey deletes a task from the queue when a worker takes
  it, so a worker killed mid-job would lose it. Each worker therefore writes the serialized task
  into an *in-flight ledger* (a namespace of the queue storage's key-value table) before running
  it, with its worker id, and removes it when the job ends (success, or a failure Huey will
  retry or give up). Each worker process heartbeats every few seconds; every worker also looks,
  as often, for ledger entries whose worker has not heartbeated for ``dead_after`` seconds and
  puts those tasks back on the queue. Taking an entry is a delete-and-return of that one key
  (one SQL statement or transaction), so two workers never both re-enqueue it. Two short
  windows remain uncovered: a worker killed between Huey's dequeue and the ledger write, or
  between a failed attempt's ledger removal and Huey scheduling its retry, loses that job
  (the outbox's catch-up and the domain's own resume of pending work cover their jobs).
* **Periodic jobs that fire once** across every worker: each worker's scheduler enqueues them,
  and the job's body first claims its time slot (``put_if_empty`` of ``periodic:NAME:SLOT``);
  the copies that lose the claim return at once.

And :func:`enqueue_after_commit`, which enqueues only when (and if) the enqueueing transaction
commits.

Jobs must be idempotent: a job may run twice (a retry after a failure whose effect was half
done, or a takeover after its worker stopped answering). Guard the effect with a conditional
UPDATE in the transaction that records it.
"""

from __future__ import annotations

import calendar
import contextlib
import contextvars
import datetime as dt
import importlib
import logging
import os
import pickle
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from huey import Huey
from huey.api import PeriodicTask, Task, TaskWrapper
from huey.constants import EmptyData
from huey.signals import SIGNAL_ERROR
from huey.storage import BaseStorage, MemoryStorage, PostgresStorage, RedisStorage, SqliteStorage
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction

from .errors import CounterpartError
from .files import make_private_file

if TYPE_CHECKING:
    from .convert import PdfConverter
    from .db import Database
    from .mail import SmtpSettings
    from .seal import Sealer

__all__ = [
    "job", "periodic", "enqueue_after_commit", "preserved", "runtime", "Runtime", "set_runtime",
    "configure", "use_immediate", "is_immediate", "queue_url_for", "describe_queue",
    "discover_tasks", "TASK_MODULES", "EXTRA_TASK_MODULES_ENV", "QUEUE_FILE", "JobsError",
    "claim_periodic_slot", "periodic_clock", "run_due", "run_periodic", "run_in_process",
    "run_worker", "worker_running",
    "immediate", "WorkerOptions", "Ledger", "ledger",
    "recent_errors", "expire_signing_links", "huey",
]

log = logging.getLogger(__name__)

QUEUE_NAME = "counterpart"
QUEUE_FILE = "queue.db"
QUEUE_TABLE_PREFIX = "queue"
# The PostgreSQL advisory lock taken while the queue's tables are created (any fixed number
# no other lock of this database uses).
QUEUE_SCHEMA_LOCK = 0x636F_7470_7175_6575
EXTRA_TASK_MODULES_ENV = "COUNTERPART_EXTRA_TASK_MODULES"
# Modules that define jobs and outbox subscribers: a worker imports them all so that it knows
# every task it may dequeue. A module that adds jobs or subscribers adds itself here.
TASK_MODULES: list[str] = ["workflow.jobs", "workflow.outbox", "workflow.notices",
                           "workflow.letters", "workflow.envelopes", "workflow.webhooks"]

# The in-flight ledger, the workers' heartbeats and the periodic slots live in the queue
# storage under names of their own (Huey's ``queue`` column, or Redis key), apart from tasks.
INFLIGHT_NAMESPACE = f"{QUEUE_NAME}.inflight"
WORKERS_NAMESPACE = f"{QUEUE_NAME}.workers"
CLAIMS_NAMESPACE = f"{QUEUE_NAME}.claims"
PERIODIC_SLOTS_KEPT = 10  # slot claims older than this many periods are purged

F = TypeVar("F", bound=Callable[..., Any])
_PERIODS: dict[str, int] = {}  # periodic job name -> its period in minutes


class JobsError(CounterpartError):
    """The job queue is misconfigured or unavailable."""


# --- the runtime: what a job needs from the app -------------------------------------------------

class Runtime:
    """What jobs use: the database, LibreOffice, the seal, mail settings, the public address.

    ``converter`` and ``sealer`` may be given as zero-argument callables, called on first use
    (starting LibreOffice or loading the seal only when a job needs it). ``smtp`` is None when
    no mail server is configured. ``base_url`` is the app's public address without a trailing
    slash (e.g. ``https://sign.example.com``), for links in emails and webhooks. ``settings``
    holds the app's configuration values.
    """

    def __init__(self, db: Database, *,
                 converter: PdfConverter | Callable[[], PdfConverter] | None = None,
                 sealer: Sealer | Callable[[], Sealer] | None = None,
                 smtp: SmtpSettings | None = None, base_url: str = "http://127.0.0.1:5000",
                 settings: Mapping[str, Any] | None = None) -> None:
        self.db = db
        self._converter = converter
        self._sealer = sealer
        self.smtp = smtp
        self.base_url = base_url.rstrip("/")
        self.settings: Mapping[str, Any] = dict(settings or {})
        self._lock = threading.Lock()

    @property
    def converter(self) -> PdfConverter:
        """The LibreOffice converter (the process-wide one when none was given)."""
        with self._lock:
            if self._converter is None:
                from .convert import default_converter

                self._converter = default_converter()
            elif callable(self._converter) and not hasattr(self._converter, "convert_bytes"):
                self._converter = self._converter()
            return self._converter  # type: ignore[return-value]

    @property
    def sealer(self) -> Sealer:
        """The seal of executed letters; raises :class:`JobsError` when none was given."""
        with self._lock:
            if self._sealer is None:
                raise JobsError("This job runtime has no seal: build it with sealer=... "
                                "(the worker builds it from the app's settings).")
            if callable(self._sealer):
                self._sealer = self._sealer()
            return self._sealer

    def __repr__(self) -> str:
        return f"Runtime(db={self.db.url!r}, base_url={self.base_url!r})"


_default_runtime: Runtime | None = None
# id(Database) -> its runtime (several apps in one process); an app's runtime lives with it.
_runtimes: weakref.WeakValueDictionary[int, Runtime] = weakref.WeakValueDictionary()
_current: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "counterpart_job_runtime", default=None)


def set_runtime(rt: Runtime) -> Runtime:
    """Make ``rt`` the runtime of jobs run in this process (and of jobs its database enqueues
    in immediate mode); return it."""
    global _default_runtime
    _default_runtime = rt
    _runtimes[id(rt.db)] = rt
    return rt


def runtime() -> Runtime:
    """Return the runtime of the job being run (raises :class:`JobsError` if none is set)."""
    rt = _current.get() or _default_runtime
    if rt is None:
        raise JobsError("No job runtime is set: the worker sets it from the app's settings, "
                        "and a test calls jobs.set_runtime(jobs.Runtime(database, ...)).")
    return rt


def _runtime_for(database: Database | None) -> Runtime | None:
    """The runtime for a job enqueued from ``database`` in immediate mode."""
    if database is None:
        return None
    rt = _runtimes.get(id(database))
    if rt is not None and rt.db is database:
        return rt
    if _default_runtime is not None and _default_runtime.db.url == database.url:
        return _default_runtime
    # A database no app registered (a domain test, a command): jobs get it with defaults.
    return Runtime(database)


# --- the queue ----------------------------------------------------------------------------------

class _Queue(Huey):
    """Huey with its storage chosen after import, from the app's settings."""

    def use(self, storage: BaseStorage, *, immediate: bool) -> None:
        """Switch to ``storage`` (immediate mode runs tasks when enqueued)."""
        old: BaseStorage = self.storage  # type: ignore[has-type]
        self._immediate = immediate
        self.storage = storage
        if old is not storage:
            with contextlib.suppress(Exception):
                old.close()


# Results are not kept: jobs record what they did in the app's database.
huey = _Queue(QUEUE_NAME, results=False, immediate=True, utc=True)
_queue_url = "immediate"
_make_storage: Callable[[str], BaseStorage] = MemoryStorage
_recent_errors: deque[tuple[str, BaseException]] = deque(maxlen=50)


@huey.signal(SIGNAL_ERROR)
def _remember_error(signal: str, task: Task, exc: BaseException | None = None) -> None:
    if exc is not None:
        _recent_errors.append((_task_name(task), exc))


def recent_errors() -> list[tuple[str, BaseException]]:
    """The last errors raised by jobs in this process, oldest first: ``(job name, error)``.

    A failing job is retried by Huey, not raised to whoever enqueued it; tests read this."""
    return list(_recent_errors)


def _task_name(task: Task) -> str:
    return f"{type(task).__module__}.{type(task).__name__}"


def queue_url_for(settings: Mapping[str, Any]) -> str:
    """Choose the queue's storage from the app's settings; return it as a URL.

    ``QUEUE_URL`` wins (``immediate``, ``redis://...``, ``sqlite:///path``,
    ``postgresql://...``); otherwise a PostgreSQL ``DATABASE_URL`` holds the queue too, and the
    embedded default is ``DATA_DIR/queue.db``.
    """
    explicit = (settings.get("QUEUE_URL") or "").strip()
    if explicit:
        return explicit
    database_url = settings.get("DATABASE_URL") or ""
    if database_url and make_url(database_url).get_backend_name() == "postgresql":
        return database_url
    data_dir = Path(settings["DATA_DIR"]).resolve()
    return f"sqlite:///{data_dir / QUEUE_FILE}"


def describe_queue(url: str | None = None) -> str:
    """Name the queue's storage for a log line, without any password."""
    url = _queue_url if url is None else url
    if url == "immediate":
        return "immediate (jobs run in the process that enqueues them)"
    with contextlib.suppress(Exception):
        return make_url(url).render_as_string(hide_password=True)
    return url.split("@")[-1]


def _storage_factory(url: str) -> Callable[[str], BaseStorage]:
    """Return ``make(name)`` building the storage at ``url`` under a queue name."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return lambda name: RedisStorage(name, url=url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise JobsError(f"COUNTERPART_QUEUE_URL {url!r}: the queue needs a SQLite file.")
        filename = Path(str(parsed.database)).resolve()
        filename.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private_file(filename)

        def sqlite(name: str) -> BaseStorage:
            return SqliteStorage(name, filename=str(filename), timeout=30,
                                 create_tables=name == QUEUE_NAME)
        return sqlite
    if backend == "postgresql":
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)

        def postgres(name: str) -> BaseStorage:
            if name != QUEUE_NAME:
                return PostgresStorage(name, dsn=dsn, table_prefix=QUEUE_TABLE_PREFIX,
                                       create_tables=False)
            # huey's CREATE TABLE IF NOT EXISTS is not safe when two processes run it at once
            # on a new database (PostgreSQL then refuses the second row type of the same name):
            # the web processes and the worker starting together take turns under a lock.
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as lock:
                lock.execute("SELECT pg_advisory_lock(%s)", (QUEUE_SCHEMA_LOCK,))
                try:
                    return PostgresStorage(name, dsn=dsn, table_prefix=QUEUE_TABLE_PREFIX,
                                           create_tables=True)
                finally:
                    lock.execute("SELECT pg_advisory_unlock(%s)", (QUEUE_SCHEMA_LOCK,))
        return postgres
    raise JobsError(f"COUNTERPART_QUEUE_URL {describe_queue(url)!r} is not a queue Counterpart "
                    "can use: give immediate, redis://..., sqlite:///FILE or postgresql://...")


def configure(url: str) -> None:
    """Point this process's queue at ``url`` (see :func:`queue_url_for`); ``immediate`` runs
    jobs where they are enqueued. Creates the queue's tables or file if they are missing."""
    global _queue_url, _make_storage, _ledger
    if url == "immediate":
        use_immediate()
        return
    make = _storage_factory(url)
    huey.use(make(QUEUE_NAME), immediate=False)
    _close_ledger()
    _queue_url, _make_storage, _ledger = url, make, None


def use_immediate(rt: Runtime | None = None) -> None:
    """Run jobs in the process that enqueues them, right after the enqueueing commit (tests,
    development); with ``rt``, also make it the runtime."""
    global _queue_url, _make_storage, _ledger
    huey.use(MemoryStorage(QUEUE_NAME), immediate=True)
    _close_ledger()
    _queue_url, _make_storage, _ledger = "immediate", MemoryStorage, None
    if rt is not None:
        set_runtime(rt)


def _close_ledger() -> None:
    if _ledger is not None:
        _ledger.close()


def is_immediate() -> bool:
    """Say whether jobs run where they are enqueued (no worker needed)."""
    return bool(huey.immediate)


def discover_tasks(extra: list[str] | None = None) -> list[str]:
    """Import every module that defines jobs or subscribers (``TASK_MODULES``, then those named
    in ``COUNTERPART_EXTRA_TASK_MODULES``, comma-separated, then ``extra``); return them."""
    names = list(TASK_MODULES)
    names += [n.strip() for n in os.environ.get(EXTRA_TASK_MODULES_ENV, "").split(",")
              if n.strip()]
    names += extra or []
    for name in names:
        importlib.import_module(name)
    return names


# --- declaring jobs -----------------------------------------------------------------------------

def job(retries: int = 3, retry_delay: float = 10, retry_backoff: float = 2.0, *,
        priority: int | None = None, timeout: float | None = None,
        context: bool = False) -> Callable[[F], TaskWrapper]:
    """Declare a background job (a Huey task named ``module.function``).

    A failure is retried ``retries`` times, the first after ``retry_delay`` seconds, each later
    one ``retry_backoff`` times longer. Calling the job enqueues it (immediate mode: runs it);
    ``.call_local(...)`` runs it here and now. With ``context``, the job is also given
    ``task=``, the Huey task being run (None under ``call_local``): ``task.retries`` is how
    many retries are left, so a job can tell its last attempt (0) and record the failure.
    """
    def decorate(func: F) -> TaskWrapper:
        return huey.task(retries=retries, retry_delay=retry_delay, retry_backoff=retry_backoff,
                         priority=priority, timeout=timeout, context=context)(func)
    return decorate


def _epoch_minutes(moment: dt.datetime) -> int:
    # Huey hands the scheduler's time as a naive UTC datetime.
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return calendar.timegm(moment.timetuple()) // 60


def periodic(minutes: int = 1, *, name: str | None = None) -> Callable[[F], TaskWrapper]:
    """Declare a job run every ``minutes`` minutes, once per period across all workers.

    Every worker's scheduler enqueues it at the period's start; the run that claims the
    period's slot first does the work, the others return at once. ``.call_local()`` runs it
    here, through the same claim.
    """
    if minutes < 1:
        raise ValueError("periodic(minutes=...) must be at least 1")

    def decorate(func: F) -> TaskWrapper:
        job_name = name or f"{func.__module__}.{func.__name__}"
        period = minutes * 60
        _PERIODS[job_name] = minutes

        def claimed(*args: Any, **kwargs: Any) -> Any:
            slot = int(periodic_clock() // period)
            if not claim_periodic_slot(job_name, slot):
                log.debug("%s: slot %d already claimed by another worker", job_name, slot)
                return None
            return func(*args, **kwargs)

        claimed.__name__ = func.__name__
        claimed.__qualname__ = func.__qualname__
        claimed.__module__ = func.__module__
        claimed.__doc__ = func.__doc__
        return huey.periodic_task(lambda moment: _epoch_minutes(moment) % minutes == 0)(claimed)
    return decorate


def periodic_clock() -> float:
    """The time (UNIX seconds) that places a periodic run in its period; tests fix it."""
    return time.time()


def claim_periodic_slot(name: str, slot: int) -> bool:
    """Claim period ``slot`` of the periodic job ``name``; False if another run claimed it."""
    return bool(_claims().put_if_empty(f"periodic:{name}:{slot}",
                                       huey.serializer.serialize(time.time())))


def _claims() -> BaseStorage:
    return ledger().claims if not huey.immediate else huey.storage


# --- enqueueing after commit --------------------------------------------------------------------

_PENDING = "counterpart.jobs.after_commit"
_DATABASE = "counterpart.database"  # set on every session by workflow.db.Database


def enqueue_after_commit(session: Session, task: TaskWrapper, *args: Any,
                         **kwargs: Any) -> None:
    """Enqueue ``task(*args, **kwargs)`` when ``session``'s transaction commits; a rollback
    drops it. In immediate mode the job runs then, outside the committed transaction."""
    if not isinstance(task, TaskWrapper):
        raise TypeError(f"{task!r} is not a job: declare it with @jobs.job")
    if not session.in_transaction():
        session.begin()  # so that a rollback before any SQL still drops the job
    # Each job remembers the innermost SAVEPOINT it was enqueued in: rolling that back drops
    # it, releasing it hands the job to the enclosing transaction.
    session.info.setdefault(_PENDING, []).append(
        [session.get_nested_transaction(), task, args, kwargs])


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT was released; the enclosing transaction has still to commit
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    rt = _runtime_for(session.info.get(_DATABASE)) if huey.immediate else None
    for _savepoint, task, args, kwargs in pending:
        token = _current.set(rt) if rt is not None else None
        try:
            task(*args, **kwargs)
        except Exception:
            # The transaction is committed; a lost enqueue is caught up by the periodic
            # catch-ups (the outbox's, the pending documents'), so it must not fail the caller.
            log.exception("could not enqueue %s%r after commit", task.name or task, args)
        finally:
            if token is not None:
                _current.reset(token)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        # Only a SAVEPOINT was rolled back (it is still the innermost one while this runs):
        # the jobs enqueued inside it go with it; the enclosing transaction goes on.
        savepoint = session.get_nested_transaction()
        pending = session.info.get(_PENDING)
        if pending:
            pending[:] = [entry for entry in pending if entry[0] is not savepoint]
        return
    session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if not transaction.nested:
        return
    # A SAVEPOINT ended (released, or rolled back after its jobs were dropped): what is left
    # of its jobs now belongs to the transaction around it.
    for entry in session.info.get(_PENDING) or ():
        if entry[0] is transaction:
            entry[0] = transaction.parent if transaction.parent is not None and \
                transaction.parent.nested else None


def run_due(at: dt.datetime | None = None) -> int:
    """In immediate mode, run the retries scheduled for ``at`` or earlier (default: now, in
    UTC); return how many ran. Tests use it to step through retries."""
    if not huey.immediate:
        raise JobsError("run_due() is for immediate mode; workers run due retries themselves.")
    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    tasks = huey.read_schedule(moment)
    for task in tasks:
        task.eta = None
        huey.execute(task)
    return len(tasks)


def run_periodic(at: dt.datetime | None = None) -> int:
    """In immediate mode, run the periodic jobs due in ``at``'s minute (default: now); return
    how many were due. Each still claims its slot, so a second call in the period does
    nothing."""
    if not huey.immediate:
        raise JobsError("run_periodic() is for immediate mode; workers' schedulers do this.")
    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    tasks = huey.read_periodic(moment)
    for task in tasks:
        huey.execute(task)
    return len(tasks)


def run_in_process(stop: threading.Event, *, interval: float = 1.0) -> threading.Thread:
    """In immediate mode, start a thread that runs due retries every ``interval`` seconds and
    the periodic jobs at each minute, until ``stop`` is set (``counterpart serve`` with
    ``COUNTERPART_QUEUE_URL=immediate``: there is no worker)."""
    def loop() -> None:
        last_minute = None
        while not stop.wait(interval):
            try:
                run_due()
                minute = _epoch_minutes(dt.datetime.now(dt.UTC))
                if minute != last_minute:
                    last_minute = minute
                    run_periodic()
            except Exception:
                log.exception("in-process jobs failed")

    thread = threading.Thread(target=loop, name="counterpart-jobs", daemon=True)
    thread.start()
    return thread


# --- the in-flight ledger and the worker ---------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    worker: str
    started: float
    data: bytes
    priority: float | None


class Ledger:
    """The in-flight ledger and the workers' heartbeats, in the queue's own storage."""

    def __init__(self, make: Callable[[str], BaseStorage]) -> None:
        self.inflight = make(INFLIGHT_NAMESPACE)
        self.workers = make(WORKERS_NAMESPACE)
        self.claims = make(CLAIMS_NAMESPACE)

    def close(self) -> None:
        """Close the ledger's connections to the queue storage."""
        for storage in (self.inflight, self.workers, self.claims):
            with contextlib.suppress(Exception):
                storage.close()

    def record(self, worker: str, task: Task) -> None:
        """Write a task about to run into the ledger, under its id."""
        entry = _Entry(worker, time.time(), huey.serialize_task(task), task.priority)
        self.inflight.put_data(task.id, pickle.dumps(entry))

    def finish(self, task: Task) -> None:
        """Remove a task that ended (done, or failed: Huey retries or gives up) from it."""
        self.inflight.delete_data(task.id)

    def entries(self) -> dict[str, _Entry]:
        """Every task in flight, by task id."""
        return {str(key): pickle.loads(value)
                for key, value in self.inflight.result_items().items()}

    def heartbeat(self, worker: str) -> None:
        """Record that ``worker`` is alive now."""
        self.workers.put_data(worker, pickle.dumps(time.time()))

    def forget(self, worker: str) -> None:
        """Remove a worker's heartbeat (it stopped cleanly)."""
        self.workers.delete_data(worker)

    def heartbeats(self) -> dict[str, float]:
        """When each worker last heartbeated (UNIX time)."""
        return {str(key): pickle.loads(value)
                for key, value in self.workers.result_items().items()}

    def take_over(self, dead_after: float, *, now: float | None = None) -> list[str]:
        """Put back on the queue the tasks of workers silent for ``dead_after`` seconds;
        return their ids. Each entry is taken by deleting it and reading it in one step, so
        only one of several workers doing this at once re-enqueues it."""
        now = time.time() if now is None else now
        beats = self.heartbeats()
        taken = []
        for task_id, entry in self.entries().items():
            last = beats.get(entry.worker)
            if last is not None and now - last < dead_after:
                continue
            if not self._requeue(task_id, entry.worker):
                continue
            log.warning("worker %s stopped answering; its job %s is queued again",
                        entry.worker, task_id)
            taken.append(task_id)
        self._purge(beats, now, dead_after)
        return taken

    def hand_back(self, worker: str) -> list[str]:
        """Put a stopping worker's unfinished jobs back on the queue; return their ids."""
        return [task_id for task_id, entry in self.entries().items()
                if entry.worker == worker and self._requeue(task_id, entry.worker)]

    def _requeue(self, task_id: str, worker: str) -> bool:
        raw = self.inflight.pop_data(task_id)
        if raw is EmptyData:
            return False  # finished meanwhile, or another worker took it
        popped: _Entry = pickle.loads(raw)
        if popped.worker != worker:  # rewritten by a live worker: leave it
            self.inflight.put_data(task_id, raw)
            return False
        huey.storage.enqueue(popped.data, popped.priority)
        return True

    def _purge(self, beats: dict[str, float], now: float, dead_after: float) -> None:
        busy = {e.worker for e in self.entries().values()}
        for worker, last in beats.items():
            if now - last > 10 * dead_after and worker not in busy:
                self.workers.delete_data(worker)
        current_minute = int(now // 60)
        for key in self.claims.result_items():
            name, _, slot = str(key).rpartition(":")
            if not name.startswith("periodic:") or not slot.isdigit():
                continue
            job_name = name.removeprefix("periodic:")
            wrapper_minutes = _PERIODS.get(job_name, 1)
            if (current_minute // wrapper_minutes) - int(slot) > PERIODIC_SLOTS_KEPT:
                self.claims.delete_data(key)


_ledger: Ledger | None = None


def ledger() -> Ledger:
    """The queue storage's in-flight ledger (not in immediate mode)."""
    global _ledger
    if huey.immediate:
        raise JobsError("In immediate mode there is no in-flight ledger: jobs run at once.")
    if _ledger is None:
        _ledger = Ledger(_make_storage)
    return _ledger


def worker_running(dead_after: float, *, now: float | None = None) -> bool:
    """Say whether some worker heartbeated in the last ``dead_after`` seconds (UNIX time
    ``now``, default the present); always True in immediate mode, where jobs need no worker.

    Only reads the queue storage (a page may ask); raises :class:`JobsError` if it cannot.
    """
    if huey.immediate:
        return True
    now = time.time() if now is None else now
    try:
        beats = ledger().heartbeats()
    except Exception as exc:
        raise JobsError(f"The workers' heartbeats in {describe_queue()} could not be read: "
                        f"{exc}") from exc
    return any(now - last < dead_after for last in beats.values())


@dataclass
class WorkerOptions:
    """How a worker process runs: threads, heartbeat and takeover timing, queue polling."""

    workers: int = 2
    heartbeat_seconds: float = 5.0
    dead_after_seconds: float = 60.0
    poll_seconds: float = 0.1
    max_poll_seconds: float = 2.0
    periodic: bool = True
    shutdown_timeout_seconds: float = 30.0
    worker_id: str = field(default_factory=lambda: (
        f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"))


def run_worker(options: WorkerOptions, *, ready: Callable[[], None] | None = None) -> None:
    """Run a Huey consumer in this process until SIGINT (finish running jobs) or SIGTERM.

    The runtime must be set (:func:`set_runtime`) and the queue configured (not immediate).
    Jobs are recorded in the in-flight ledger while they run; a heartbeat thread keeps this
    worker's heartbeat fresh and takes over the jobs of workers that stopped answering.
    """
    if huey.immediate:
        raise JobsError("The queue is in immediate mode (COUNTERPART_QUEUE_URL=immediate): "
                        "jobs run in the web process and there is nothing for a worker to do.")
    runtime()  # fail now, not at the first job
    discover_tasks()
    book = ledger()
    worker_id = options.worker_id
    book.heartbeat(worker_id)

    def record(task: Task) -> None:
        if not isinstance(task, PeriodicTask):
            book.record(worker_id, task)

    def finish(task: Task, _value: Any, _exc: BaseException | None) -> None:
        if not isinstance(task, PeriodicTask):
            book.finish(task)

    huey.pre_execute("counterpart.ledger")(record)
    huey.post_execute("counterpart.ledger")(finish)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(options.heartbeat_seconds):
            try:
                book.heartbeat(worker_id)
                book.take_over(options.dead_after_seconds)
            except Exception:
                log.exception("heartbeat of worker %s failed", worker_id)

    beater = threading.Thread(target=beat, name="counterpart-heartbeat", daemon=True)
    beater.start()
    consumer = huey.create_consumer(
        workers=options.workers, worker_type="thread", periodic=options.periodic,
        initial_delay=options.poll_seconds, backoff=1.5, max_delay=options.max_poll_seconds,
        scheduler_interval=1, check_worker_health=True, health_check_interval=5,
        shutdown_timeout=options.shutdown_timeout_seconds)
    log.info("worker %s: %d threads on %s", worker_id, options.workers, describe_queue())
    try:
        book.take_over(options.dead_after_seconds)
        if ready is not None:
            ready()
        consumer.run()
    finally:
        stop.set()
        huey.unregister_pre_execute("counterpart.ledger")
        huey.unregister_post_execute("counterpart.ledger")
        # Jobs still running when this process stops (SIGTERM, or SIGINT past the shutdown
        # timeout) die with it: hand them back to the queue now rather than after dead_after.
        handed = book.hand_back(worker_id)
        if handed:
            log.warning("worker %s stopped during %d jobs; they are queued again",
                        worker_id, len(handed))
        book.forget(worker_id)


# --- jobs of the domain that belong to no other module -------------------------------------------

@periodic(minutes=1)
def expire_signing_links() -> int:
    """Mark the links of envelopes past their expiry as expired (and record it); return how
    many counterparts expired. Pages show a link past its date as expired even before."""
    from .envelopes import expire_links

    with runtime().db.transaction() as session:
        return expire_links(session)



@contextlib.contextmanager
def immediate(rt: Runtime) -> Iterator[Runtime]:
    """Run jobs in immediate mode with ``rt`` inside the block, restoring the queue after."""
    global _default_runtime
    saved = (huey.storage, huey.immediate, _queue_url, _make_storage, _ledger, _default_runtime)
    use_immediate(rt)
    try:
        yield rt
    finally:
        _restore(saved)


@contextlib.contextmanager
def preserved() -> Iterator[None]:
    """Put the queue back as it was before the block (its storage, mode and default runtime),
    whatever the block configured: what each test is wrapped in, so that an app made by one
    test does not keep running the jobs of the next."""
    saved = (huey.storage, huey.immediate, _queue_url, _make_storage, _ledger, _default_runtime)
    try:
        yield
    finally:
        _restore(saved)


def _restore(saved: tuple[Any, ...]) -> None:
    global _queue_url, _make_storage, _ledger, _default_runtime
    if _ledger is not None and _ledger is not saved[4]:
        _ledger.close()
    storage, was_immediate, _queue_url, _make_storage, _ledger, _default_runtime = saved
    huey.use(storage, immediate=was_immediate)
