"""Defects the hostile-input properties found (test_hostile_input.py), each pinned down by the
smallest input that showed it, on both database backends."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from grpc import aio
from grpc_status import rpc_status

from tests.support.database import PostgresDatabases, prepare_database, wait_for_audit_events
from tests.support.hostile import LEAKS
from tests.support.server import Metadata, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core.bootstrap import BootstrapResult
from wallwhale.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)


async def _refusal(call: object) -> grpc.RpcError:
    try:
        await call  # type: ignore[misc]
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")


def _violations(error: grpc.RpcError) -> list[str]:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status: {error.code()} {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [violation.field for violation in bad.field_violations]
    return []


@pytest.mark.parametrize(
    "stamp",
    [
        timestamp_pb2.Timestamp(seconds=0, nanos=-1),
        timestamp_pb2.Timestamp(seconds=0, nanos=2**31 - 1),
        timestamp_pb2.Timestamp(seconds=2**63 - 1),
        timestamp_pb2.Timestamp(seconds=-(2**63)),
    ],
)
async def test_timestamps_out_of_range_are_invalid_argument_naming_the_field(
    channel: aio.Channel, admin: Metadata, stamp: timestamp_pb2.Timestamp
) -> None:
    downloads, admin_api = (
        download_pb2_grpc.DownloadServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
    )
    for call, field in (
        (
            downloads.ListDownloads(
                download_pb2.ListDownloadsRequest(create_time_after=stamp), metadata=admin
            ),
            "create_time_after",
        ),
        (
            downloads.ListDownloads(
                download_pb2.ListDownloadsRequest(create_time_before=stamp), metadata=admin
            ),
            "create_time_before",
        ),
        (
            admin_api.ListAuditEvents(admin_pb2.ListAuditEventsRequest(start_time=stamp), metadata=admin),
            "start_time",
        ),
        (
            admin_api.ListAuditEvents(admin_pb2.ListAuditEventsRequest(end_time=stamp), metadata=admin),
            "end_time",
        ),
        (
            admin_api.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(
                    api_key=admin_pb2.ApiKey(name="k", scopes=["download:read"], expire_time=stamp)
                ),
                metadata=admin,
            ),
            "api_key.expire_time",
        ),
    ):
        error = await _refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert _violations(error) == [field]


async def test_a_refusal_echoing_a_huge_input_still_reaches_the_client_whole(
    channel: aio.Channel, admin: Metadata
) -> None:
    """Found with UpdateSteamAccount(id="\\r\\n" * 10_000): the echo made the trailers too big for
    the client, which saw RESOURCE_EXHAUSTED without the status details."""
    admin_api = admin_pb2_grpc.AdminServiceStub(channel)
    for huge in ("\r\n" * 10_000, "é" * 100_000, "A" * 300_000):
        error = await _refusal(admin_api.GetUser(admin_pb2.GetUserRequest(id=huge), metadata=admin))
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
        assert rpc_status.from_call(error) is not None  # type: ignore[arg-type]
        assert len((error.details() or "").encode()) <= 512
    scopes = [f"{n}{'x' * 5000}" for n in range(20)]
    error = await _refusal(
        admin_api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name="k", scopes=scopes)), metadata=admin
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 1 <= len(_violations(error)) <= 5
    assert set(_violations(error)) == {"api_key.scopes"}


def _token(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


async def test_forged_page_tokens_are_invalid_argument(channel: aio.Channel, admin: Metadata) -> None:
    """Found with {"o": 1e400}: json reads it as infinity, and int(inf) raised OverflowError."""
    admin_api = admin_pb2_grpc.AdminServiceStub(channel)
    # A real token tells the fingerprint of the listing's filters; only its offset is forged.
    await admin_api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="paging@example.test"), password="long-password-1"
        ),
        metadata=admin,
    )
    real = (
        await admin_api.ListUsers(admin_pb2.ListUsersRequest(page_size=1), metadata=admin)
    ).next_page_token
    fingerprint = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))["f"]
    for offset in (
        "1e400",
        "Infinity",
        "-Infinity",
        "NaN",
        str(2**63),
        str(10**30),
        "1.5",
        "true",
        '"1"',
        "[1]",
    ):
        forged = _token(f'{{"o": {offset}, "f": "{fingerprint}"}}')
        error = await _refusal(
            admin_api.ListUsers(admin_pb2.ListUsersRequest(page_size=1, page_token=forged), metadata=admin)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (offset, error.details())
        assert _violations(error) == ["page_token"]
    deep = _token("[" * 100_000)
    error = await _refusal(admin_api.ListUsers(admin_pb2.ListUsersRequest(page_token=deep), metadata=admin))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


async def test_nul_in_any_string_is_invalid_argument_naming_the_field(
    channel: aio.Channel, admin: Metadata
) -> None:
    """Found with Login(email="<id>\\x00"): PostgreSQL refuses NUL in text, which was INTERNAL there
    (and stored as sent on SQLite)."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    admin_api = admin_pb2_grpc.AdminServiceStub(channel)
    for call, field in (
        (auth.Login(auth_pb2.LoginRequest(email="a\x00@example.test", password="pw")), "email"),
        (admin_api.GetUser(admin_pb2.GetUserRequest(id="\x00"), metadata=admin), "id"),
        (
            admin_api.CreateUser(
                admin_pb2.CreateUserRequest(
                    user=admin_pb2.User(email="nul@example.test", display_name="a\x00b"),
                    password="long-password-1",
                ),
                metadata=admin,
            ),
            "user.display_name",
        ),
        (
            admin_api.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(
                    api_key=admin_pb2.ApiKey(name="k", scopes=["download:read", "\x00"])
                ),
                metadata=admin,
            ),
            "api_key.scopes",
        ),
    ):
        error = await _refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.code(), error.details())
        assert _violations(error) == [field]


