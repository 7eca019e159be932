"""Prometheus metrics, served over HTTP on their own port (process metrics included by default)."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter(
    "wallwhale_rpc_requests", "Finished RPCs by method and status code", ["method", "code"]
)
RPC_DURATION = Histogram(
    "wallwhale_rpc_duration_seconds",
    "Time from the start of an RPC to its end (whole stream for streaming RPCs)",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RPC_IN_FLIGHT = Gauge("wallwhale_rpc_in_flight", "RPCs being served now", ["method"])
CACHE_HITS = Counter(
    "wallwhale_archive_cache_hits", "Downloads served from an archive of the same content, without a run"
)
DATABASE_UP = Gauge("wallwhale_database_up", "1 when the last database health check succeeded")


class MetricsServer:
    """The /metrics HTTP endpoint, in a daemon thread (prometheus_client's own server)."""

    def __init__(self, host: str, port: int):
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
