"""Prometheus metrics, served over HTTP on their own port (process metrics included by default).

Names follow Prometheus' conventions: the unit in the name, `_total` on counters (prometheus_client
adds it), labels with a handful of values (outcomes, reasons, priorities, statuses), never an id.

Two kinds of figures live here:
- what happened in this instance (counters, histograms, the jobs it runs, its audit backlog): sum
  them over instances. Things decided by a transaction are counted once it commits, through
  `core.after_commit` (`count`), so a rolled-back change counts nothing.
- what the shared database holds (`wallwhale_queue_*`, `wallwhale_steam_accounts`): every instance
  reports the same value, read at scrape time by `SharedFigures` (one cheap query, cached a few
  seconds). Aggregate them with max() over instances, never sum().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
DATABASE_UP = Gauge("wallwhale_database_up", "1 when the last database health check succeeded")

# --- downloads (counted after commit) ----------------------------------------------------------
DOWNLOADS_CREATED = Counter(
    "wallwhale_downloads_created",
    "Downloads accepted, by source: queued for a run, or served at once from the archive cache",
    ["source"],
)
DOWNLOADS_FINISHED = Counter(
    "wallwhale_downloads_finished",
    "Downloads that reached a final state, by outcome and failure reason ('' unless failed)",
    ["outcome", "reason"],
)
DOWNLOAD_ATTEMPTS = Counter("wallwhale_download_attempts", "Jobs claimed from the queue to run")
DOWNLOAD_RETRIES = Counter(
    "wallwhale_download_retries",
    "Jobs sent back to the queue after an attempt, by the failure that caused it ('' for none)",
    ["reason"],
)
ARCHIVE_CACHE_LOOKUPS = Counter(
    "wallwhale_archive_cache_lookups",
    "Looks for an archive of the same content: a hit serves the download without a run",
    ["result"],
)
STEAM_ACCOUNT_COOLDOWNS = Counter(
    "wallwhale_steam_account_cooldowns", "Steam accounts put in cooldown after Steam throttled them"
)
STEAM_GUARD_WAITS = Counter(
    "wallwhale_steam_guard_waits", "Jobs that stopped to wait for a Steam Guard answer"
)
DOWNLOADED_BYTES = Counter(
    "wallwhale_depotdownloader_downloaded_bytes", "Bytes of item content fetched by successful runs"
)

# --- this instance's runtime -------------------------------------------------------------------
JOBS_RUNNING = Gauge("wallwhale_jobs_running", "Jobs this instance runs now (sum over instances)")
RUN_DURATION = Histogram(
    "wallwhale_depotdownloader_run_duration_seconds",
    "Wall time of one DepotDownloader run, by result (succeeded, failed, stopped)",
    ["result"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
ARCHIVE_UPLOAD_DURATION = Histogram(
    "wallwhale_archive_upload_duration_seconds",
    "Time to upload one archive to the object store (attempts that failed included)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ARCHIVE_BUILD_DURATION = Histogram(
    "wallwhale_archive_build_duration_seconds",
    "Time to pack one download's files into its zip",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ARCHIVE_SERVED_BYTES = Counter(
    "wallwhale_archive_served_bytes", "Archive bytes sent (FetchArchive, FetchBatchArchive, share links)"
)
WEBAPI_REQUESTS = Counter(
    "wallwhale_steam_webapi_requests", "Requests to Steam's Web API, by result (ok, error)", ["result"]
)
WATCH_CHECKS = Counter(
    "wallwhale_watch_checks", "Watches checked against Steam's Web API, by result (ok, failed)", ["result"]
)
WATCH_CHANGES = Counter(
    "wallwhale_watch_changes",
    "Changes watches saw (updated, added, removed, unavailable, available, first), by change",
    ["change"],
)
AUDIT_BACKLOG = Gauge("wallwhale_audit_backlog_records", "Audit records waiting to be stored")
DEPOTDOWNLOADER_AVAILABLE = Gauge(
    "wallwhale_depotdownloader_available", "1 when the configured DepotDownloader is an executable file"
)
STORAGE_FREE = Gauge("wallwhale_storage_free_bytes", "Free bytes on the storage root's file system")
STORAGE_CAPACITY = Gauge("wallwhale_storage_capacity_bytes", "Size of the storage root's file system")


@dataclass(frozen=True)
class Shared:
    """What the shared database holds now (labels to values)."""

    queued_jobs: Mapping[str, int]  # by priority
    oldest_queued_age_seconds: Mapping[str, float]  # by priority; 0 when none is due
    steam_accounts: Mapping[str, int]  # by status


class SharedFigures(Collector):
    """The database's figures, read when Prometheus scrapes, at most once per `max_age` seconds.

    Every instance reports them alike: use max() over instances. (Reporting from one instance only,
    e.g. the holder of an advisory lock, would need PostgreSQL and leave a gap while it moves.)"""

    def __init__(self, read: Callable[[], Shared], max_age: float = 5.0):
        self._read = read
        self._max_age = max_age
        self._lock = threading.Lock()
        self._cached: tuple[float, Shared] | None = None

    def _current(self) -> Shared | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._max_age:
                try:
                    self._cached = (now, self._read())
                except Exception:
                    return None  # the database is away: wallwhale_database_up says so
            return self._cached[1]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        shared = self._current()
        if shared is None:
            return
        yield _family(
            "wallwhale_queue_jobs",
            "Queued jobs by priority (shared: max over instances)",
            "priority",
            shared.queued_jobs,
        )
        yield _family(
            "wallwhale_queue_oldest_age_seconds",
            "How long the oldest due queued job has waited, by priority (shared: max over instances)",
            "priority",
            shared.oldest_queued_age_seconds,
        )
        yield _family(
            "wallwhale_steam_accounts",
            "Steam accounts by status (shared: max over instances)",
            "status",
            shared.steam_accounts,
        )


def _family(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


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
