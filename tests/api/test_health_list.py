"""grpc.health.v1.Health/List answers every service's status (issue 15, item 19)."""

from __future__ import annotations

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_list_names_the_server_and_each_service(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.List(health_pb2.HealthListRequest())
    statuses = {service: answer.status for service, answer in response.statuses.items()}
    for service in ("", "wallwhale.v1.DownloadService", "wallwhale.v1.StatusService"):
        assert statuses.get(service) == SERVING, statuses
    for service, answer in response.statuses.items():  # List agrees with Check
        checked = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert checked.status == answer.status, service
