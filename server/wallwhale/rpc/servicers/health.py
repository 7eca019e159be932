"""grpc.health.v1.Health with List: grpcio-health-checking's asyncio servicer answers Check and
Watch only, so List (in the proto since 2024) fell through to the generated base class and answered
INTERNAL with a traceback in the log."""

from __future__ import annotations

from typing import TypeAlias

from grpc import aio
from grpc_health.v1 import health, health_pb2

_Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType


class HealthServicer(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        # Every status the library records (set() and the graceful shutdown both go through _set),
        # kept here too: its own table is private.
        self._statuses: dict[str, _Status] = {"": health_pb2.HealthCheckResponse.SERVING}

    async def _set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        self._statuses[service] = status
        await super()._set(service, status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: aio.ServicerContext[object, object]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._statuses.items()
            }
        )
