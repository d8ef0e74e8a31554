"""The load generator of the web benchmarks: locust, headless, run as a library.

Run as its own process (locust patches the standard library for gevent on import, which the
benchmark's own process must not have)::

    .venv/bin/python bench/web_load.py SPEC.json RESULT.json

SPEC is ``{"host": "http://127.0.0.1:PORT", "phases": [{"name", "path", "headers",
"users", "seconds", "warmup"}, ...]}``. Each phase starts ``users`` locust users (all at once,
no wait between requests) that GET ``path`` with ``headers`` over and over; the requests of
the first ``warmup`` seconds are dropped, those of the next ``seconds`` are kept. RESULT is a
list with, per phase: ``count``, ``failures`` (an answer other than 200, or no answer),
``p50``/``p95``/``p99``/``max`` (milliseconds, nearest rank over every kept request, not
locust's rounded histogram) and ``rps`` (kept requests per second).
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

__all__ = ["run_phase", "percentile", "main"]

_current: dict[str, Any] = {}


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of an ascending list (``share`` in 0..1); 0 when empty."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _reader_class() -> type:
    """The locust user: a client reading one page again and again, as fast as the server
    answers. Made on first use: importing locust patches the standard library for gevent,
    which only this module's own process may have."""
    if "reader" not in _current:
        from locust import FastHttpUser, constant, task

        class PageReader(FastHttpUser):
            wait_time = constant(0)
            host = "http://127.0.0.1"

            @task
            def read(self) -> None:
                self.client.get(_current["path"], headers=_current["headers"], name="page",
                                allow_redirects=False)

        _current["reader"] = PageReader
    return _current["reader"]


def run_phase(host: str, phase: dict[str, Any]) -> dict[str, Any]:
    """Run one phase (see the module's text) against ``host``; return its figures."""
    reader = _reader_class()
    import gevent
    from locust.env import Environment

    _current.update(path=phase["path"], headers=phase.get("headers") or {})
    kept: list[float] = []
    failures = [0]
    window = {"from": math.inf, "to": math.inf}

    def on_request(response_time: float, exception: BaseException | None = None,
                   response: Any = None, **_: Any) -> None:
        now = time.monotonic()
        if not window["from"] <= now < window["to"]:
            return
        status = getattr(response, "status_code", None)
        if exception is not None or status != 200:
            failures[0] += 1
        else:
            kept.append(float(response_time))

    reader.host = host
    environment = Environment(user_classes=[reader])
    environment.events.request.add_listener(on_request)
    runner = environment.create_local_runner()
    users = int(phase["users"])
    runner.start(users, spawn_rate=users)
    started = time.monotonic()
    window["from"] = started + float(phase.get("warmup", 1.0))
    window["to"] = window["from"] + float(phase["seconds"])
    gevent.sleep(max(0.0, window["to"] - time.monotonic()))
    runner.stop()
    runner.quit()
    kept.sort()
    return {"name": phase["name"], "path": phase["path"], "users": users,
            "count": len(kept), "failures": failures[0],
            "p50": percentile(kept, 0.50), "p95": percentile(kept, 0.95),
            "p99": percentile(kept, 0.99), "max": kept[-1] if kept else 0.0,
            "rps": len(kept) / float(phase["seconds"])}


def main(argv: list[str]) -> int:
    """Run every phase of the spec file ``argv[0]``; write the figures to ``argv[1]``."""
    _reader_class()  # locust first, before anything else is imported
    spec = json.loads(open(argv[0], encoding="utf-8").read())
    results = [run_phase(spec["host"], phase) for phase in spec["phases"]]
    with open(argv[1], "w", encoding="utf-8") as handle:
        json.dump(results, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
