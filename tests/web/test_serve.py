"""``counterpart serve`` on its own, with no proxy in front: one address cannot take every
connection, and X-Forwarded-* headers anyone may send change nothing; with several web
processes, a dead one is replaced and SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serving import ServerProcess, command_line, descendant_pids, is_running

from web import create_app
from web.config import ConfigError, config_from_env
from web.testing import csrf_token

SLOW_CONNECTIONS = 110  # more than waitress's 100 connections in all
PER_ADDRESS = 20


def _slow_connection(port: int) -> socket.socket:
    """Connect and send the start of a request that never ends, as a slow client does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /sign-in HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return sock


def _closed_by_server(sockets: list[socket.socket], expected: int,
                      timeout: float = 30) -> list[socket.socket]:
    """Wait until ``expected`` of the sockets are closed by the server; return those."""
    closed: list[socket.socket] = []
    open_ = list(sockets)
    deadline = time.monotonic() + timeout
    while len(closed) < expected and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.5)
        for sock in readable:
            try:
                ended = sock.recv(1) == b""
            except ConnectionResetError:
                ended = True
            if ended:
                closed.append(sock)
                open_.remove(sock)
    return closed


@pytest.mark.parametrize("processes", ["1", "2"])
def test_one_address_cannot_hold_every_connection(data_dir, database_url, processes):
    """With two web processes the share is counted across both: 20 in all, not 20 each."""
    server = ServerProcess(data_dir, database_url,
                           serve_options=["--processes", processes]).wait_until_up()
    sockets: list[socket.socket] = []
    try:
        sockets = [_slow_connection(server.port) for _ in range(SLOW_CONNECTIONS)]
        closed = _closed_by_server(sockets, SLOW_CONNECTIONS - PER_ADDRESS)
        # The address keeps its share, still open and waiting; the rest were closed at once.
        assert len(closed) == SLOW_CONNECTIONS - PER_ADDRESS
        still_open = [s for s in sockets if s not in closed]
        assert select.select(still_open, [], [], 0.2)[0] == []
        # Someone else, from another address, is served as usual.
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                             timeout=15)
        with other:
            page = other.get(f"{server.url}/sign-in")
        assert page.status_code == 200 and "Sign in" in page.text
        # And the slow address itself gets a connection again once it lets go of some.
        for sock in still_open[:5]:
            sock.close()
        with httpx.Client(timeout=15) as same:
            assert same.get(f"{server.url}/sign-in").status_code == 200
    finally:
        for sock in sockets:
            sock.close()
        server.stop()
    assert "127.0.0.1 holds 20 connections, its share" in server.log.read_text()


def _failed_sign_in(client: httpx.Client, url: str, forged: dict[str, str]) -> httpx.Response:
    form = client.get(f"{url}/sign-in", headers=forged)
    if form.status_code != 200:
        return form
    return client.post(f"{url}/sign-in", headers=forged, data={
        "email": "nobody@example.com", "password": "a wrong password",
        "csrf_token": csrf_token(form.text)})


