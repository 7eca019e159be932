"""The real Envoy in front of real servers: REST/JSON, errors, limits, client addresses, load
balancing, gRPC and gRPC-Web, called with a plain HTTP client.

Most tests share one server on SQLite behind one Envoy (the proxy does not care about the database);
load balancing runs two instances on one PostgreSQL database, as in production. Downloads run the
real engine with the test DepotDownloader (tests/support/harness.py). Stream timing and the unary
timeout are pinned down against a small stand-in server whose timing is exact.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.api import annotations_pb2
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2
from google.rpc import status_pb2 as rpc_status_pb2
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.support.database import PostgresDatabases, prepare_database
from tests.support.envoy import (
    ENVOY_BINARY,
    Envoy,
    Reply,
    event_stream,
    free_port,
    grpc_web_frame,
    http,
    parse_grpc_web,
    proxy_socket,
    render_envoy_config,
    running_envoy,
    servers_behind_envoy,
)
from tests.support.harness import Harness, harness_for, seconds, unzip
from wallwhale import errors
from wallwhale.app import WallWhaleServer
from wallwhale.config import to_async_url
from wallwhale.core.bootstrap import BootstrapResult
from wallwhale.rpc.errors import status_for, to_grpc_status
from wallwhale.v1 import (
    admin_pb2,
    auth_pb2,
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
    watch_pb2,
)

pytestmark = pytest.mark.slow

ALLOWED_ORIGIN = "http://localhost:5173"
# The test client calls from this loopback address when it should be refused by the IP rules.
DENIED_CLIENT = "127.0.0.3"


@dataclass
class Stack:
    envoy: Envoy
    server: WallWhaleServer
    admin: BootstrapResult

    @property
    def key(self) -> dict[str, str]:
        return {"x-api-key": self.admin.api_key}

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> Reply:
        """A REST call with the admin's key (unless `x_api_key` says otherwise)."""
        sent = {**self.key, **{name.replace("_", "-"): value for name, value in headers.items()}}
        return await http(method, self.envoy.url(path), json_body=body, headers=sent)


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    directory = tmp_path_factory.mktemp("envoy-stack")
    url = to_async_url(f"sqlite:///{directory / 'wallwhale.sqlite3'}")
    admin = await prepare_database(url)
    async with servers_behind_envoy(
        directory, url, cors_origins=[ALLOWED_ORIGIN], ip_deny=[DENIED_CLIENT]
    ) as (envoy, [server]):
        yield Stack(envoy, server, admin)


def detail(body: dict[str, Any], type_name: str) -> dict[str, Any]:
    """The decoded detail of a JSON google.rpc.Status with @type google.rpc.<type_name>."""
    for item in body["details"]:
        if item["@type"] == f"type.googleapis.com/google.rpc.{type_name}":
            return dict(item)
    raise AssertionError(f"no {type_name} in {body}")


def assert_json_error(reply: Reply, status: int, code: int, reason: str | None = None) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json", reply.headers
    body = reply.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["details"], list)
    if reason is not None:
        assert detail(body, "ErrorInfo")["reason"] == reason
    return dict(body)


# ---- the configuration ------------------------------------------------------------------------


