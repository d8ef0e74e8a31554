"""The production server behind ``counterpart serve``: waitress, trusting a reverse proxy's
``X-Forwarded-*`` headers only from that proxy, and sharing connections fairly between clients;
with several processes, gunicorn's arbiter forks them and each serves with waitress.

waitress stops accepting connections once ``connection_limit`` are open, and keeps a slow one
open until its channel timeout: without a bound per client address, one client holding a
hundred slow connections stops the server for everyone. waitress has no such setting, so the
callable it calls for each accepted socket (its servers' ``channel_class``) is wrapped: a socket
from an address that already holds its share of connections is closed at once.

Several processes (:class:`PreforkServer`): gunicorn's arbiter binds the socket, forks the
processes, replaces one that dies, recycles each after a number of requests (with jitter) and
stops them gracefully; each process (:class:`WaitressWorker`) creates its own app after the
fork and serves the shared socket with waitress, as one process does. waitress rather than
gunicorn's own ``gthread`` workers because waitress reads a whole request before a thread takes
it: a ``gthread`` thread blocks on a client that sends its headers slowly, so a few slow
connections would take every thread. The share of connections per address is counted across
the processes in shared memory (:class:`SharedConnectionCounts`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.workers.base import Worker
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

__all__ = ["create_app_server", "ConnectionsPerAddress", "SharedConnectionCounts",
           "PreforkServer", "WaitressWorker", "FORWARDED_HEADERS", "CONNECTION_LIMIT",
           "DEFAULT_CONNECTIONS_PER_ADDRESS"]

log = logging.getLogger(__name__)

# The headers a proxy sets that the app reads: the client's address, the scheme it used, and
# the host and port it asked for (so that links in pages and emails point at the proxy).
FORWARDED_HEADERS = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                               "x-forwarded-port"})
CONNECTION_LIMIT = 100  # waitress's default, stated so that the share below is read against it
DEFAULT_CONNECTIONS_PER_ADDRESS = 20
WARNING_INTERVAL = 60.0
STOP_LINGER_SECONDS = 1.0  # a stopping web process keeps an idle connection open this long


class SharedConnectionCounts:
    """Connections open per client address, counted together by the processes of one server.

    A table in shared memory (made before the fork, so every process maps the same one): a
    column per process slot, a row per bucket of addresses (CRC-32 of the address, so two
    addresses may share a bucket and then a share: stricter, never looser). Each process writes
    its own column only; a process that takes the slot of a dead one clears that column first,
    so the connections the dead one held (closed by the kernel) no longer count. Reads of the
    other columns are not locked: processes accepting at the same instant may each let one
    connection past the share.
    """

    BUCKETS = 65536

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._counts = multiprocessing.RawArray(ctypes.c_int32, slots * self.BUCKETS)
        self.slot: int | None = None

    def use_slot(self, slot: int) -> None:
        """Count this process's connections in column ``slot``, cleared first."""
        self.slot = slot
        size = ctypes.sizeof(ctypes.c_int32) * self.BUCKETS
        ctypes.memset(ctypes.addressof(self._counts) + slot * size, 0, size)

    def _bucket(self, address: str) -> int:
        return zlib.crc32(address.encode()) % self.BUCKETS

    def open_connections(self, address: str) -> int:
        """Count the connections open from ``address`` in every process."""
        bucket = self._bucket(address)
        return sum(self._counts[slot * self.BUCKETS + bucket] for slot in range(self.slots))

    def add(self, address: str, change: int) -> None:
        """Count ``change`` (1: opened, -1: closed) connections from ``address`` here."""
        if self.slot is None:
            raise RuntimeError("SharedConnectionCounts.use_slot was not called in this process")
        self._counts[self.slot * self.BUCKETS + self._bucket(address)] += change


