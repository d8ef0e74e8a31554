"""A real HTTP server on loopback that receives webhooks, for the tests.

It answers each POST with the next entry of its script (an HTTP status, or ``"timeout"``:
it keeps the connection silent for longer than the sender waits), then 200 once the script is
spent, and keeps every request it got: path, headers and the raw body.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """The requests received so far, and the answers still to give."""

    def __init__(self, script: list[int | str], silence: float) -> None:
        self.script = list(script)
        self.silence = silence
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.url = ""
        self.port = 0

    def next_answer(self) -> int | str:
        with self.lock:
            return self.script.pop(0) if self.script else 200

    def types(self) -> list[str]:
        """The webhook event type of each request, in order."""
        return [r.json()["type"] for r in self.requests]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body,
                                                  time.time()))
            answer = receiver.next_answer()
            if answer == "timeout":
                time.sleep(receiver.silence)
                return  # the sender gave up already; close without answering
            status = int(answer)
            payload = json.dumps({"status": status}).encode()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", f"{receiver.url}/elsewhere")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@contextmanager
def webhook_receiver(script: list[int | str] | None = None, *, silence: float = 1.5
                     ) -> Iterator[Receiver]:
    """Run a receiver on 127.0.0.1 (a free port) for the block: ``receiver.url`` is its
    address, ``receiver.requests`` what it got."""
    receiver = Receiver(script or [], silence)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    receiver.url = f"http://127.0.0.1:{receiver.port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
