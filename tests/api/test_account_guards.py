"""Issue 15 items 16-18: the last admin stays, a disabled account is no oracle, names cannot hide
characters that reorder or fake what is shown (and the audit trail escapes them)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from grpc import aio

from tests.support.database import prepare_database
from tests.support.server import error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc

PASSWORD = "a-long-enough-password"
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def alone(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[aio.Channel, Metadata, str]]:
    """A server on a database of its own, whose bootstrap admin is the only admin:
    (channel, the admin's key, the admin's user id)."""
    first = await prepare_database(database_url)
    instance = WallWhaleServer(make_settings(database_url, tmp_path))
    await instance.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{instance.port}") as channel:
            admin: Metadata = (("x-api-key", first.api_key),)
            users = await admin_pb2_grpc.AdminServiceStub(channel).ListUsers(
                admin_pb2.ListUsersRequest(), metadata=admin
            )
            yield channel, admin, users.users[0].id
    finally:
        await instance.stop(grace=0)


def _update(user_id: str, path: str, **values: object) -> admin_pb2.UpdateUserRequest:
    return admin_pb2.UpdateUserRequest(
        user=admin_pb2.User(id=user_id, **values),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )


async def test_the_last_admin_cannot_demote_or_disable_itself(
    alone: tuple[aio.Channel, Metadata, str],
) -> None:
    channel, admin, admin_id = alone
    api = admin_pb2_grpc.AdminServiceStub(channel)
    for path, values in (("role", {"role": admin_pb2.USER_ROLE_USER}), ("disabled", {"disabled": True})):
        with pytest.raises(grpc.RpcError) as refused:
            await api.UpdateUser(_update(admin_id, path, **values), metadata=admin)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"user.{path}" in (refused.value.details() or "")

    # A disabled second admin does not count; an enabled one does.
    second = await api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="second@example.test", role=admin_pb2.USER_ROLE_ADMIN, disabled=True),
            password=PASSWORD,
        ),
        metadata=admin,
    )
    with pytest.raises(grpc.RpcError):
        await api.UpdateUser(_update(admin_id, "role", role=admin_pb2.USER_ROLE_USER), metadata=admin)
    await api.UpdateUser(_update(second.user.id, "disabled", disabled=False), metadata=admin)
    await api.UpdateUser(_update(admin_id, "disabled", disabled=True), metadata=admin)


async def test_a_disabled_account_answers_like_a_wrong_password(
    channel: aio.Channel, admin: Metadata
) -> None:
    api = admin_pb2_grpc.AdminServiceStub(channel)
    email = f"d{secrets.token_hex(4)}@example.test"
    await api.CreateUser(
        admin_pb2.CreateUserRequest(user=admin_pb2.User(email=email, disabled=True), password=PASSWORD),
        metadata=admin,
    )
    answers = []
    for password in (PASSWORD, "not-the-password-at-all"):
        with pytest.raises(grpc.RpcError) as refused:
            await auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(email=email, password=password)
            )
        error = refused.value
        answers.append((error.code(), error.details(), error_info(error).reason))
    assert answers[0] == answers[1]
    assert answers[0][2] == "CREDENTIALS_INVALID"


@pytest.mark.parametrize("name", ["evil\u202etxt.exe", "two\nlines", "bell\x07", "isolate\u2066x\u2069"])
async def test_control_and_bidi_characters_are_refused_in_names(
    channel: aio.Channel, admin: Metadata, name: str
) -> None:
    api = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(grpc.RpcError) as create:
        await api.CreateUser(
            admin_pb2.CreateUserRequest(
                user=admin_pb2.User(email=f"n{secrets.token_hex(4)}@example.test", display_name=name),
                password=PASSWORD,
            ),
            metadata=admin,
        )
    assert create.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user.display_name" in (create.value.details() or "")

    user = await api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email=f"n{secrets.token_hex(4)}@example.test"), password=PASSWORD
        ),
        metadata=admin,
    )
    with pytest.raises(grpc.RpcError) as update:
        await api.UpdateUser(_update(user.user.id, "display_name", display_name=name), metadata=admin)
    assert update.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user.display_name" in (update.value.details() or "")

    with pytest.raises(grpc.RpcError) as key:
        await api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name=name, scopes=["download:read"])),
            metadata=admin,
        )
    assert key.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "api_key.name" in (key.value.details() or "")


async def test_the_audit_trail_escapes_control_and_bidi_characters(
    channel: aio.Channel, admin: Metadata
) -> None:
    marker = secrets.token_hex(4)
    email = f"{marker}\u202eevil\x1b[31m@example.test"
    since = timestamp_pb2.Timestamp(seconds=int(time.time()) - 5)
    with pytest.raises(grpc.RpcError):
        await auth_pb2_grpc.AuthServiceStub(channel).Login(
            auth_pb2.LoginRequest(email=email, password="not-the-password-at-all")
        )
    api = admin_pb2_grpc.AdminServiceStub(channel)
    recorded = None
    for _ in range(50):
        events = await api.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(action="auth.login", start_time=since, page_size=100),
            metadata=admin,
        )
        found = [e for e in events.audit_events if marker in e.details.fields["email"].string_value]
        if found:
            recorded = found[0].details.fields["email"].string_value
            break
        await asyncio.sleep(0.1)
    assert recorded == f"{marker}\\u202eevil\\u001b[31m@example.test"