class ConnectionsPerAddress:
    """Make waitress channels for accepted sockets, refusing an address over its share.

    ``limit`` connections per client address may be open at once (0: no limit); addresses in
    ``exempt`` (the reverse proxy, through which every client comes) are not counted. With
    ``shared``, the connections are counted across the processes of the server; otherwise in
    this process's socket map.
    """

    def __init__(self, limit: int, socket_map: dict[int, Any], *,
                 exempt: frozenset[str] = frozenset(),
                 shared: SharedConnectionCounts | None = None) -> None:
        self.limit = limit
        self.exempt = exempt
        self.shared = shared
        self._map = socket_map
        self._warned: dict[str, float] = {}
        self.refused = 0

    def open_connections(self, address: str) -> int:
        """Count the connections open from ``address``."""
        if self.shared is not None:
            return self.shared.open_connections(address)
        return sum(1 for channel in list(self._map.values())
                   if isinstance(channel, HTTPChannel) and channel.addr
                   and channel.addr[0] == address)

    def wrap(self, make_channel: Callable[..., Any]) -> Callable[..., Any]:
        """Return a ``channel_class`` that refuses a socket over its address's share."""
        def channel(server: BaseWSGIServer, conn: Any, addr: Any, adj: Any,
                    map: dict[int, Any] | None = None) -> Any:
            address = addr[0] if isinstance(addr, tuple) and addr else None
            counted = bool(self.limit and isinstance(address, str)
                           and address not in self.exempt)
            if counted and self.open_connections(address) >= self.limit:
                self._refuse(conn, address)
                return None
            made = make_channel(server, conn, addr, adj, map=map)
            if counted and self.shared is not None:
                self._count_until_closed(made, address)
            return made
        return channel

    def _count_until_closed(self, made: Any, address: str) -> None:
        """Count ``made`` (a channel) as open until it leaves the socket map.

        Every way a channel closes (``close``, and ``handle_close``, which bypasses it) ends
        in its ``del_channel``, which may run more than once."""
        shared = self.shared
        assert shared is not None
        shared.add(address, 1)
        del_channel = made.del_channel
        counted = True

        def del_channel_and_count(map: dict[int, Any] | None = None) -> None:
            nonlocal counted
            if counted:
                counted = False
                shared.add(address, -1)
            del_channel(map)
        made.del_channel = del_channel_and_count

    def _refuse(self, conn: Any, address: str) -> None:
        self.refused += 1
        try:
            conn.close()
        except OSError:
            pass
        now = time.monotonic()
        if now - self._warned.get(address, -WARNING_INTERVAL) >= WARNING_INTERVAL:
            if len(self._warned) >= 10_000:  # many addresses at once: start counting again
                self._warned.clear()
            self._warned[address] = now
            log.warning("%s holds %d connections, its share: further ones are closed at once",
                        address, self.limit)


def create_app_server(app: Any, *, host: str = "127.0.0.1", port: int = 0, threads: int,
                      max_request_body_size: int, proxy_count: int = 0,
                      trusted_proxy: str = "127.0.0.1",
                      connections_per_address: int = DEFAULT_CONNECTIONS_PER_ADDRESS,
                      sockets: list[Any] | None = None,
                      shared_counts: SharedConnectionCounts | None = None) -> Any:
    """Make the waitress server for ``app`` (a WSGI app), ready to ``run()``.

    It listens on ``host`` and ``port``, or on ``sockets`` (bound already, by the arbiter of
    several processes; the share of connections is then counted in ``shared_counts``).
    With ``proxy_count`` > 0, requests whose peer is ``trusted_proxy`` ("*": any peer) have
    their client address, scheme, host and port taken from that many proxies'
    ``X-Forwarded-*`` headers; from anyone else, and always without a proxy, those headers are
    dropped. The proxy's own address is exempt from ``connections_per_address``.
    """
    options: dict[str, Any] = {
        "threads": threads, "ident": "Counterpart",
        "connection_limit": CONNECTION_LIMIT, "max_request_body_size": max_request_body_size,
        "clear_untrusted_proxy_headers": True,
    }
    if sockets is not None:
        options["sockets"] = sockets
    else:
        options.update(host=host, port=port)
    exempt: frozenset[str] = frozenset()
    if proxy_count:
        # Dropped headers are not logged: anyone could fill the log by sending them.
        options.update(trusted_proxy=trusted_proxy, trusted_proxy_count=proxy_count,
                       trusted_proxy_headers=set(FORWARDED_HEADERS),
                       log_untrusted_proxy_headers=False)
        if trusted_proxy == "*":
            connections_per_address = 0  # every client arrives through some proxy
        else:
            exempt = frozenset({trusted_proxy})
    socket_map: dict[int, Any] = {}
    server = create_server(app, map=socket_map, **options)
    limiter = ConnectionsPerAddress(connections_per_address, socket_map, exempt=exempt,
                                    shared=shared_counts)
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = limiter.wrap(dispatcher.channel_class)
    return server