async def test_a_hostile_request_does_not_stall_the_audit_trail(
    channel: aio.Channel, admin: Metadata, migrated_database_url: str
) -> None:
    """Found on PostgreSQL: DeleteDownload(id="\\x00...") and an x-request-id of 65 to 128 characters
    made audit rows that did not fit their columns; the refused batch was retried forever, and no
    audit event was stored after it."""
    downloads = download_pb2_grpc.DownloadServiceStub(channel)
    for bad_id, request_id in (("\x00" * 10, "n" * 10), ("d" * 5000, "r" * 64), ("x", "q" * 100)):
        await _refusal(
            downloads.DeleteDownload(
                download_pb2.DeleteDownloadRequest(id=bad_id), metadata=(*admin, ("x-request-id", request_id))
            )
        )
    marker = f"after-{secrets.token_hex(6)}"
    await _refusal(
        downloads.DeleteDownload(
            download_pb2.DeleteDownloadRequest(id="x"), metadata=(*admin, ("x-request-id", marker))
        )
    )
    [event] = await wait_for_audit_events(migrated_database_url, marker)
    assert event.action == "download.delete"
    [long_id] = await wait_for_audit_events(migrated_database_url, "r" * 64)
    assert long_id.resource is not None
    assert len(long_id.resource) <= 128


@pytest.mark.postgres
async def test_a_failure_outside_the_handlers_is_internal_without_the_exception_text(
    postgres: PostgresDatabases, tmp_path: Path
) -> None:
    """Found with a signed access token whose `sid` was a list: the database driver raised inside the
    authentication interceptor, outside ErrorMapping, and grpc answered UNKNOWN with the exception's
    text (SQL, parameters, driver names). Here the database goes away while the server runs."""
    url = postgres.create()
    first = await prepare_database(url)
    server = WallWhaleServer(make_settings(url, tmp_path))
    await server.start()
    try:
        await server.engine.dispose()
        postgres.drop(url)
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            error = await _refusal(
                status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                    status_pb2.GetStatusRequest(), metadata=(("x-api-key", first.api_key),), timeout=30
                )
            )
        assert error.code() == grpc.StatusCode.INTERNAL, error.details()
        assert rpc_status.from_call(error) is not None  # type: ignore[arg-type]
        assert not LEAKS.search(error.details() or ""), error.details()
    finally:
        await server.stop(grace=0)


async def test_workshop_ids_past_a_signed_bigint_are_invalid_argument(
    channel: aio.Channel, admin: Metadata
) -> None:
    """Found with CreateDownload(url_or_id="9223372036854775808"): accepted as a uint64, then INTERNAL
    when the database's signed BIGINT could not take it (the same for the ListDownloads filter)."""
    downloads = download_pb2_grpc.DownloadServiceStub(channel)
    for text in (
        str(2**63),
        str(2**64 - 1),
        f"https://steamcommunity.com/sharedfiles/filedetails/?id={2**63}",
    ):
        error = await _refusal(
            downloads.CreateDownload(download_pb2.CreateDownloadRequest(url_or_id=text), metadata=admin)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, error.details())
        assert _violations(error) == ["url_or_id"]
    error = await _refusal(
        downloads.ListDownloads(download_pb2.ListDownloadsRequest(workshop_id=2**63), metadata=admin)
    )
    assert _violations(error) == ["workshop_id"]
    listed = await downloads.ListDownloads(
        download_pb2.ListDownloadsRequest(workshop_id=2**63 - 1), metadata=admin
    )
    assert listed.total_size == 0


async def test_signed_access_tokens_with_ids_of_another_type_are_unauthenticated(
    migrated_database_url: str, tmp_path: Path, first_admin: BootstrapResult
) -> None:
    """Found with a token (signed with the server's key) whose `sid` was a list: the driver raised on
    SQLite, and on PostgreSQL the session check compared with an array and let the token in."""
    import jwt

    secret = "regression-secret-" + "k" * 50
    server = WallWhaleServer(make_settings(migrated_database_url, tmp_path, jwt_secret=secret))
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            login = await auth.Login(
                auth_pb2.LoginRequest(email=first_admin.email, password=first_admin.password)
            )
            claims = jwt.decode(
                login.tokens.access_token, secret, algorithms=["HS256"], audience="wallwhale-api"
            )
            for changed in ({"sid": ["x"]}, {"sid": {"a": 1}}, {"sid": 5}, {"sid": None}):
                token = jwt.encode({**claims, **changed}, secret, algorithm="HS256")
                error = await _refusal(
                    auth.GetCaller(
                        auth_pb2.GetCallerRequest(), metadata=(("authorization", f"Bearer {token}"),)
                    )
                )
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (changed, error.details())
    finally:
        await server.stop(grace=0)


async def test_a_string_that_is_not_utf8_is_invalid_argument_not_a_parser_error(
    channel: aio.Channel, admin: Metadata
) -> None:
    # Envoy's transcoder turns `/v1/admin/steam-accounts/%C0%AE%C0%AE%2F` into these bytes: an
    # overlong (invalid) UTF-8 encoding in field 1, which grpc's deserializer rejects.
    bad = b"\x0a\x05\xc0\xae\xc0\xae/"
    for method in (
        "/wallwhale.v1.AdminService/DeleteSteamAccount",
        "/wallwhale.v1.DownloadService/GetDownload",
    ):
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        error = await _refusal(call(bad, metadata=admin))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
        assert _violations(error) == ["request"]
        assert "DecodeError" not in (error.details() or "")
    stream = channel.unary_stream(
        "/wallwhale.v1.DownloadService/WatchDownload", request_serializer=None, response_deserializer=None
    )
    error = await _refusal(stream(bad, metadata=admin).read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