def test_rendered_config_passes_envoy_validate(tmp_path: Path) -> None:
    config = render_envoy_config(
        tmp_path, [50051, 50052], port=8080, admin_port=9901, cors_origins=["*", ALLOWED_ORIGIN]
    )
    result = subprocess.run(
        [str(ENVOY_BINARY), "--mode", "validate", "-c", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def _our_methods() -> list[tuple[str, str, bool]]:
    """(gRPC path, HTTP verb, server-streaming) of every RPC, from the generated descriptors."""
    files: list[FileDescriptor] = [
        admin_pb2.DESCRIPTOR,
        auth_pb2.DESCRIPTOR,
        download_pb2.DESCRIPTOR,
        status_pb2.DESCRIPTOR,
        watch_pb2.DESCRIPTOR,
    ]
    found = []
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                verb = str(rule.WhichOneof("pattern"))
                found.append((f"/{service.full_name}/{method.name}", verb, method.server_streaming))
    return found


async def test_every_rpc_has_a_route_streams_without_timeout_reads_with_retries(stack: Stack) -> None:
    dump = await stack.envoy.config_dump()
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    manager = listeners["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0]
    virtual_host = manager["typed_config"]["route_config"]["virtual_hosts"][0]
    routes = {
        r["match"]["path"]: r["route"]
        for r in virtual_host["routes"]
        if "path" in r["match"] and "route" in r
    }
    methods = _our_methods()
    assert len(methods) > 30
    for path, verb, streaming in methods:
        route = routes[path]
        if streaming:
            assert route["timeout"] == "0s", path  # Envoy's default 15 s would cut the stream
        else:
            assert route["timeout"] == "30s", path
        if verb == "get":
            assert set(route["retry_policy"]["retry_on"].split(",")) == {
                "connect-failure",
                "refused-stream",
                "reset",
                "cancelled",
                "unavailable",
            }, path
        else:
            assert "retry_policy" not in route, path
    streams = {path.rsplit("/", 1)[1] for path, _, is_stream in methods if is_stream}
    assert {"WatchDownload", "WatchBatch", "FetchArchive", "FetchBatchArchive"} <= streams
    # Archives have their own connections to the servers (slow readers stall nobody else).
    for path, _, _ in methods:
        archive = path.endswith(("/FetchArchive", "/FetchBatchArchive", "/FetchArchiveLink"))
        assert routes[path]["cluster"] == ("wallwhale_archives" if archive else "wallwhale"), path


# ---- REST/JSON --------------------------------------------------------------------------------


async def test_status_over_rest_in_lower_camel_case_with_zero_values(stack: Stack) -> None:
    reply = await stack.call("GET", "/v1/status")
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["instanceId"] == stack.server.instance_id
    assert body["database"]["ok"] is True
    assert body["database"]["schemaRevision"]
    # Zero values are printed, not left out; int64 is a string in JSON.
    assert body["activeSteamAccounts"] == 0
    assert body["queue"]["runningHere"] == 0
    assert body["storage"]["archiveBytes"] == "0"
    assert body["database"]["error"] == ""
    assert "instance_id" not in body


async def test_login_and_caller_with_bearer_token(stack: Stack) -> None:
    login = await http(
        "POST",
        stack.envoy.url("/v1/auth/login"),
        json_body={"email": stack.admin.email, "password": stack.admin.password},
    )
    assert login.status == 200, login
    tokens = login.json()["tokens"]
    assert tokens["accessToken"]
    assert tokens["refreshToken"]
    assert login.json()["user"]["role"] == "USER_ROLE_ADMIN"  # enums by name

    caller = await http(
        "GET",
        stack.envoy.url("/v1/auth/caller"),
        headers={"authorization": f"Bearer {tokens['accessToken']}"},
    )
    assert caller.status == 200, caller
    assert caller.json()["user"]["email"] == stack.admin.email
    # Zero scalars and empty lists are printed; a message field that is not set is left out
    # (proto3 JSON has no zero value for it).
    assert "apiKey" not in caller.json()
    assert caller.json()["user"]["disabled"] is False


async def test_users_create_get_update_delete_and_errors(stack: Stack) -> None:
    email = f"user-{secrets.token_hex(4)}@example.test"
    user = {"email": email, "displayName": "Ada", "role": "USER_ROLE_USER"}
    created = await stack.call("POST", "/v1/admin/users", {"user": user, "password": "p" * 16})
    assert created.status == 200, created
    user_id = created.json()["user"]["id"]
    assert created.json()["user"]["disabled"] is False

    duplicate = await stack.call("POST", "/v1/admin/users", {"user": user, "password": "p" * 16})
    assert_json_error(duplicate, 409, 6, "ALREADY_EXISTS")

    # The path binds user.id; the body is the rest of the request; a FieldMask is a string.
    updated = await stack.call(
        "PATCH",
        f"/v1/admin/users/{user_id}",
        {"user": {"displayName": "Ada L."}, "updateMask": "displayName"},
    )
    assert updated.status == 200, updated
    assert updated.json()["user"]["displayName"] == "Ada L."

    # The user's own limits (int64 as strings); a key of theirs may not be looser (400 naming it).
    limited = await stack.call(
        "PATCH",
        f"/v1/admin/users/{user_id}",
        {
            "user": {"limits": {"dailyDownloadQuota": "5", "maxConcurrentDownloads": 1}},
            "updateMask": "limits",
        },
    )
    assert limited.status == 200, limited
    got = (await stack.call("GET", f"/v1/admin/users/{user_id}")).json()["user"]
    assert got["limits"] == {"dailyDownloadQuota": "5", "maxConcurrentDownloads": 1}
    assert got["effectiveLimits"]["dailyDownloadQuota"] == "5"
    looser = await stack.call(
        "POST",
        "/v1/admin/api-keys",
        {
            "apiKey": {
                "name": "k",
                "ownerUserId": user_id,
                "scopes": ["download:*"],
                "limits": {"dailyDownloadQuota": "6"},
            }
        },
    )
    refused = assert_json_error(looser, 400, 3, "INVALID_ARGUMENT")
    assert (
        detail(refused, "BadRequest")["fieldViolations"][0]["field"] == "api_key.limits.daily_download_quota"
    )

    listed = await stack.call("GET", "/v1/admin/users?pageSize=500")
    assert user_id in {u["id"] for u in listed.json()["users"]}

    assert (await stack.call("DELETE", f"/v1/admin/users/{user_id}")).status == 200
    missing = assert_json_error(await stack.call("GET", f"/v1/admin/users/{user_id}"), 404, 5, "NOT_FOUND")
    assert detail(missing, "ResourceInfo")["resourceName"] == user_id


async def test_bad_argument_is_400_with_field_violations(stack: Stack) -> None:
    reply = await stack.call(
        "POST", "/v1/admin/users", {"user": {"email": "not-an-address"}, "password": "short"}
    )
    body = assert_json_error(reply, 400, 3, "INVALID_ARGUMENT")
    fields = {v["field"] for v in detail(body, "BadRequest")["fieldViolations"]}
    assert fields == {"user.email", "password"}


async def test_missing_or_wrong_credentials_are_401(stack: Stack) -> None:
    missing = await http("GET", stack.envoy.url("/v1/status"))
    assert_json_error(missing, 401, 16, "CREDENTIALS_MISSING")
    wrong = await http("GET", stack.envoy.url("/v1/status"), headers={"x-api-key": "ww_" + "x" * 43})
    assert_json_error(wrong, 401, 16)


async def test_missing_scope_is_403(stack: Stack) -> None:
    created = await stack.call(
        "POST", "/v1/admin/api-keys", {"apiKey": {"name": "reader", "scopes": ["download:read"]}}
    )
    assert created.status == 200, created
    reader = created.json()["plaintextKey"]
    reply = await http("GET", stack.envoy.url("/v1/admin/users"), headers={"x-api-key": reader})
    assert_json_error(reply, 403, 7, "SCOPE_MISSING")


async def test_webhooks_over_rest_show_the_secret_once_and_refuse_the_metadata_address(stack: Stack) -> None:
    # Inactive: this shared stack's downloads must not send anything to the internet.
    hook = {"url": "https://hooks.example.test/in", "events": ["download.succeeded"], "active": False}
    created = await stack.call("POST", "/v1/webhooks", {"webhook": hook})
    assert created.status == 200, created
    webhook_id = created.json()["webhook"]["id"]
    assert created.json()["secret"].startswith("whsec_")
    got = await stack.call("GET", f"/v1/webhooks/{webhook_id}")
    assert got.json()["webhook"]["events"] == ["download.succeeded"]
    assert "secret" not in got.json()
    updated = await stack.call(
        "PATCH", f"/v1/webhooks/{webhook_id}", {"webhook": {"description": "ci"}, "updateMask": "description"}
    )
    assert updated.json()["webhook"]["description"] == "ci"
    rotated = await stack.call("POST", f"/v1/webhooks/{webhook_id}:rotateSecret", {"gracePeriod": "60s"})
    assert rotated.json()["secret"] != created.json()["secret"]
    deliveries = await stack.call("GET", f"/v1/webhooks/{webhook_id}/deliveries")
    assert deliveries.json()["deliveries"] == []
    metadata = {**hook, "url": "https://169.254.169.254/latest/meta-data/"}
    body = assert_json_error(
        await stack.call("POST", "/v1/webhooks", {"webhook": metadata}), 400, 3, "WEBHOOK_ADDRESS_REFUSED"
    )
    assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == "webhook.url"
    assert (await stack.call("DELETE", f"/v1/webhooks/{webhook_id}")).status == 200
    assert_json_error(await stack.call("GET", f"/v1/webhooks/{webhook_id}"), 404, 5, "NOT_FOUND")


async def test_rate_limited_key_is_429_with_quota_failure_retry_info_and_headers(stack: Stack) -> None:
    limits = {"requestsPerMinute": 1, "burst": 1}
    key = {"apiKey": {"name": "slow", "scopes": ["admin:read"], "limits": limits}}
    created = await stack.call("POST", "/v1/admin/api-keys", key)
    assert created.status == 200, created
    slow = {"x-api-key": created.json()["plaintextKey"]}
    first = await http("GET", stack.envoy.url("/v1/status"), headers=slow)
    assert first.status == 200
    assert first.headers["x-ratelimit-limit"] == "1"
    assert first.headers["x-ratelimit-remaining"] == "0"
    second = await http("GET", stack.envoy.url("/v1/status"), headers=slow)
    body = assert_json_error(second, 429, 8, "RATE_LIMITED")
    assert detail(body, "QuotaFailure")["violations"][0]["subject"].startswith("api-keys/")
    assert detail(body, "RetryInfo")["retryDelay"].endswith("s")


async def test_unknown_path_and_query_parameter_are_refused_by_envoy(stack: Stack) -> None:
    unknown = await stack.call("GET", "/v1/nothing")
    assert_json_error(unknown, 404, 5)
    assert unknown.from_envoy
    wrong_verb = await stack.call("PUT", "/v1/status")
    assert_json_error(wrong_verb, 404, 5)
    assert wrong_verb.from_envoy

    parameter = await stack.call("GET", "/v1/admin/users?pageSize=10&bogus=1")
    body = assert_json_error(parameter, 400, 3)
    assert "bogus" in body["message"]
    assert parameter.from_envoy

    bad_json = await http("POST", stack.envoy.url("/v1/admin/users"), body=b"{not json", headers=stack.key)
    assert_json_error(bad_json, 400, 3)


async def test_a_body_over_the_limit_is_413_json(stack: Stack) -> None:
    big = {"user": {"email": "big@example.test", "displayName": "x" * (1024 * 1024)}, "password": "p" * 16}
    reply = await stack.call("POST", "/v1/admin/users", big)
    assert_json_error(reply, 413, 3)
    assert reply.from_envoy
    small = await stack.call("GET", "/v1/status")  # the next request on a new connection is served
    assert small.status == 200


async def test_request_id_passes_through_both_ways(stack: Stack) -> None:
    reply = await stack.call("GET", "/v1/status", x_request_id="rest-req-42")
    assert reply.status == 200
    assert reply.headers["x-request-id"] == "rest-req-42"
    made_up = await stack.call("GET", "/v1/status")
    assert len(made_up.headers["x-request-id"]) >= 16  # Envoy made one and the server echoed it


async def test_download_routes_map_the_servers_refusals(stack: Stack) -> None:
    """Unary, SSE and archive routes alike: a refusal before the first byte is a JSON error."""
    for path in ("/v1/downloads/abc", "/v1/downloads/abc:watch", "/v1/downloads/abc/archive"):
        body = assert_json_error(await stack.call("GET", path), 404, 5, "NOT_FOUND")
        assert detail(body, "ResourceInfo")["resourceName"] == "abc"
    invalid = await stack.call("POST", "/v1/downloads", {"urlOrId": "not a workshop item"})
    assert_json_error(invalid, 400, 3, "INVALID_WORKSHOP_ITEM")
    for path in ("/v1/batches/abc", "/v1/batches/abc:watch", "/v1/batches/abc/archive"):
        body = assert_json_error(await stack.call("GET", path), 404, 5, "NOT_FOUND")
        assert detail(body, "ResourceInfo")["resourceName"] == "abc"
    invalid = await stack.call("POST", "/v1/batches", {"urlsOrIds": ["1", "not a workshop item"]})
    body = assert_json_error(invalid, 400, 3, "INVALID_WORKSHOP_ITEM")
    assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == "urls_or_ids[1]"


# ---- the client's address ---------------------------------------------------------------------


async def test_ip_rules_see_the_client_behind_envoy_and_forged_headers_do_not_help(stack: Stack) -> None:
    denied = await http("GET", stack.envoy.url("/v1/status"), headers=stack.key, source_address=DENIED_CLIENT)
    assert_json_error(denied, 403, 7, "IP_NOT_ALLOWED")

    # The denied client cannot pose as another address, nor can another pose as the denied one.
    forged = {**stack.key, "x-forwarded-for": "198.51.100.7"}
    disguised = await http("GET", stack.envoy.url("/v1/status"), headers=forged, source_address=DENIED_CLIENT)
    assert disguised.status == 403
    framed = {**stack.key, "x-forwarded-for": DENIED_CLIENT}
    assert (await http("GET", stack.envoy.url("/v1/status"), headers=framed)).status == 200

    # The address reaches the server's records as well: the audit trail of a refused call.
    await http("GET", stack.envoy.url("/v1/status"), source_address="127.0.0.4")
    for _ in range(50):
        events = await stack.call("GET", "/v1/admin/audit-events?pageSize=20")
        if any(e["clientAddress"] == "127.0.0.4" for e in events.json()["auditEvents"]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no audit event with the client's address 127.0.0.4")


# ---- gRPC and gRPC-Web through Envoy -----------------------------------------------------------


async def test_grpc_through_envoy_with_the_generated_stubs(stack: Stack) -> None:
    async with aio.insecure_channel(stack.envoy.grpc_target) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        response = await stub.GetStatus(status_pb2.GetStatusRequest(), metadata=tuple(stack.key.items()))
        assert response.instance_id == stack.server.instance_id
        with pytest.raises(grpc.RpcError) as raised:
            await stub.GetStatus(status_pb2.GetStatusRequest())
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        status = rpc_status.from_call(raised.value)
        assert status is not None, "rich details are lost through Envoy"
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "CREDENTIALS_MISSING"
        # No JSON: gRPC callers keep their plain status message.
        assert not raised.value.details().startswith("{")


async def test_grpc_web_call_and_cors(stack: Stack) -> None:
    path = "/wallwhale.v1.StatusService/GetStatus"
    web = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ALLOWED_ORIGIN}
    frame = grpc_web_frame(status_pb2.GetStatusRequest().SerializeToString())

    reply = await http("POST", stack.envoy.url(path), body=frame, headers={**web, **stack.key})
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/grpc-web")
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    messages, trailers = parse_grpc_web(reply.body)
    assert trailers["grpc-status"] == "0"
    assert status_pb2.GetStatusResponse.FromString(messages[0]).instance_id == stack.server.instance_id

    refused = await http("POST", stack.envoy.url(path), body=frame, headers=web)
    assert refused.status == 200  # gRPC-Web errors are trailers-only, in the headers
    assert refused.headers["grpc-status"] == "16"
    encoded = refused.headers["grpc-status-details-bin"]
    details = rpc_status_pb2.Status.FromString(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert details.code == 16

    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "x-api-key"}
    allowed = await http("OPTIONS", stack.envoy.url(path), headers={"origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"]
    assert "grpc-status" in allowed.headers["access-control-expose-headers"]
    rest_preflight = await http(
        "OPTIONS", stack.envoy.url("/v1/status"), headers={"origin": ALLOWED_ORIGIN, **preflight}
    )
    assert rest_preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN

    other = await http("OPTIONS", stack.envoy.url(path), headers={"origin": "https://evil.test", **preflight})
    assert "access-control-allow-origin" not in other.headers  # the browser refuses the call
    assert other.from_envoy


# ---- no upstream, timeouts ----------------------------------------------------------------------


async def test_no_server_is_503_json_for_rest_and_unavailable_for_grpc(tmp_path: Path) -> None:
    async with running_envoy(tmp_path, [free_port()], wait_healthy=False) as envoy:
        reply = await http("GET", envoy.url("/v1/status"), headers={"x-api-key": "ww_x"})
        assert_json_error(reply, 503, 14)
        assert reply.from_envoy
        async with aio.insecure_channel(envoy.grpc_target) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                await status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest())
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not raised.value.details().startswith("{")


# ---- stream timing and timeouts, against a stand-in with exact timing ----------------------------


class StreamingStandIn(download_pb2_grpc.DownloadServiceServicer):
    """Answers WatchDownload with exact timing (refusal before the first message, events 0.4 s
    apart, a final event) and GetDownload slowly, to pin down what Envoy does with them."""

    async def WatchDownload(
        self, request: download_pb2.WatchDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[download_pb2.WatchDownloadResponse]:
        if request.id != "job-1":
            await context.abort_with_status(
                to_grpc_status(status_for(errors.NotFound("download", request.id), "stand-in"))
            )
        for sequence in range(1, 4):
            yield download_pb2.WatchDownloadResponse(
                sequence=sequence,
                download_id=request.id,
                progress=download_pb2.DownloadProgress(percent=sequence * 25.0),
            )
            await asyncio.sleep(0.4)
        yield download_pb2.WatchDownloadResponse(
            sequence=4, download_id=request.id, finished=download_pb2.FinishedEvent()
        )

    async def GetDownload(
        self, request: download_pb2.GetDownloadRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.GetDownloadResponse:
        await asyncio.sleep(3)  # longer than the unary timeout this test's Envoy is given
        return download_pb2.GetDownloadResponse()


@pytest_asyncio.fixture(scope="module")
async def stand_in_envoy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Envoy]:
    server = aio.server()
    download_pb2_grpc.add_DownloadServiceServicer_to_server(StreamingStandIn(), server)  # type: ignore[abstract]
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with running_envoy(
            tmp_path_factory.mktemp("stand-in"), [port], extra_args=["--unary-timeout", "1"]
        ) as envoy:
            yield envoy
    finally:
        await server.stop(grace=0)


async def test_watch_is_server_sent_events_delivered_as_produced(stand_in_envoy: Envoy) -> None:
    started = time.monotonic()
    async with event_stream(stand_in_envoy.url("/v1/downloads/job-1:watch", afterSequence=0)) as events:
        assert events.status == 200
        assert events.headers["content-type"] == "text/event-stream"
        received = [event async for event in events]
    assert [e["sequence"] for e in received] == ["1", "2", "3", "4"]
    assert received[0]["progress"]["percent"] == 25
    assert received[0]["progress"]["bytesTotal"] == "0"  # zero values printed in events too
    assert "finished" in received[-1]
    # The first event arrived long before the stream ended: nothing was held back.
    assert events.arrivals[0] - started < 0.35
    assert events.arrivals[-1] - events.arrivals[0] > 1.0


async def test_watch_refused_before_the_first_event_is_a_json_error(stand_in_envoy: Envoy) -> None:
    async with event_stream(stand_in_envoy.url("/v1/downloads/nope:watch")) as events:
        assert events.error is not None
        body = assert_json_error(events.error, 404, 5, "NOT_FOUND")
        assert detail(body, "ResourceInfo")["resourceName"] == "nope"


async def test_a_slow_unary_call_is_cut_at_the_route_timeout_with_504_json(stand_in_envoy: Envoy) -> None:
    reply = await http("GET", stand_in_envoy.url("/v1/downloads/slow"))
    assert_json_error(reply, 504, 4)
    assert reply.from_envoy


async def test_a_qr_login_over_rest_is_server_sent_events_and_a_closed_stream_ends_it(
    engine_behind_envoy: tuple[Harness, Envoy],
) -> None:
    harness, envoy = engine_behind_envoy
    key = dict(harness.admin)
    account_id = await harness.add_account("qr_rest", "pw")
    url = envoy.url(f"/v1/admin/steam-accounts/{account_id}:startQrLogin")
    rows = [
        "".join("#" if r[i : i + 2] == "██" else " " for i in range(0, len(r), 2))
        for r in harness.steam.qr_rows(0)
    ]
    async with event_stream(url, headers=key, method="POST", json_body={}) as events:
        assert events.status == 200, events.error
        assert events.headers["content-type"] == "text/event-stream"
        first = await anext(events)
        assert first["qrCode"]["rows"] == rows
        assert base64.b64decode(first["qrCode"]["png"]).startswith(b"\x89PNG")
        assert first["qrCode"]["svg"].startswith("<svg")
        # Held meanwhile: a second login is refused as JSON before any event.
        async with event_stream(url, headers=key, method="POST", json_body={}) as refused:
            assert refused.error is not None
            body = assert_json_error(refused.error, 400, 9, "STEAM_ACCOUNT_BUSY")
            assert "qr_rest" in body["message"]
        harness.steam.scan_qr("qr_rest")
        received = [event async for event in events if "heartbeat" not in event]
    assert received[-1]["succeeded"]["hasRememberedLogin"] is True

    # A REST client that goes away: Envoy resets the call, the server stops DepotDownloader.
    async with event_stream(url, headers=key, method="POST", json_body={}) as events:
        assert "qrCode" in await anext(events)
    [*_, run] = harness.steam.runs()
    assert "-qr" in run["argv"]
    deadline = time.monotonic() + 10
    while run["end"] is None:
        assert time.monotonic() < deadline, "DepotDownloader still runs after the client left"
        await asyncio.sleep(0.05)
        [*_, run] = harness.steam.runs()
    assert run["exit_code"] == 143  # SIGTERM


# ---- several instances ----------------------------------------------------------------------------


@pytest.mark.postgres
async def test_two_instances_share_the_load_and_one_stopping_loses_no_request(
    postgres: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres.create()
    admin = await prepare_database(url)
    key = {"x-api-key": admin.api_key}
    async with servers_behind_envoy(tmp_path, url, count=2) as (envoy, servers):
        # Round robin, per request: REST calls and gRPC calls over one channel alike.
        rest = [await http("GET", envoy.url("/v1/status"), headers=key) for _ in range(6)]
        assert {r.json()["instanceId"] for r in rest} == {s.instance_id for s in servers}
        async with aio.insecure_channel(envoy.grpc_target) as channel:
            stub = status_pb2_grpc.StatusServiceStub(channel)
            answers = [
                await stub.GetStatus(status_pb2.GetStatusRequest(), metadata=tuple(key.items()))
                for _ in range(6)
            ]
        assert {a.instance_id for a in answers} == {s.instance_id for s in servers}

        # Calls keep coming while one instance stops (as on SIGTERM): none of them fails.
        replies: list[Reply] = []
        stopping = asyncio.create_task(servers[0].stop(grace=1))
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            replies.append(await http("GET", envoy.url("/v1/status"), headers=key))
            await asyncio.sleep(0.02)
        await stopping
        assert [r.status for r in replies if r.status != 200] == []
        assert replies[-1].json()["instanceId"] == servers[1].instance_id
        await envoy.wait_healthy([servers[1].upstream])
        after = [await http("GET", envoy.url("/v1/status"), headers=key) for _ in range(4)]
        assert {r.json()["instanceId"] for r in after} == {servers[1].instance_id}


# ---- the download engine over REST ----------------------------------------------------------------

ITEM = 2831234567
SLOW_ITEM = 2831234568
FINAL_STATES = {"DOWNLOAD_STATE_SUCCEEDED", "DOWNLOAD_STATE_FAILED", "DOWNLOAD_STATE_CANCELLED"}


@pytest_asyncio.fixture
async def engine_behind_envoy(tmp_path: Path) -> AsyncIterator[tuple[Harness, Envoy]]:
    """A server with the test DepotDownloader (tests/support/harness.py) behind Envoy."""
    url = to_async_url(f"sqlite:///{tmp_path / 'engine.sqlite3'}")
    async for harness in harness_for(url, tmp_path):
        server = await harness.start(grpc_socket=proxy_socket())
        async with running_envoy(tmp_path / "envoy", [server.upstream]) as envoy:
            yield harness, envoy


async def _state(envoy: Envoy, key: dict[str, str], download_id: str) -> str:
    reply = await http("GET", envoy.url(f"/v1/downloads/{download_id}"), headers=key)
    assert reply.status == 200, reply
    return str(reply.json()["download"]["state"])


async def test_a_download_over_rest_watched_as_events_and_fetched_like_over_grpc(
    engine_behind_envoy: tuple[Harness, Envoy],
) -> None:
    harness, envoy = engine_behind_envoy
    key = dict(harness.admin)
    await harness.add_account("rest_we", "pw-rest")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 20_000 for i in range(10)}, behaviour={"file_delay": seconds(0.15)}
    )
    created = await http("POST", envoy.url("/v1/downloads"), json_body={"urlOrId": str(ITEM)}, headers=key)
    assert created.status == 200, created
    download = created.json()["download"]
    download_id = download["id"]
    assert download["state"] == "DOWNLOAD_STATE_QUEUED"
    assert download["workshopId"] == str(ITEM)

    # Server-Sent Events, each as it happens: the first arrives while the job is still going.
    url = envoy.url(f"/v1/downloads/{download_id}:watch", excludeLogs="true")
    received: list[dict[str, Any]] = []
    async with event_stream(url, headers=key) as events:
        assert events.status == 200
        assert events.headers["content-type"] == "text/event-stream"
        async for event in events:
            received.append(event)
            if len(received) == 1:
                assert await _state(envoy, key, download_id) not in FINAL_STATES
    assert any("progress" in event for event in received)
    assert "logLine" not in {name for event in received for name in event}
    assert received[-1]["finished"]["download"]["state"] == "DOWNLOAD_STATE_SUCCEEDED"
    assert events.arrivals[-1] - events.arrivals[0] > 0.5

    listed = await http("GET", envoy.url("/v1/downloads", states="DOWNLOAD_STATE_SUCCEEDED"), headers=key)
    assert [d["id"] for d in listed.json()["downloads"]] == [download_id]

    # The archive over REST is the one over gRPC, with what a client needs to check it.
    over_grpc, _ = await harness.fetch(download_id)
    whole = await http("GET", envoy.url(f"/v1/downloads/{download_id}/archive"), headers=key)
    assert whole.status == 200
    assert whole.body == over_grpc
    size = len(whole.body)
    assert whole.headers["content-type"] == "application/zip"
    assert whole.headers["content-disposition"].startswith(f'attachment; filename="{ITEM}')
    assert whole.headers["x-archive-size"] == str(size)
    assert whole.headers["x-archive-sha256"] == hashlib.sha256(whole.body).hexdigest()
    assert "content-range" not in whole.headers

    # Resumed with a Range header (as curl -C - does) or with the offset field: 206 and the rest.
    start = size - 5000
    rest = await http(
        "GET", envoy.url(f"/v1/downloads/{download_id}/archive"), headers={**key, "range": f"bytes={start}-"}
    )
    assert rest.status == 206
    assert rest.headers["content-range"] == f"bytes {start}-{size - 1}/{size}"
    assert whole.body[:start] + rest.body == whole.body
    middle = await http(
        "GET", envoy.url(f"/v1/downloads/{download_id}/archive"), headers={**key, "range": "bytes=100-199"}
    )
    assert middle.status == 206
    assert middle.headers["content-range"] == f"bytes 100-199/{size}"
    assert middle.body == whole.body[100:200]
    archive = f"/v1/downloads/{download_id}/archive"
    by_offset = await http("GET", envoy.url(archive, offset=start), headers=key)
    assert by_offset.status == 206
    assert by_offset.body == rest.body


async def test_a_running_download_is_cancelled_over_rest(engine_behind_envoy: tuple[Harness, Envoy]) -> None:
    harness, envoy = engine_behind_envoy
    key = dict(harness.admin)
    await harness.add_account("cancel_we", "pw-cancel")
    slow = {"file_delay": seconds(5)}
    harness.steam.add_item(SLOW_ITEM, files={f"f{i}.bin": 1000 for i in range(5)}, behaviour=slow)
    body = {"urlOrId": str(SLOW_ITEM)}
    created = await http("POST", envoy.url("/v1/downloads"), json_body=body, headers=key)
    download_id = created.json()["download"]["id"]
    await harness.wait_for(download_id, {download_pb2.DOWNLOAD_STATE_RUNNING})
    path = f"/v1/downloads/{download_id}"
    cancelled = await http("POST", envoy.url(f"{path}:cancel"), json_body={}, headers=key)
    assert cancelled.status == 200, cancelled
    await harness.wait_for(download_id)
    assert await _state(envoy, key, download_id) == "DOWNLOAD_STATE_CANCELLED"
    again = await http("POST", envoy.url(f"{path}:retry"), json_body={}, headers=key)
    assert again.status == 200, again
    not_ready = await http("GET", envoy.url(f"/v1/downloads/{download_id}/archive"), headers=key)
    assert_json_error(not_ready, 400, 9, "ARCHIVE_NOT_READY")


async def test_a_batch_over_rest_watched_as_events_and_fetched_as_one_zip(
    engine_behind_envoy: tuple[Harness, Envoy],
) -> None:
    harness, envoy = engine_behind_envoy
    key = dict(harness.admin)
    await harness.add_account("batch_rest_we", "pw-batch")
    harness.steam.add_item(ITEM, files={"project.json": b"{}", "scene.pkg": 30_000})
    harness.steam.add_item(SLOW_ITEM, behaviour={"missing": True})
    body = {"urlsOrIds": [str(ITEM), str(SLOW_ITEM)], "requestId": "rest-batch-1"}
    created = await http("POST", envoy.url("/v1/batches"), json_body=body, headers=key)
    assert created.status == 200, created
    batch = created.json()["batch"]
    assert (batch["state"], batch["totalCount"], batch["title"]) == ("BATCH_STATE_ACTIVE", 2, "2 items")

    received: list[dict[str, Any]] = []
    async with event_stream(envoy.url(f"/v1/batches/{batch['id']}:watch"), headers=key) as events:
        assert events.headers["content-type"] == "text/event-stream"
        async for event in events:
            received.append(event)
    finished = received[-1]["finished"]
    assert finished["state"] == "BATCH_STATE_PARTIALLY_SUCCEEDED"
    assert (finished["succeededCount"], finished["failedCount"]) == (1, 1)
    assert {e["downloadEvent"]["downloadId"] for e in received[:-1] if "downloadEvent" in e} == set(
        batch["downloadIds"]
    )

    path = f"/v1/batches/{batch['id']}/archive"
    whole = await http("GET", envoy.url(path), headers=key)
    assert whole.status == 200, whole
    assert whole.headers["content-type"] == "application/zip"
    assert whole.headers["x-archive-size"] == str(len(whole.body))
    assert unzip(whole.body) == {
        f"{ITEM}/{name}": data for name, data in harness.steam.expected_files(ITEM).items()
    }
    rest = await http("GET", envoy.url(path), headers={**key, "range": "bytes=100-"})
    assert rest.status == 206
    assert rest.headers["content-range"] == f"bytes 100-{len(whole.body) - 1}/{len(whole.body)}"
    assert rest.body == whole.body[100:]