class WaitressWorker(Worker):
    """One web process under gunicorn's arbiter, serving its listening socket with waitress.

    The app is made here, after the fork (``PreforkServer.make_app``), so that no database
    connection, thread or LibreOffice is shared between processes. The process sends its
    heartbeat to the arbiter every second, stops gracefully on SIGTERM and on SIGINT (Ctrl+C
    reaches every process of the terminal's group; the arbiter stops them all gracefully), and
    ends itself after ``max_requests`` requests (plus jitter) so that a new one replaces it.
    """

    slot = 0

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)

    def load_wsgi(self) -> None:
        server: PreforkServer = self.app
        server.counts.use_slot(self.slot)
        self.wsgi, self._close = server.make_app(self.slot)

    def _counting(self, wsgi: Callable[..., Any]) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Web process %s served %d requests: a new one replaces it.",
                              self.pid, self.nr)
                self.alive = False
            return wsgi(environ, start_response)
        return app

    def run(self) -> None:
        server: PreforkServer = self.app
        waitress = create_app_server(
            self._counting(self.wsgi), sockets=[listener.sock for listener in self.sockets],
            shared_counts=server.counts, **server.waitress_options)
        socket_map = waitress._map
        try:
            while self.alive:
                self.notify()
                wasyncore.loop(timeout=1.0, map=socket_map, use_poll=True, count=1)
                if self.ppid != os.getppid():
                    self.log.info("The server's main process ended: stopping %s.", self.pid)
                    break
            self._drain(waitress, socket_map)
        finally:
            self._close()

    def _drain(self, waitress: Any, socket_map: dict[int, Any]) -> None:
        """Stop accepting, finish the requests under way and those arriving on open
        connections (up to ``graceful_timeout``), close connections idle for
        ``STOP_LINGER_SECONDS``, then stop the threads.

        A connection accepted just before the stop has not sent its request yet: closing it
        at once would reset it, so it is given the same linger."""
        waitress.accepting = False
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            now = time.time()
            busy = False
            for channel in list(socket_map.values()):
                if not isinstance(channel, HTTPChannel):
                    continue
                if (channel.requests or channel.total_outbufs_len
                        or channel.request is not None
                        or now - channel.last_activity < STOP_LINGER_SECONDS):
                    busy = True
                else:
                    channel.close()
            if not busy:
                break
            self.notify()
            wasyncore.loop(timeout=0.2, map=socket_map, use_poll=True, count=1)
        waitress.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        wasyncore.close_all(socket_map)


class _Arbiter(Arbiter):
    """gunicorn's arbiter, with Ctrl+C (SIGINT) stopping as gracefully as SIGTERM does."""

    _halting = False

    def handle_int(self) -> None:
        raise StopIteration

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self._halting = True
        super().halt(reason=reason, exit_status=exit_status)

    def spawn_worker(self) -> int:
        """Fork a web process; in the new process, end it here whatever happens.

        gunicorn ends a web process by ``sys.exit``, which would unwind through the frames
        the fork copied (``counterpart serve``'s, or a test runner's that catches
        ``SystemExit``) and run them a second time in the child. The child runs the exit
        handlers a normal exit runs, then leaves with its status at once."""
        arbiter = os.getpid()
        try:
            return int(super().spawn_worker())
        except BaseException as end:
            if os.getpid() == arbiter:
                raise
            code = end.code if isinstance(end, SystemExit) else 1
            if code is None:
                code = 0
            elif not isinstance(code, int):
                code = 1
        try:
            atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code & 0xFF)

    def reap_workers(self) -> None:
        """Reap the web processes that ended, each by its pid.

        gunicorn's own waits for any child (``waitpid(-1)``), which would also take the exit
        status of the background worker child from the thread that supervises it (and that
        logs how it ended, then starts a new one)."""
        for pid, worker in list(self.WORKERS.items()):
            try:
                ended, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                ended, status = pid, 0
            if not ended:
                continue
            self.WORKERS.pop(pid, None)
            if os.WIFSIGNALED(status):
                name = signal.Signals(os.WTERMSIG(status)).name
                (self.log.info if name == "SIGTERM" else self.log.error)(
                    "Web process %s was killed by %s: a new one replaces it.", pid, name)
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status):
                code = os.WEXITSTATUS(status)
                self.log.error("Web process %s exited with status %s.", pid, code)
                if self._halting:
                    pass  # already stopping: the others are reaped, not halted for again
                elif code == self.WORKER_BOOT_ERROR:
                    raise HaltServer("A web process could not start.", self.WORKER_BOOT_ERROR)
                elif code == self.APP_LOAD_ERROR:
                    raise HaltServer("The app could not be made.", self.APP_LOAD_ERROR)
            worker.tmp.close()
            self.cfg.child_exit(self, worker)

    def handle_ttin(self) -> None:
        self.log.warning("The number of web processes is set by --processes; restart the "
                         "server to change it.")

    def handle_ttou(self) -> None:
        self.handle_ttin()


