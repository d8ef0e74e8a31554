"""Rate limits on failures: wrong passwords, unknown API tokens and guessed signing links.

Only failed attempts count, and they count per client: its IPv4 address, or its IPv6 /64
network (one host usually holds a whole /64, so counting single IPv6 addresses would give it
billions of fresh counters). Someone guessing is slowed to a stop while everyone else, the
guesser's own successful requests included, goes on as before. Failed sign-ins also count per
account, whatever the address, so that guesses at one email spread over many addresses stop
too (``COUNTERPART_RATE_LIMIT_ACCOUNT_FAILURES``); while an account is over its limit, every
sign-in to it waits, the right password included, or the guesses would go on.

Every file handed in at ``/verify`` or ``/api/verify`` counts against its client, failed or
not, since each costs a check in a child process (``COUNTERPART_RATE_LIMIT_VERIFY``).

Counting and storage come from the ``limits`` library: in this process's memory by default, or
in Redis when ``COUNTERPART_REDIS_URL`` is set, so that several app servers share one count.
``counterpart serve`` with several web processes and no Redis counts in a SQLite file that
its processes share (:class:`SharedFileStorage`, ``RATE_LIMIT_STORAGE``), made for that run
in a private temporary folder: a client counts the same whichever process answers it.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from flask import Flask, current_app, g, jsonify, make_response, render_template, request
from limits import RateLimitItem, parse
from limits.storage import MovingWindowSupport, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.wrappers import Response

from .config import ConfigError

__all__ = ["init_app", "FailureLimiter", "DEFAULT_LIMIT", "DEFAULT_ACCOUNT_LIMIT",
           "client_key", "account_over_limit", "SharedFileStorage", "SHARED_FILE_SCHEME"]

DEFAULT_LIMIT = "10 per minute"
DEFAULT_ACCOUNT_LIMIT = "20 per 15 minutes"
ACCOUNT_AREA = "sign-in-account"
EXTENSION = "counterpart.ratelimit"
DEFAULT_VERIFY_LIMIT = "20 per minute"
VERIFY_AREA = "verify"
VERIFY_PATHS = frozenset({"/verify", "/api/verify"})

SHARED_FILE_SCHEME = "counterpart-sqlite"


class SharedFileStorage(Storage, MovingWindowSupport):
    """A ``limits`` storage in a SQLite file, shared by the processes of one server.

    Written ``counterpart-sqlite:///path/to/limits.sqlite3``. Moving windows (the strategy
    used here) keep one row per counted attempt, and fixed windows one counter per key; each
    change is one short write transaction, so two processes never count past a limit, and a
    request that is only checked reads (no write). Rows past their window are deleted as
    new ones come in. Errors are :class:`sqlite3.Error`.
    """

    STORAGE_SCHEME = [SHARED_FILE_SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: float | str | bool) -> None:
        path = urllib.parse.urlparse(uri or "").path
        if not path:
            raise ValueError(f"{SHARED_FILE_SCHEME}: the URL names no file ({uri!r})")
        self.path = path
        self._local = threading.local()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS attempts "
                       "(key TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS attempts_key ON attempts (key, at)")
            db.execute("CREATE INDEX IF NOT EXISTS attempts_expires ON attempts (expires)")
            db.execute("CREATE TABLE IF NOT EXISTS counters "
                       "(key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)")

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # counts need not outlive the server
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: object, *_rest: object) -> None:
            self.db.execute("ROLLBACK" if kind is not None else "COMMIT")

    def _transaction(self) -> SharedFileStorage._Transaction:
        return self._Transaction(self._connection())

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            db.execute("INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                       (key, amount, now + expiry))
            row = db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def get(self, key: str) -> int:
        row = self._connection().execute(
            "SELECT value FROM counters WHERE key = ? AND expires > ?",
            (key, time.time())).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        now = time.time()
        row = self._connection().execute(
            "SELECT expires FROM counters WHERE key = ? AND expires > ?", (key, now)).fetchone()
        return float(row[0]) if row else now

    def check(self) -> bool:
        try:
            self._connection().execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        with self._transaction() as db:
            removed = db.execute("DELETE FROM attempts").rowcount
            removed += db.execute("DELETE FROM counters").rowcount
        return removed

    def clear(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM attempts WHERE key = ?", (key,))
            db.execute("DELETE FROM counters WHERE key = ?", (key,))

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM attempts WHERE expires <= ?", (now,))
            (held,) = db.execute("SELECT count(*) FROM attempts WHERE key = ? AND at > ?",
                                 (key, now - expiry)).fetchone()
            if held + amount > limit:
                return False
            db.executemany("INSERT INTO attempts (key, at, expires) VALUES (?, ?, ?)",
                           [(key, now, now + expiry)] * amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        oldest, held = self._connection().execute(
            "SELECT min(at), count(*) FROM attempts WHERE key = ? AND at > ?",
            (key, now - expiry)).fetchone()
        return (float(oldest), int(held)) if held else (now, 0)


@dataclass
class FailureLimiter:
    """Counts a client's failures per area and says when it must wait."""

    limiter: MovingWindowRateLimiter
    limit: RateLimitItem
    # Areas counted with a limit of their own instead of ``limit``.
    area_limits: dict[str, RateLimitItem] = field(default_factory=dict)

    def _limit(self, area: str) -> RateLimitItem:
        return self.area_limits.get(area, self.limit)

    def blocked(self, area: str, client: str) -> bool:
        return not self.limiter.test(self._limit(area), area, client)

    def failed(self, area: str, client: str) -> None:
        self.limiter.hit(self._limit(area), area, client)

    def attempted(self, area: str, client: str) -> bool:
        """Count an attempt whether it fails or not; False once the client is over its limit."""
        return self.limiter.hit(self._limit(area), area, client)

    def retry_after(self, area: str, client: str) -> int:
        reset, _remaining = self.limiter.get_window_stats(self._limit(area), area, client)
        return max(1, int(reset - time.time()) + 1)


