"""Credentials and scopes, checked before anything else, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.support.database import add_key
from tests.support.server import Metadata, error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core import api_keys
from wallwhale.db.types import utcnow
from wallwhale.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)


async def _status_error(channel: aio.Channel, metadata: Metadata) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=metadata
        )
    return raised.value


async def test_calls_without_credentials_are_unauthenticated(channel: aio.Channel) -> None:
    error = await _status_error(channel, ())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == "CREDENTIALS_MISSING"

    stream = download_pb2_grpc.DownloadServiceStub(channel).WatchDownload(
        download_pb2.WatchDownloadRequest(id="x")
    )
    with pytest.raises(grpc.RpcError) as raised:
        async for _ in stream:
            pass
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((("x-api-key", "not-a-key"),), "CREDENTIALS_INVALID"),
        ((("x-api-key", api_keys.generate_key()),), "CREDENTIALS_INVALID"),  # well-formed, unknown
        ((("authorization", "Basic YWRtaW46YWRtaW4="),), "CREDENTIALS_INVALID"),
        ((("authorization", "Bearer "),), "CREDENTIALS_INVALID"),
    ],
)
async def test_bad_credentials_are_unauthenticated(
    channel: aio.Channel, metadata: Metadata, reason: str
) -> None:
    error = await _status_error(channel, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == reason


async def test_a_key_works_as_a_bearer_token(channel: aio.Channel, admin_key: str) -> None:
    response = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
        status_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {admin_key}"),)
    )
    assert response.database.ok


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"revoke_time": utcnow()}, "API_KEY_REVOKED"),
        ({"disabled": True}, "API_KEY_DISABLED"),
        ({"expire_time": utcnow() - timedelta(seconds=1)}, "API_KEY_EXPIRED"),
        ({"user_disabled": True}, "USER_DISABLED"),
    ],
)
async def test_revoked_disabled_and_expired_keys_are_refused(
    channel: aio.Channel, migrated_database_url: str, fields: dict[str, object], reason: str
) -> None:
    key = await add_key(migrated_database_url, ["download:*"], **fields)
    error = await _status_error(channel, (("x-api-key", key),))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == reason


async def test_expiry_follows_the_server_clock(migrated_database_url: str, tmp_path: Path) -> None:
    key = await add_key(migrated_database_url, ["download:read"], expire_time=utcnow() + timedelta(hours=1))
    later = WallWhaleServer(
        make_settings(migrated_database_url, tmp_path), clock=lambda: utcnow() + timedelta(hours=2)
    )
    await later.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{later.port}") as channel:
            error = await _status_error(channel, (("x-api-key", key),))
    finally:
        await later.stop(grace=0)
    assert error_info(error).reason == "API_KEY_EXPIRED"


async def test_a_missing_scope_is_refused_before_the_method_runs(
    channel: aio.Channel, migrated_database_url: str
) -> None:
    reader = (("x-api-key", await add_key(migrated_database_url, ["download:read"])),)
    stub = download_pb2_grpc.DownloadServiceStub(channel)
    # A valid request: only the missing scope can refuse it.
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateDownload(download_pb2.CreateDownloadRequest(url_or_id="1"), metadata=reader)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "SCOPE_MISSING"
    assert "download:write" in (raised.value.details() or "")
    # The scope it has lets it through to the method, which looks the download up.
    with pytest.raises(grpc.RpcError) as raised:
        await stub.GetDownload(download_pb2.GetDownloadRequest(id="x"), metadata=reader)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_wildcard_scopes_cover_their_family_only(
    channel: aio.Channel, migrated_database_url: str
) -> None:
    downloader = (("x-api-key", await add_key(migrated_database_url, ["download:*"])),)
    created = await download_pb2_grpc.DownloadServiceStub(channel).CreateDownload(
        download_pb2.CreateDownloadRequest(url_or_id="1"), metadata=downloader
    )
    assert created.download.workshop_id == 1
    with pytest.raises(grpc.RpcError) as raised:
        await admin_pb2_grpc.AdminServiceStub(channel).ListUsers(
            admin_pb2.ListUsersRequest(), metadata=downloader
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
