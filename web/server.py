"""The production server behind ``counterpart serve``: waitress, trusting a reverse proxy's
``X-Forwarded-*`` headers only from that proxy, and sharing connections fairly between clients.

waitress stops accepting connections once ``connection_limit`` are open, and keeps a slow one
open until its channel timeout: without a bound per client address, one client holding a
hundred slow connections stops the server for everyone. waitress has no such setting, so the
callable it calls for each accepted socket (its servers' ``channel_class``) is wrapped: a socket
from an address that already holds its share of connections is closed at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

__all__ = ["create_app_server", "ConnectionsPerAddress", "FORWARDED_HEADERS",
           "CONNECTION_LIMIT", "DEFAULT_CONNECTIONS_PER_ADDRESS"]

log = logging.getLogger(__name__)

# The headers a proxy sets that the app reads: the client's address, the scheme it used, and
# the host and port it asked for (so that links in pages and emails point at the proxy).
FORWARDED_HEADERS = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                               "x-forwarded-port"})
CONNECTION_LIMIT = 100  # waitress's default, stated so that the share below is read against it
DEFAULT_CONNECTIONS_PER_ADDRESS = 20
WARNING_INTERVAL = 60.0


class ConnectionsPerAddress:
    """Make waitress channels for accepted sockets, refusing an address over its share.

    ``limit`` connections per client address may be open at once (0: no limit); addresses in
    ``exempt`` (the reverse proxy, through which every client comes) are not counted.
    """

    def __init__(self, limit: int, socket_map: dict[int, Any], *,
                 exempt: frozenset[str] = frozenset()) -> None:
        self.limit = limit
        self.exempt = exempt
        self._map = socket_map
        self._warned: dict[str, float] = {}
        self.refused = 0

    def open_connections(self, address: str) -> int:
        """Count the connections open from ``address``."""
        return sum(1 for channel in list(self._map.values())
                   if isinstance(channel, HTTPChannel) and channel.addr
                   and channel.addr[0] == address)

    def wrap(self, make_channel: Callable[..., Any]) -> Callable[..., Any]:
        """Return a ``channel_class`` that refuses a socket over its address's share."""
        def channel(server: BaseWSGIServer, conn: Any, addr: Any, adj: Any,
                    map: dict[int, Any] | None = None) -> Any:
            address = addr[0] if isinstance(addr, tuple) and addr else None
            if (self.limit and isinstance(address, str) and address not in self.exempt
                    and self.open_connections(address) >= self.limit):
                self._refuse(conn, address)
                return None
            return make_channel(server, conn, addr, adj, map=map)
        return channel

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


def create_app_server(app: Any, *, host: str, port: int, threads: int,
                      max_request_body_size: int, proxy_count: int = 0,
                      trusted_proxy: str = "127.0.0.1",
                      connections_per_address: int = DEFAULT_CONNECTIONS_PER_ADDRESS) -> Any:
    """Make the waitress server for ``app`` (a WSGI app), ready to ``run()``.

    With ``proxy_count`` > 0, requests whose peer is ``trusted_proxy`` ("*": any peer) have
    their client address, scheme, host and port taken from that many proxies'
    ``X-Forwarded-*`` headers; from anyone else, and always without a proxy, those headers are
    dropped. The proxy's own address is exempt from ``connections_per_address``.
    """
    options: dict[str, Any] = {
        "host": host, "port": port, "threads": threads, "ident": "Counterpart",
        "connection_limit": CONNECTION_LIMIT, "max_request_body_size": max_request_body_size,
        "clear_untrusted_proxy_headers": True,
    }
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
    limiter = ConnectionsPerAddress(connections_per_address, socket_map, exempt=exempt)
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = limiter.wrap(dispatcher.channel_class)
    return server
