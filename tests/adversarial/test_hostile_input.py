"""Hostile input, property-based: every request message of every RPC (from the descriptors, see
tests/support/hostile.py) sent to a real server over gRPC with the admin's key, a plain user's key, a
junk bearer token or no credentials.

For every answer: never INTERNAL, UNKNOWN, DATA_LOSS or a hang; every refusal carries the rich status
(ErrorInfo of domain "wallwhale"), INVALID_ARGUMENT names its field in a BadRequest, and nothing in
the status message, the details or the trailing metadata shows a traceback, an exception name, a
source file or a server path. After each property the server still serves.

Examples per RPC: HOSTILE_EXAMPLES (default 25), derandomized, so CI runs the same inputs every time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import message
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support import REPO_ROOT
from tests.support.database import PostgresDatabases, fresh_database
from tests.support.hostile import (
    FORGED_PAGE_TOKENS,
    Generator,
    Rpc,
    all_rpcs,
    decode_status,
    describe,
    hostile_strings,
    leak_in,
    strings_in,
    unpack_details,
)
from tests.support.hostile_server import Target, start_target
from wallwhale.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

# A failing example with a huge string is reported shortened (see describe()), not as its repr.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Generating overly large repr")]

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "25"))
NEVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # the server hung on the input
}
CALL_TIMEOUT = 30.0
MAX_MESSAGE = 4 * 1024 * 1024  # the server's grpc.max_receive_message_length

hostile_settings = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    # HOSTILE_NO_SHRINK=1 reports the first failing input as found (shrinking resends every step).
    phases=[p for p in Phase if p is not Phase.shrink or not os.environ.get("HOSTILE_NO_SHRINK")],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


async def _call(target: Target, rpc: Rpc, request: message.Message, metadata: Any) -> dict[str, Any]:
    """Sends one request; the status code, details and trailing metadata (first message of a stream)."""
    serializer, deserializer = rpc.request_class.SerializeToString, rpc.response_class.FromString
    if rpc.streaming:
        stream = target.channel.unary_stream(rpc.path, serializer, deserializer)
        call: Any = stream(request, metadata=metadata, timeout=CALL_TIMEOUT)
        try:
            first = await call.read()
            if first is aio.EOF:
                return {
                    "code": await call.code(),
                    "details": await call.details(),
                    "trailing": await call.trailing_metadata(),
                }
            return {"code": grpc.StatusCode.OK, "details": "", "trailing": ()}
        except aio.AioRpcError as error:
            return {"code": error.code(), "details": error.details(), "trailing": error.trailing_metadata()}
        finally:
            call.cancel()
    unary = target.channel.unary_unary(rpc.path, serializer, deserializer)
    try:
        await unary(request, metadata=metadata, timeout=CALL_TIMEOUT)
    except aio.AioRpcError as error:
        return {"code": error.code(), "details": error.details(), "trailing": error.trailing_metadata()}
    return {"code": grpc.StatusCode.OK, "details": "", "trailing": ()}


def check_answer(
    target: Target, rpc: Rpc, request: message.Message, metadata: Any, answer: dict[str, Any]
) -> None:
    code: grpc.StatusCode = answer["code"]
    where = f"{rpc} with {describe(request)} ({[k for k, _ in metadata]})"
    assert code not in NEVER, f"{code.name} {answer['details']!r} for {where}"
    if code is grpc.StatusCode.OK:
        return
    if request.ByteSize() > MAX_MESSAGE:
        # gRPC itself refuses a message over the server's limit, before any of our code runs.
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, where
        return
    trailing = tuple(answer["trailing"] or ())
    status = decode_status(trailing)
    assert status is not None, f"{code.name} without a rich status for {where}: {answer['details']!r}"
    assert status.code == code.value[0], where
    details = unpack_details(status)
    infos = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert infos, f"no ErrorInfo for {where}: {status}"
    assert infos[0].domain == "wallwhale", f"no wallwhale ErrorInfo for {where}: {status}"
    echoed = strings_in(request) | {value for _, value in metadata}
    forbidden = [str(REPO_ROOT), str(target.data_dir), sys.prefix, sys.base_prefix]
    texts = [answer["details"] or "", status.message, *(str(d) for d in details)]
    texts += [value for key, value in trailing if isinstance(value, str)]
    for text in texts:
        leak = leak_in(text, echoed, forbidden)
        assert leak is None, f"{leak!r} leaked in {text[:500]!r} for {where}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        bad = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
        assert bad, f"INVALID_ARGUMENT without BadRequest for {where}"
        assert bad[0].field_violations, f"INVALID_ARGUMENT without field violations for {where}"
        for violation in bad[0].field_violations:
            assert violation.field, f"{violation} for {where}"
            assert violation.description, f"{violation} for {where}"
        assert bad[0].field_violations[0].field in status.message, f"{status.message!r} for {where}"


async def assert_serving(target: Target) -> None:
    """The server answers health checks and real calls after the property."""
    health = await health_pb2_grpc.HealthStub(target.channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    status = await status_pb2_grpc.StatusServiceStub(target.channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=target.metadata("admin"), timeout=10
    )
    assert status.database.ok, status
    caller = admin_pb2_grpc.AdminServiceStub(target.channel)
    listed = await caller.ListUsers(
        admin_pb2.ListUsersRequest(), metadata=target.metadata("admin"), timeout=10
    )
    assert listed.total_size >= 2
    mine = await download_pb2_grpc.DownloadServiceStub(target.channel).ListDownloads(
        download_pb2.ListDownloadsRequest(), metadata=target.metadata("plain"), timeout=10
    )
    assert mine is not None


@pytest_asyncio.fixture(scope="module", params=["sqlite", "postgresql"])
async def target(
    request: pytest.FixtureRequest, postgres: PostgresDatabases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    directory = tmp_path_factory.mktemp(f"hostile-{request.param}")
    async for value in start_target(fresh_database(request.param, postgres, directory), directory):
        yield value


# The test's own identity stays out of reach of mutating calls (see Target.victims).
_PROTECTED_METHODS = {
    "RevokeApiKey",
    "UpdateApiKey",
    "UpdateUser",
    "DeleteUser",
    "DeleteDownload",
    "DeleteSteamAccount",
}
_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


def generator_for(target: Target, rpc: Rpc) -> Generator:
    mutating = rpc.method.name.startswith(
        ("Create", "Update", "Delete", "Revoke", "Cancel", "Retry", "Submit")
    )
    known = target.victims if mutating or rpc.method.name in _PROTECTED_METHODS else target.read
    strings = hostile_strings(known)
    return Generator(
        strings=strings,
        by_name={"page_token": st.one_of(st.sampled_from(FORGED_PAGE_TOKENS), strings)},
    )


RPCS = all_rpcs()


def test_every_rpc_of_every_service_is_covered() -> None:
    """The walk over the generated modules finds every service the server registers."""
    from wallwhale.rpc.access import SERVICES

    found = {rpc.path for rpc in RPCS}
    expected = {f"/{service.full_name}/{method.name}" for service in SERVICES for method in service.methods}
    assert expected <= found
    assert len(found) >= 39


@pytest.mark.timeout(900)
@pytest.mark.parametrize("rpc", RPCS, ids=str)
async def test_hostile_requests_never_break_the_server(target: Target, rpc: Rpc) -> None:
    generator = generator_for(target, rpc)
    requests = generator.message(rpc.method.input_type)
    who = st.sampled_from(("admin", "admin", "admin", "plain", "none", "junk-bearer"))
    extra = st.lists(
        st.tuples(
            st.sampled_from(("x-request-id", "user-agent", "x-forwarded-for", "x-api-key")), _PRINTABLE
        ),
        max_size=2,
    )

    @hostile_settings
    @given(request=requests, credentials=who, headers=extra)
    def run(request: message.Message, credentials: str, headers: list[tuple[str, str]]) -> None:
        metadata = target.metadata(credentials, tuple(headers))
        answer = asyncio.run_coroutine_threadsafe(_call(target, rpc, request, metadata), loop).result(120)
        check_answer(target, rpc, request, metadata, answer)

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(run)
    await assert_serving(target)
