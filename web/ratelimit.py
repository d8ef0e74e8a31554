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
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field

from flask import Flask, current_app, g, jsonify, make_response, render_template, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.wrappers import Response

from .config import ConfigError

__all__ = ["init_app", "FailureLimiter", "DEFAULT_LIMIT", "DEFAULT_ACCOUNT_LIMIT",
           "client_key", "account_over_limit"]

DEFAULT_LIMIT = "10 per minute"
DEFAULT_ACCOUNT_LIMIT = "20 per 15 minutes"
ACCOUNT_AREA = "sign-in-account"
EXTENSION = "counterpart.ratelimit"
DEFAULT_VERIFY_LIMIT = "20 per minute"
VERIFY_AREA = "verify"
VERIFY_PATHS = frozenset({"/verify", "/api/verify"})


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
    """Check the limit before any other work on a request, and count failures after it."""
    limit = _parse(app, "RATE_LIMIT_FAILURES", DEFAULT_LIMIT)
    account_limit = _parse(app, "RATE_LIMIT_ACCOUNT_FAILURES", DEFAULT_ACCOUNT_LIMIT)
    storage = storage_from_string(app.config.get("REDIS_URL") or "memory://")
    limiter = FailureLimiter(MovingWindowRateLimiter(storage), limit,
                             {ACCOUNT_AREA: account_limit,
                              VERIFY_AREA: _parse(app, "RATE_LIMIT_VERIFY",
                                                  DEFAULT_VERIFY_LIMIT)})
    app.extensions[EXTENSION] = limiter
    app.before_request(check_before)
    app.after_request(count_after)
    return limiter
