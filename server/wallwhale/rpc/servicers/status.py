"""StatusService: the server's and its dependencies' state, from core.status."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2
from grpc import aio

from wallwhale import __version__
from wallwhale.core.catalog import Catalog
from wallwhale.core.status import StatusProbe
from wallwhale.db.types import utcnow
from wallwhale.rpc import convert
from wallwhale.v1 import status_pb2, status_pb2_grpc


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, probe: StatusProbe, instance_id: str, catalog: Catalog, concurrency_limit: int = 0):
        self._probe = probe
        self._catalog = catalog
        self._instance_id = instance_id
        self._concurrency_limit = concurrency_limit
        self._start_time = utcnow()
        self._start_monotonic = time.monotonic()

    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: aio.ServicerContext[Any, Any]
    ) -> status_pb2.GetStatusResponse:
        report = await self._probe.report()
        return status_pb2.GetStatusResponse(
            version=__version__,
            instance_id=self._instance_id,
            start_time=convert.timestamp(self._start_time),
            uptime=_duration(time.monotonic() - self._start_monotonic),
            database=status_pb2.DatabaseStatus(
                ok=report.database.ok,
                backend=report.database.backend,
                latency=_duration(report.database.latency_seconds),
                schema_revision=report.database.schema_revision,
                error=report.database.error,
            ),
            downloader=status_pb2.DownloaderStatus(
                available=report.downloader.available,
                version=report.downloader.version,
                runtime=report.downloader.runtime,
                error=report.downloader.error,
            ),
            storage=status_pb2.StorageStatus(
                writable=report.storage.writable,
                free_bytes=report.storage.free_bytes,
                total_bytes=report.storage.total_bytes,
                archive_bytes=report.archive_bytes,
                error=report.storage.error,
            ),
            queue=status_pb2.QueueStatus(
                queued=report.queue.queued,
                running=report.queue.running,
                waiting_for_steam_guard=report.queue.waiting_for_steam_guard,
                concurrency_limit=self._concurrency_limit,
            ),
            active_steam_accounts=report.active_steam_accounts,
            steam_web_api=self._web_api(),
        )

    def _web_api(self) -> status_pb2.SteamWebApiStatus | None:
        health = self._catalog.health
        if health is None:  # lookups are turned off
            return None
        state = {
            None: status_pb2.WEB_API_REACHABILITY_UNKNOWN,
            True: status_pb2.WEB_API_REACHABILITY_REACHABLE,
            False: status_pb2.WEB_API_REACHABILITY_UNREACHABLE,
        }[health.reachable]
        return status_pb2.SteamWebApiStatus(
            reachable=health.reachable is True,
            state=state,
            last_success_time=convert.timestamp(datetime.fromtimestamp(health.last_success, UTC))
            if health.last_success
            else None,
            error=health.error,
        )