def test_forwarded_headers_are_ignored_without_a_proxy(data_dir, database_url):
    server = ServerProcess(data_dir, database_url,
                           environment={"COUNTERPART_RATE_LIMIT_FAILURES": "3 per minute"})
    with server, httpx.Client(timeout=15) as client:
        answers = [_failed_sign_in(client, server.url, {
            "X-Forwarded-For": f"198.51.100.{n}", "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "forged.example", "Forwarded": f"for=198.51.100.{n}"})
            for n in range(4)]
        # Each forged address would be a new client; the real one is counted instead.
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        # Nor is the request taken for HTTPS or for another host.
        page = client.get(f"{server.url}/", headers={"X-Forwarded-Proto": "https",
                                                     "X-Forwarded-Host": "forged.example"})
        assert "Strict-Transport-Security" not in page.headers
        assert "forged.example" not in page.headers.get("Location", "")
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                             timeout=15)
        with other:
            assert _failed_sign_in(other, server.url, {}).status_code == 401


def test_the_app_applies_forwarded_headers_only_when_its_server_does_not(app_config):
    """Under another WSGI server ProxyFix reads the headers; ``counterpart serve`` turns it
    off (PROXY_FIX=False) because waitress has applied them already, from its proxy only."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
    for proxy_fix, scheme_seen in ((True, True), (False, False)):
        app = create_app({**app_config, "PROXY_COUNT": 1, "PROXY_FIX": proxy_fix})
        try:
            page = app.test_client().get("/sign-in", headers=forwarded)
        finally:
            app.extensions["counterpart.documents"].close()
            app.extensions["counterpart.db"].dispose()
        assert page.status_code == 200
        assert ("Strict-Transport-Security" in page.headers) is scheme_seen


def test_the_trusted_proxy_is_an_address_written_one_way():
    assert config_from_env({})["TRUSTED_PROXY"] == "127.0.0.1"
    for written, read in (("10.0.0.5", "10.0.0.5"), ("[::1]", "::1"),
                          ("0:0:0:0:0:0:0:1", "::1"), ("*", "*")):
        assert config_from_env({"COUNTERPART_TRUSTED_PROXY": written})["TRUSTED_PROXY"] == read
    with pytest.raises(ConfigError, match="COUNTERPART_TRUSTED_PROXY must be an IP address"):
        config_from_env({"COUNTERPART_TRUSTED_PROXY": "proxy.internal"})


def _wait_for(condition, timeout: float = 30, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def test_two_web_processes_replace_a_dead_one_and_stop_together(data_dir, database_url):
    server = ServerProcess(data_dir, database_url, serve_options=["--processes", "2"])
    with server, httpx.Client(timeout=15) as client:
        log = server.log.read_text()
        assert re.search(r"Counterpart is running at http://127\.0\.0\.1:\d+/ ", log)
        assert "2 web processes of 8 threads each" in log
        first = _wait_for(lambda: len(server.web_processes()) == 2 and server.web_processes())
        assert len(first) == 2, server.web_processes()
        assert client.get(f"{server.url}/sign-in").status_code == 200

        # One web process dies: the other goes on answering, and a new one takes its place.
        killed = first[0]
        os.kill(killed, signal.SIGKILL)
        for _ in range(10):
            with httpx.Client(timeout=15) as fresh:  # a new connection each time
                assert fresh.get(f"{server.url}/sign-in").status_code == 200
        replaced = _wait_for(lambda: (len(server.web_processes()) == 2
                                      and killed not in server.web_processes()
                                      and server.web_processes()))
        assert replaced and killed not in replaced and first[1] in replaced
        assert _wait_for(lambda: f"Web process {killed} was killed by SIGKILL"
                         in server.log.read_text())
        for _ in range(10):
            with httpx.Client(timeout=15) as fresh:
                assert fresh.get(f"{server.url}/sign-in").status_code == 200

        # SIGTERM stops everything: web processes, the background worker, their children.
        everything = descendant_pids(server.process.pid)
        assert any("worker" in command_line(pid) for pid in everything)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(45) == 0
    assert [pid for pid in everything if is_running(pid)] == []
    log = server.log.read_text()
    assert "Stopping Counterpart" in log and "Traceback" not in log


def test_web_processes_are_replaced_after_their_requests(data_dir, database_url):
    server = ServerProcess(data_dir, database_url,
                           serve_options=["--processes", "2", "--max-requests", "5"])
    with server:
        first = set(_wait_for(lambda: len(server.web_processes()) == 2
                              and server.web_processes()))
        for _ in range(30):
            with httpx.Client(timeout=60) as fresh:  # a new connection each time
                assert fresh.get(f"{server.url}/sign-in").status_code == 200
        later = _wait_for(lambda: len(server.web_processes()) == 2
                          and not first & set(server.web_processes())
                          and server.web_processes())
        assert later, (first, server.web_processes())
    assert re.search(r"Web process \d+ served 5 requests: a new one replaces it\.",
                     server.log.read_text())


_UNMAKEABLE_APP = """
import os, sys
from pathlib import Path
from web.server import PreforkServer

def make_app(slot):
    raise RuntimeError("this app cannot be made")

main = os.getpid()
try:
    PreforkServer(make_app, host="127.0.0.1", port=0, processes=2, threads=1,
                  max_request_body_size=1024).run()
except SystemExit:
    if os.getpid() != main:  # a web process came back through the frames its fork copied
        Path(sys.argv[1]).write_text(str(os.getpid()))
    raise
"""


def test_a_web_process_that_cannot_start_stops_the_server_and_never_returns(tmp_path):
    marker = tmp_path / "returned"
    ended = subprocess.run([sys.executable, "-c", _UNMAKEABLE_APP, str(marker)],
                           capture_output=True, text=True, timeout=120)
    assert ended.returncode == 3, ended.stderr[-2000:]  # gunicorn's "worker failed to boot"
    assert "this app cannot be made" in ended.stderr
    assert "A web process could not start" in ended.stderr
    assert not marker.exists(), "a web process ran its caller's frames again"
