"""The database: engine set-up, sessions, transactions and migrations.

SQLite in a file of the data folder is the embedded default (WAL mode, a busy timeout and
``BEGIN IMMEDIATE`` transactions, so that concurrent writers queue instead of failing);
PostgreSQL works through the same models and migrations. Requests that only read use
:meth:`Database.read`: a deferred ``BEGIN`` that takes no write lock on SQLite (readers never
queue behind writers in WAL mode) and refuses every write on both databases.

The data folder is private to the user running Counterpart: created 0700 (an existing one is
tightened to it), and the SQLite database 0600 before SQLite first opens it, so that its
``-wal`` and ``-shm`` files, which SQLite creates with the database's own mode, are too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .errors import StorageFullError
from .files import PRIVATE_FOLDER_MODE, make_private_file, make_private_folder

__all__ = ["Database", "rowcount", "open_database", "database_url_for", "DATA_DIR_ENV",
           "DATABASE_URL_ENV"]

DATA_DIR_ENV = "COUNTERPART_DATA_DIR"
DATABASE_URL_ENV = "COUNTERPART_DATABASE_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "counterpart_read_only"


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
            kwargs["poolclass"] = NullPool
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, Path(str(parsed.database)))
        # Each session names its Database, so that jobs enqueued after its commit (in
        # immediate mode) run against the same database (workflow.jobs).
        self.sessions = sessionmaker(self.engine, expire_on_commit=False,
                                     info={"counterpart.database": self})
        self._reader = self.engine.execution_options(**{_READ_ONLY: True})

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Open a session in one transaction: committed on success, rolled back on error."""
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
        """Close every pooled connection."""
        self.engine.dispose()


def open_database(data_dir: Path, url: str | None = None, *, migrate: bool = True) -> Database:
    """Open (creating and migrating on first use) the database of a data folder."""
    make_private_folder(Path(data_dir))
    database = Database(database_url_for(data_dir, url))
    if migrate:
        database.migrate()
    return database