class PreforkServer(BaseApplication):  # type: ignore[misc]
    """Several web processes sharing one listening socket, under gunicorn's arbiter.

    ``make_app(slot)`` runs in each new process (slot: the lowest free from 0, the place of
    the process it replaces) and returns the WSGI app and a function that releases it when
    the process stops. ``when_ready(port)`` runs in the main process once the socket is bound
    (``port``: the one bound, for ``--port 0``), before the processes start;
    ``on_exit()`` runs there after they all stopped. Processes are recycled after
    ``max_requests`` (0: never) plus up to ``max_requests_jitter`` requests.
    """

    def __init__(self, make_app: Callable[[int], tuple[Any, Callable[[], None]]], *,
                 host: str, port: int, processes: int, threads: int,
                 max_request_body_size: int, proxy_count: int = 0,
                 trusted_proxy: str = "127.0.0.1",
                 connections_per_address: int = DEFAULT_CONNECTIONS_PER_ADDRESS,
                 max_requests: int = 0, max_requests_jitter: int = 0,
                 graceful_timeout: int = 30,
                 when_ready: Callable[[int], None] = lambda port: None,
                 on_exit: Callable[[], None] = lambda: None) -> None:
        self.make_app = make_app
        self.processes = processes
        self.bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.waitress_options = {
            "threads": threads, "max_request_body_size": max_request_body_size,
            "proxy_count": proxy_count, "trusted_proxy": trusted_proxy,
            "connections_per_address": connections_per_address}
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.graceful_timeout = graceful_timeout
        self._when_ready = when_ready
        self._on_exit = on_exit
        # Made before the fork, so that every process maps the same table; twice the slots,
        # for the new processes that a reload (SIGHUP) starts before the old ones stop.
        self.counts = SharedConnectionCounts(2 * processes)
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": [self.bind], "workers": self.processes, "worker_class": WaitressWorker,
            "max_requests": self.max_requests, "max_requests_jitter": self.max_requests_jitter,
            "graceful_timeout": self.graceful_timeout, "timeout": 60,
            "control_socket_disable": True, "proc_name": "counterpart",
            "accesslog": None, "errorlog": "-", "loglevel": "info",
            "when_ready": self._ready, "on_exit": lambda _arbiter: self._on_exit(),
            "pre_fork": self._pre_fork,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def _ready(self, arbiter: Arbiter) -> None:
        self._when_ready(arbiter.LISTENERS[0].sock.getsockname()[1])

    def _pre_fork(self, arbiter: Arbiter, worker: Any) -> None:
        """Give the new process the first slot no living process holds (there is one: the
        processes are at most ``processes`` twice, during a reload)."""
        taken = {getattr(other, "slot", None) for other in arbiter.WORKERS.values()}
        free = [slot for slot in range(self.counts.slots) if slot not in taken]
        worker.slot = free[0]

    def load(self) -> Any:
        raise RuntimeError("WaitressWorker makes its app with make_app")

    def run(self) -> None:
        """Serve until SIGTERM or Ctrl+C."""
        _Arbiter(self).run()
