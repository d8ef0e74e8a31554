"""Run real app servers for the tests: ``counterpart serve`` processes on loopback (by default
one web process per core, each serving with waitress), and look at their processes."""

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


def child_pids(pid: int) -> list[int]:
    """The children of process ``pid`` (any of its threads'), from /proc; [] once it ended."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def descendant_pids(pid: int) -> list[int]:
    """Every process below ``pid``: children, their children, and so on."""
    found: list[int] = []
    waiting = child_pids(pid)
    while waiting:
        child = waiting.pop()
        found.append(child)
        waiting += child_pids(child)
    return found


def command_line(pid: int) -> list[str]:
    """The arguments process ``pid`` runs with ([] once it ended)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_running(pid: int) -> bool:
    """Say whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


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

    def web_processes(self) -> list[int]:
        """The web processes of a server with several (its children that run ``serve``; the
        background worker child runs ``worker``)."""
        return sorted(pid for pid in child_pids(self.process.pid)
                      if "serve" in command_line(pid))

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
        try:
            return self.wait_until_up()
        except BaseException:
            self.stop()  # stop it and close its log, whatever failed
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
