"""The database: engine set-up, sessions, transactions and migrations.

SQLite in a file of the data folder is the embedded default (WAL mode, a busy timeout and
``BEGIN IMMEDIATE`` transactions, so that concurrent writers queue instead of failing);
PostgreSQL works through the same models and migrations. Requests that only read use
:meth:`Database.read`: a deferred ``BEGIN`` that takes no write lock on SQLite (readers never
queue behind writers in WAL mode) and refuses every write on both databases. Inside
:func:`reading_only` (the web app enters it for every GET, HEAD and OPTIONS request),
:meth:`Database.transaction` opens such a read-only transaction too, so a write made while
answering a read fails loudly instead of silently taking the lock.

Connections are pooled (SQLite's too, so its PRAGMAs run once per connection); a pooled
connection is never used by a process other than the one that opened it (after a fork the
child opens its own).

The data folder is private to the user running Counterpart: created 0700 (an existing one is
tightened to it), and the SQLite database 0600 before SQLite first opens it, so that its
``-wal`` and ``-shm`` files, which SQLite creates with the database's own mode, are too.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from .activity import ActivityRecorder
from .errors import StorageFullError
from .files import PRIVATE_FOLDER_MODE, make_private_file, make_private_folder

__all__ = ["Database", "rowcount", "open_database", "database_url_for", "reading_only",
           "begin_reading_only", "end_reading_only", "is_reading_only", "DATA_DIR_ENV",
           "DATABASE_URL_ENV", "SQLITE_POOL_SIZE"]

DATA_DIR_ENV = "COUNTERPART_DATA_DIR"
DATABASE_URL_ENV = "COUNTERPART_DATABASE_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "counterpart_read_only"
# Connections kept open for reuse; more are opened when busy (and closed when given back).
SQLITE_POOL_SIZE = 8
_reading_only: ContextVar[bool] = ContextVar("counterpart_reading_only", default=False)
log = logging.getLogger(__name__)


@contextmanager
def reading_only() -> Iterator[None]:
    """Make every :meth:`Database.transaction` opened inside read-only (see
    :meth:`Database.read`): for work that must not write, such as answering a GET."""
    token = _reading_only.set(True)
    try:
        yield
    finally:
        _reading_only.reset(token)


def begin_reading_only() -> Token[bool]:
    """Enter :func:`reading_only` until :func:`end_reading_only` is given the returned token
    (for hooks that cannot wrap the work in a ``with``, such as a web request's)."""
    return _reading_only.set(True)


def end_reading_only(token: Token[bool]) -> None:
    """Leave what :func:`begin_reading_only` entered."""
    _reading_only.reset(token)


def is_reading_only() -> bool:
    """Say whether transactions are read-only here (inside :func:`reading_only`)."""
    return _reading_only.get()


def _guard_pool_across_forks(engine: Engine) -> None:
    """Never hand a connection opened by one process to another (after a fork, the child's
    pool may still hold the parent's connections): the child opens its own instead."""

    @event.listens_for(engine, "connect")
    def _remember_process(_dbapi_connection: Any, record: Any) -> None:
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _same_process(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            # Drop it without closing it: it belongs to the parent.
            record.dbapi_connection = proxy.dbapi_connection = None
            raise DisconnectionError("a pooled connection of another process was not reused")


def _is_full(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "disk is full" in text or "no space left" in text or \
        getattr(exc.orig, "sqlite_errorname", "") == "SQLITE_FULL" or \
        getattr(exc.orig, "pgcode", "") == "53100"  # PostgreSQL's disk_full


def rowcount(result: Any) -> int:
    """Return how many rows an UPDATE or DELETE changed."""
    return int(cast(CursorResult[Any], result).rowcount)


def database_url_for(data_dir: Path, url: str | None = None) -> str:
    """Return the configured database URL, or a SQLite file in the data folder."""
    return url or f"sqlite:///{Path(data_dir).resolve() / 'counterpart.db'}"


def _make_private_database(database_file: Path) -> None:
    """Make the database file 0600 before SQLite opens it: SQLite gives its -wal and -shm files
    the database's own mode. Files left readable by an older version are tightened too."""
    make_private_file(database_file)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = Path(f"{database_file}{suffix}")
        if companion.exists():
            make_private_file(companion)


def _configure_sqlite(engine: Engine, database_file: Path) -> None:
    made_private = threading.Event()

    @event.listens_for(engine, "do_connect")
    def _before_connect(*_args: Any) -> None:
        # On the first connection, not when the Database is made: making one creates nothing.
        if not made_private.is_set():
            _make_private_database(database_file)
            made_private.set()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            # A reader takes no lock until it reads, and then only a snapshot; query_only
            # turns a write, which could not upgrade the lock safely, into an error.
            connection.exec_driver_sql("PRAGMA query_only=ON")
            connection.exec_driver_sql("BEGIN")
            return
        # A deferred transaction that reads and then writes cannot wait for the lock; an
        # immediate one waits its turn under the busy timeout.
        connection.exec_driver_sql("PRAGMA query_only=OFF")
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine and its session factory, migrated to the newest schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                      "check_same_thread": False}
            if parsed.database in (None, "", ":memory:"):
                raise ValueError("Use a SQLite file, not an in-memory database.")
            database_file = Path(parsed.database)
            database_file.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
            # Threads share the pool (check_same_thread is off); overflow is unbounded so
            # that a thread holding one connection never waits for another.
            kwargs.update(poolclass=QueuePool, pool_size=SQLITE_POOL_SIZE, max_overflow=-1)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        _guard_pool_across_forks(self.engine)
        if self.is_sqlite:
            _configure_sqlite(self.engine, Path(str(parsed.database)))
        # "Last seen" and "last used" times noted while reading, written in batches.
        self.activity = ActivityRecorder(self)
        # Each session names its Database, so that jobs enqueued after its commit (in
        # immediate mode) run against the same database (workflow.jobs).
        self.sessions = sessionmaker(self.engine, expire_on_commit=False,
                                     info={"counterpart.database": self})
        self._reader = self.engine.execution_options(**{_READ_ONLY: True})

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Open a session in one transaction: committed on success, rolled back on error.

        Inside :func:`reading_only` it is a read-only transaction (:meth:`read`): a write
        raises instead of taking the write lock.
        """
        if _reading_only.get():
            with self.read() as session:
                yield session
            return
        try:
            with self.sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            if _is_full(exc):
                raise StorageFullError(
                    "The server's disk is full, so nothing was saved; earlier letters and "
                    "documents are unchanged. Free some space and try again.") from exc
            raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a session in one read-only transaction, for requests that only read.

        On SQLite it is a deferred ``BEGIN`` (no write lock: it never waits for writers nor
        makes them wait) with ``PRAGMA query_only``; on PostgreSQL ``SET TRANSACTION READ
        ONLY``. A write inside it raises OperationalError (SQLite) or InternalError
        (PostgreSQL) instead of taking a lock it could not upgrade safely.
        """
        with self.sessions(bind=self._reader) as session, session.begin():
            if not self.is_sqlite:
                session.execute(text("SET TRANSACTION READ ONLY"))
            yield session

    def session(self) -> Session:
        """Open a session; the caller commits or rolls back."""
        return self.sessions()

    def migrate(self) -> None:
        """Bring the schema up to the newest migration (creating it in a new database)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        """Write the activity noted so far, stop its writer, and close every pooled
        connection."""
        try:
            self.activity.close()
        except Exception:  # a lost "last seen" time must not stop the shutdown
            log.exception("last-seen and last-used times could not be written")
        self.engine.dispose()


def open_database(data_dir: Path, url: str | None = None, *, migrate: bool = True) -> Database:
    """Open (creating and migrating on first use) the database of a data folder."""
    make_private_folder(Path(data_dir))
    database = Database(database_url_for(data_dir, url))
    if migrate:
        database.migrate()
    return database
