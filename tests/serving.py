"""Run real app servers for the tests: ``counterpart serve`` (waitress) processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One ``counterpart serve`` process on a free loopback port, stopped on exit."""

    def __init__(self, data_dir: Path, database_url: str | None, *, threads: int = 8,
                 environment: dict[str, str] | None = None,
                 serve_options: list[str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERPART_")}
        env.update({"COUNTERPART_DATA_DIR": str(data_dir),
                    "COUNTERPART_RATE_LIMIT_FAILURES": "100000 per minute",
                    "COUNTERPART_CONVERTER_PROCESSES": "1"})
        if database_url:
            env["COUNTERPART_DATABASE_URL"] = database_url
        env.update(environment or {})
        self.log = data_dir / f"server-{self.port}.log"
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from web.cli import main; main()", "serve",
             "--host", "127.0.0.1", "--port", str(self.port), "--threads", str(threads),
             *(serve_options or [])],
            cwd=ROOT, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT)

    def wait_until_up(self, timeout: float = 60) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server stopped: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/sign-in", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log_handle.close()

    def __enter__(self) -> ServerProcess:
        return self.wait_until_up()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
