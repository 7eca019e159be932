"""The server's state: version, database, DepotDownloader, storage and queue."""

from __future__ import annotations

from typing import Protocol

from wallwhale_client.transport import Transport, Unary
from wallwhale_client.v1 import status_pb2, status_pb2_grpc


class _StatusRpcs(Protocol):
    GetStatus: Unary[status_pb2.GetStatusRequest, status_pb2.GetStatusResponse]


class StatusApi:
    """AsyncClient's status call."""

    _transport: Transport
    status: status_pb2_grpc.StatusServiceStub

    @property
    def _status_rpcs(self) -> _StatusRpcs:
        return self.status

    async def get_status(self) -> status_pb2.GetStatusResponse:
        return await self._transport.unary(self._status_rpcs.GetStatus, status_pb2.GetStatusRequest())
