"""Rate limits on failures: wrong passwords, unknown API tokens and guessed signing links.

Only failed attempts count, and they count per client (its IP address), so someone guessing
is slowed to a stop while everyone else, the guesser's own successful requests included, goes
on as before. Counting and storage come from the ``limits`` library: in this process's memory
by default, or in Redis when ``COUNTERPART_REDIS_URL`` is set, so that several app servers
share one count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Flask, current_app, g, jsonify, make_response, render_template, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.wrappers import Response

from .config import ConfigError

__all__ = ["init_app", "FailureLimiter", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = "10 per minute"
EXTENSION = "counterpart.ratelimit"


@dataclass
class FailureLimiter:
    """Counts a client's failures per area and says when it must wait."""

    limiter: MovingWindowRateLimiter
    limit: RateLimitItem

    def blocked(self, area: str, client: str) -> bool:
        return not self.limiter.test(self.limit, area, client)

    def failed(self, area: str, client: str) -> None:
        self.limiter.hit(self.limit, area, client)

    def retry_after(self, area: str, client: str) -> int:
        reset, _remaining = self.limiter.get_window_stats(self.limit, area, client)
        return max(1, int(reset - time.time()) + 1)


def _area() -> tuple[str, frozenset[int]] | None:
    """Name the area a request belongs to and the statuses that count as its failures."""
    path = request.path
    if path.startswith(("/sign/", "/api/sign/")):
        return "signing-link", frozenset({404})
    if path == "/sign-in" or (path.startswith("/api/") and path != "/api/verify"):
        return "sign-in", frozenset({401})
    return None


def _client() -> str:
    return request.remote_addr or "unknown"


def _too_many(limiter: FailureLimiter, area: str) -> Response:
    message = ("Too many failed attempts from your address. Wait a minute and try again; "
               "other people are not affected.")
    if request.path.startswith("/api/"):
        response = jsonify(error=message)
    else:
        response = make_response(render_template("error.html", code=429,
                                                 title="Too many requests", message=message))
    response.status_code = 429
    response.headers["Retry-After"] = str(limiter.retry_after(area, _client()))
    return response


def check_before() -> Response | None:
    """Turn a client away while it is over its failure limit in this area."""
    found = _area()
    if found is None:
        return None
    limiter: FailureLimiter = current_app.extensions[EXTENSION]
    g.rate_limit_area = found
    if limiter.blocked(found[0], _client()):
        return _too_many(limiter, found[0])
    return None


def count_after(response: Response) -> Response:
    """Count a failed attempt against the client."""
    found = getattr(g, "rate_limit_area", None)
    if found is not None and response.status_code in found[1]:
        current_app.extensions[EXTENSION].failed(found[0], _client())
    return response


def init_app(app: Flask) -> FailureLimiter:
    """Check the limit before any other work on a request, and count failures after it."""
    try:
        limit = parse(app.config.get("RATE_LIMIT_FAILURES") or DEFAULT_LIMIT)
    except ValueError as exc:
        raise ConfigError(f"COUNTERPART_RATE_LIMIT_FAILURES: {exc}; write it like "
                          f"'{DEFAULT_LIMIT}'.") from exc
    storage = storage_from_string(app.config.get("REDIS_URL") or "memory://")
    limiter = FailureLimiter(MovingWindowRateLimiter(storage), limit)
    app.extensions[EXTENSION] = limiter
    app.before_request(check_before)
    app.after_request(count_after)
    return limiter