def _area() -> tuple[str, frozenset[int]] | None:
    """Name the area a request belongs to and the statuses that count as its failures.

    Wrong second factors count as failed sign-ins; a wrong one-time code on a signing page
    (401) counts as a guessed link does; so does an unknown set-password link.
    """
    path = request.path
    if path.startswith(("/sign/", "/api/sign/")):
        return "signing-link", frozenset({404, 401})
    if path.startswith("/account/set-password/"):
        return "account-link", frozenset({404})
    if path in ("/sign-in", "/sign-in/two-factor", "/account/password",
                "/account/two-factor/disable", "/account/two-factor/recovery-codes") or \
            (path.startswith("/api/") and path != "/api/verify"):
        return "sign-in", frozenset({401})
    return None


def client_key(address: str | None) -> str:
    """Return what a client's failures count under: its IPv4 address or its IPv6 /64."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _client() -> str:
    return client_key(request.remote_addr)


def _account() -> str | None:
    """The account a sign-in attempt names (its email, trimmed and lower-cased), if any."""
    if request.path != "/sign-in" or request.method != "POST":
        return None
    email = request.form.get("email", "")
    return email.strip().lower()[:254] or None


def _too_many(limiter: FailureLimiter, area: str, key: str | None = None) -> Response:
    if area == VERIFY_AREA:
        message = ("Too many files checked from your address. Wait a minute and try again; "
                   "other people are not affected.")
    elif area == ACCOUNT_AREA:
        message = ("Too many failed sign-ins to this account, from one address or several. "
                   "Wait a few minutes and try again; if this keeps happening, tell an "
                   "administrator.")
    else:
        message = ("Too many failed attempts from your address. Wait a minute and try again; "
                   "other people are not affected.")
    if request.path.startswith("/api/"):
        response = jsonify(error=message)
    else:
        response = make_response(render_template("error.html", code=429,
                                                 title="Too many requests", message=message))
    response.status_code = 429
    response.headers["Retry-After"] = str(limiter.retry_after(area, key or _client()))
    return response


def account_over_limit(email: str) -> Response | None:
    """For a second factor of ``email``'s sign-in: the 429 answer while the account is over
    its failure limit, else None; a failure (401) of this request then counts against the
    account too."""
    limiter: FailureLimiter = current_app.extensions[EXTENSION]
    key = email.strip().lower()[:254]
    g.rate_limit_account = key
    if limiter.blocked(ACCOUNT_AREA, key):
        return _too_many(limiter, ACCOUNT_AREA, key)
    return None


def check_before() -> Response | None:
    """Turn a client away while it is over its failure limit in this area, or over its limit
    of files to check."""
    limiter: FailureLimiter = current_app.extensions[EXTENSION]
    if request.method == "POST" and request.path in VERIFY_PATHS \
            and not limiter.attempted(VERIFY_AREA, _client()):
        return _too_many(limiter, VERIFY_AREA)
    found = _area()
    if found is None:
        return None
    g.rate_limit_area = found
    if limiter.blocked(found[0], _client()):
        return _too_many(limiter, found[0])
    account = _account()
    if account is not None:
        g.rate_limit_account = account
        if limiter.blocked(ACCOUNT_AREA, account):
            return _too_many(limiter, ACCOUNT_AREA, account)
    return None


def count_after(response: Response) -> Response:
    """Count a failed attempt against the client."""
    found = getattr(g, "rate_limit_area", None)
    if found is not None and response.status_code in found[1]:
        limiter: FailureLimiter = current_app.extensions[EXTENSION]
        limiter.failed(found[0], _client())
        account = getattr(g, "rate_limit_account", None)
        if account is not None:
            limiter.failed(ACCOUNT_AREA, account)
    return response


def _parse(app: Flask, name: str, default: str) -> RateLimitItem:
    try:
        return parse(app.config.get(name) or default)
    except ValueError as exc:
        raise ConfigError(f"COUNTERPART_{name}: {exc}; write it like '{default}'.") from exc


def init_app(app: Flask) -> FailureLimiter:
    """Check the limit before any other work on a request, and count failures after it.

    Counts are kept in Redis (``REDIS_URL``), else in ``RATE_LIMIT_STORAGE`` (a ``limits``
    storage URL: ``counterpart serve`` sets a :class:`SharedFileStorage` for its processes),
    else in this process's memory."""
    limit = _parse(app, "RATE_LIMIT_FAILURES", DEFAULT_LIMIT)
    account_limit = _parse(app, "RATE_LIMIT_ACCOUNT_FAILURES", DEFAULT_ACCOUNT_LIMIT)
    storage = storage_from_string(app.config.get("REDIS_URL")
                                  or app.config.get("RATE_LIMIT_STORAGE") or "memory://")
    limiter = FailureLimiter(MovingWindowRateLimiter(storage), limit,
                             {ACCOUNT_AREA: account_limit,
                              VERIFY_AREA: _parse(app, "RATE_LIMIT_VERIFY",
                                                  DEFAULT_VERIFY_LIMIT)})
    app.extensions[EXTENSION] = limiter
    app.before_request(check_before)
    app.after_request(count_after)
    return limiter
