"""A role bounds its keys, and nobody grants a scope they do not hold (issue 15 items 3 and 5)."""

from __future__ import annotations

import secrets

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio

from tests.support.server import error_info
from wallwhale.v1 import admin_pb2, admin_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


async def _user(api: admin_pb2_grpc.AdminServiceStub, admin: Metadata, role: int) -> admin_pb2.User:
    response = await api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email=f"u{secrets.token_hex(4)}@example.test", role=role),
            password="a-long-enough-password",
        ),
        metadata=admin,
    )
    return response.user


async def _key(
    api: admin_pb2_grpc.AdminServiceStub, metadata: Metadata, owner: str, scopes: list[str]
) -> admin_pb2.CreateApiKeyResponse:
    return await api.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name="k", owner_user_id=owner, scopes=scopes)),
        metadata=metadata,
    )


async def _widen(
    api: admin_pb2_grpc.AdminServiceStub, metadata: Metadata, key_id: str, scopes: list[str]
) -> None:
    await api.UpdateApiKey(
        admin_pb2.UpdateApiKeyRequest(
            api_key=admin_pb2.ApiKey(id=key_id, scopes=scopes),
            update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
        ),
        metadata=metadata,
    )


async def test_a_demoted_admins_key_loses_its_admin_scopes(channel: aio.Channel, admin: Metadata) -> None:
    api = admin_pb2_grpc.AdminServiceStub(channel)
    second = await _user(api, admin, admin_pb2.USER_ROLE_ADMIN)
    created = await _key(api, admin, second.id, ["admin:*", "download:*"])
    own: Metadata = (("x-api-key", created.plaintext_key),)
    await api.ListUsers(admin_pb2.ListUsersRequest(), metadata=own)  # an admin's key works

    await api.UpdateUser(
        admin_pb2.UpdateUserRequest(
            user=admin_pb2.User(id=second.id, role=admin_pb2.USER_ROLE_USER),
            update_mask=field_mask_pb2.FieldMask(paths=["role"]),
        ),
        metadata=admin,
    )
    with pytest.raises(grpc.RpcError) as refused:
        await api.ListUsers(admin_pb2.ListUsersRequest(), metadata=own)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # ... and cannot promote itself back.
    with pytest.raises(grpc.RpcError) as promote:
        await api.UpdateUser(
            admin_pb2.UpdateUserRequest(
                user=admin_pb2.User(id=second.id, role=admin_pb2.USER_ROLE_ADMIN),
                update_mask=field_mask_pb2.FieldMask(paths=["role"]),
            ),
            metadata=own,
        )
    assert promote.value.code() == grpc.StatusCode.PERMISSION_DENIED
    got = await api.GetUser(admin_pb2.GetUserRequest(id=second.id), metadata=admin)
    assert got.user.role == admin_pb2.USER_ROLE_USER


async def test_a_key_cannot_be_made_or_widened_beyond_its_owners_role(
    channel: aio.Channel, admin: Metadata
) -> None:
    api = admin_pb2_grpc.AdminServiceStub(channel)
    user = await _user(api, admin, admin_pb2.USER_ROLE_USER)
    with pytest.raises(grpc.RpcError) as create:
        await _key(api, admin, user.id, ["admin:*"])
    assert create.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "api_key.scopes" in (create.value.details() or "")

    created = await _key(api, admin, user.id, ["download:read"])
    with pytest.raises(grpc.RpcError) as widen:
        await _widen(api, admin, created.api_key.id, ["download:read", "admin:read"])
    assert widen.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "api_key.scopes" in (widen.value.details() or "")


async def test_admin_write_grants_only_the_scopes_it_holds(channel: aio.Channel, admin: Metadata) -> None:
    api = admin_pb2_grpc.AdminServiceStub(channel)
    me = await _user(api, admin, admin_pb2.USER_ROLE_ADMIN)
    limited = await _key(api, admin, me.id, ["admin:read", "admin:write"])
    caller: Metadata = (("x-api-key", limited.plaintext_key),)

    for scopes in (["admin:*"], ["download:read"]):
        with pytest.raises(grpc.RpcError) as create:
            await _key(api, caller, me.id, scopes)
        assert create.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(create.value).reason == "SCOPE_MISSING"
    # Not to itself either.
    with pytest.raises(grpc.RpcError) as widen:
        await _widen(api, caller, limited.api_key.id, ["admin:*"])
    assert widen.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(widen.value).reason == "SCOPE_MISSING"
    # What it holds, it may grant.
    granted = await _key(api, caller, me.id, ["admin:read"])
    assert list(granted.api_key.scopes) == ["admin:read"]
