"""Activity noted while reading, written later in batches: when a staff session was last seen,
when an API token was last used, which notes shown once were shown, and a signer's first view
of their signing link.

Reading a page must not write to the database (a write would take SQLite's write lock on every
request), yet "last seen" and "last used" are worth keeping. So a request only notes them here,
in memory, and :meth:`ActivityRecorder.flush` writes the newest time of each row in one
transaction: a background thread of the web process does so every
:data:`FLUSH_EVERY_SECONDS`, and :meth:`workflow.db.Database.dispose` once more at the end.
A time never moves backwards: a row already seen later keeps its later time.

What is lost if the process is killed before a flush is at most one interval of "last seen"
times; nothing else depends on them. A signer's first view is evidence, so it is not left
waiting: noting one wakes the writer at once, and it is written with the time, IP and browser
of the request that saw it (:func:`workflow.envelopes.record_view`).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

from sqlalchemy import delete, update

from .models import ApiToken, SessionNote, StaffSession

if TYPE_CHECKING:
    from .db import Database

__all__ = ["ActivityRecorder", "FLUSH_EVERY_SECONDS"]

FLUSH_EVERY_SECONDS = 60.0
log = logging.getLogger(__name__)


class ActivityRecorder:
    """Times noted in memory per row, written by :meth:`flush`; safe to use from threads.

    With ``database`` given, the first note in a process starts a daemon thread that flushes
    into it every ``every`` seconds (again after a fork: the thread does not survive one).
    """

    def __init__(self, database: Database | None = None, *,
                 every: float = FLUSH_EVERY_SECONDS) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, dt.datetime] = {}
        self._used: dict[int, dt.datetime] = {}
        self._shown: set[int] = set()
        self._views: dict[int, tuple[dt.datetime, str | None, str | None]] = {}
        self._wake = threading.Event()
        self._database = database
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._registered_pid: int | None = None

    def session_seen(self, session_id: int, at: dt.datetime) -> None:
        """Note that a staff session was seen at ``at`` (an aware UTC time)."""
        with self._lock:
            if session_id not in self._seen or self._seen[session_id] < at:
                self._seen[session_id] = at
        self._start()

    def token_used(self, token_id: int, at: dt.datetime) -> None:
        """Note that an API token was used at ``at`` (an aware UTC time)."""
        with self._lock:
            if token_id not in self._used or self._used[token_id] < at:
                self._used[token_id] = at
        self._start()

    def note_shown(self, note_id: int) -> None:
        """Note that a note shown once was shown, so that its row is deleted."""
        with self._lock:
            self._shown.add(note_id)
        self._start()

    def signer_viewed(self, counterpart_id: int, at: dt.datetime, *, ip: str | None,
                      user_agent: str | None) -> None:
        """Note a signer's first view of their link (written at once by the background
        writer, or by the next :meth:`flush`)."""
        with self._lock:
            if counterpart_id not in self._views or self._views[counterpart_id][0] > at:
                self._views[counterpart_id] = (at, ip, user_agent)
        self._start()
        self._wake.set()

    @property
    def pending(self) -> int:
        """How many rows wait to be written."""
        with self._lock:
            return len(self._seen) + len(self._used) + len(self._shown) + len(self._views)

    def flush(self, database: Database) -> int:
        """Write what was noted, in one transaction; return how many rows it concerned.

        Each time is written only over an older one. If the transaction fails, what it held
        is kept for the next flush and the error is raised.
        """
        from .envelopes import Actor, record_view  # (envelopes needs the database first)

        with self._lock:
            seen, used, shown, views = self._seen, self._used, self._shown, self._views
            self._seen, self._used, self._shown, self._views = {}, {}, set(), {}
        if not (seen or used or shown or views):
            return 0
        try:
            with database.transaction() as session:
                for counterpart_id, (at, ip, user_agent) in sorted(views.items()):
                    record_view(session, counterpart_id, Actor("", ip, user_agent), at)
                for session_id, at in seen.items():
                    session.execute(update(StaffSession).where(
                        StaffSession.id == session_id, StaffSession.last_seen_at < at)
                        .values(last_seen_at=at))
                for token_id, at in used.items():
                    session.execute(update(ApiToken).where(
                        ApiToken.id == token_id,
                        (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < at))
                        .values(last_used_at=at))
                if shown:
                    session.execute(delete(SessionNote).where(SessionNote.id.in_(shown)))
        except BaseException:
            with self._lock:
                for session_id, at in seen.items():
                    if session_id not in self._seen or self._seen[session_id] < at:
                        self._seen[session_id] = at
                for token_id, at in used.items():
                    if token_id not in self._used or self._used[token_id] < at:
                        self._used[token_id] = at
                self._shown |= shown
                for counterpart_id, view in views.items():
                    self._views.setdefault(counterpart_id, view)
            raise
        return len(seen) + len(used) + len(shown) + len(views)

    def _start(self) -> None:
        if self._database is None or self._stop.is_set():
            return
        pid = os.getpid()
        if self._thread_pid == pid:
            return
        with self._lock:
            if self._thread_pid == pid:
                return
            self._thread_pid = pid
            self._thread = threading.Thread(target=self._run, name="counterpart-activity",
                                            daemon=True)
            self._thread.start()
            if pid != self._registered_pid:  # write what is left when the process exits
                self._registered_pid = pid
                atexit.register(_close_at_exit, weakref.ref(self))

    def _run(self) -> None:
        while True:
            self._wake.wait(self._every)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                assert self._database is not None
                self.flush(self._database)
            except Exception:  # kept for the next round; the reader's pages go on working
                log.exception("last-seen and last-used times could not be written")

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and self._thread_pid == os.getpid() and thread.is_alive():
            thread.join(timeout=5)
        if self._database is not None:
            self.flush(self._database)


def _close_at_exit(reference: weakref.ref[ActivityRecorder]) -> None:
    recorder = reference()
    if recorder is not None and not recorder.closed:
        try:
            recorder.close()
        except Exception:
            log.exception("last-seen and last-used times could not be written at exit")
