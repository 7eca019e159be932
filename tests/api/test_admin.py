"""AdminService users and API keys, through the real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from tests.support.database import add_key
from tests.support.server import Metadata, error_info
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, status_pb2, status_pb2_grpc


def _violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


def _email() -> str:
    return f"user-{secrets.token_hex(4)}@example.test"


async def test_users_are_created_read_listed_updated_and_deleted(
    channel: aio.Channel, admin: Metadata
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    email = _email()
    created = (
        await stub.CreateUser(
            admin_pb2.CreateUserRequest(
                user=admin_pb2.User(email=email.upper(), display_name="Ann"), password="correct horse battery"
            ),
            metadata=admin,
        )
    ).user
    assert (created.email, created.role) == (email, admin_pb2.USER_ROLE_USER)
    assert (await stub.GetUser(admin_pb2.GetUserRequest(id=created.id), metadata=admin)).user == created

    updated = (
        await stub.UpdateUser(
            admin_pb2.UpdateUserRequest(
                user=admin_pb2.User(id=created.id, display_name="Anne", role=admin_pb2.USER_ROLE_ADMIN),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=admin,
        )
    ).user
    assert (updated.display_name, updated.role) == ("Anne", admin_pb2.USER_ROLE_USER)  # role not in the mask

    listed = await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains=email[:12]), metadata=admin)
    assert [u.id for u in listed.users] == [created.id]

    await stub.DeleteUser(admin_pb2.DeleteUserRequest(id=created.id), metadata=admin)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.GetUser(admin_pb2.GetUserRequest(id=created.id), metadata=admin)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_user_input_names_every_field(channel: aio.Channel, admin: Metadata) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateUser(
            admin_pb2.CreateUserRequest(user=admin_pb2.User(email="not-an-email"), password="short"),
            metadata=admin,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(_violations(raised.value)) == {"user.email", "password"}

    email = _email()
    request = admin_pb2.CreateUserRequest(user=admin_pb2.User(email=email), password="long enough password")
    await stub.CreateUser(request, metadata=admin)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateUser(request, metadata=admin)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_refused_caller_changes_nothing(
    channel: aio.Channel, admin: Metadata, migrated_database_url: str
) -> None:
    """The original answered 403 and created the admin anyway; here nothing is written."""
    downloader = (("x-api-key", await add_key(migrated_database_url, ["download:*"])),)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    email = _email()
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateUser(
            admin_pb2.CreateUserRequest(
                user=admin_pb2.User(email=email, role=admin_pb2.USER_ROLE_ADMIN), password="x" * 20
            ),
            metadata=downloader,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name="mine", scopes=["admin:*"])),
            metadata=downloader,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains=email), metadata=admin)
    assert listed.total_size == 0


async def test_api_keys_work_at_once_and_stop_working_when_revoked(
    channel: aio.Channel, admin: Metadata
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    created = await stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(
                name="ci runner",
                scopes=["download:read", "download:write"],
                limits=admin_pb2.ApiKeyLimits(requests_per_minute=60, daily_download_quota=0),
            )
        ),
        metadata=admin,
    )
    key = created.plaintext_key
    assert key.startswith(created.api_key.prefix)
    assert created.api_key.scopes == ["download:read", "download:write"]

    status = status_pb2_grpc.StatusServiceStub(channel)
    assert (await status.GetStatus(status_pb2.GetStatusRequest(), metadata=(("x-api-key", key),))).database.ok

    listed = await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin)
    assert created.api_key.id in {k.id for k in listed.api_keys}
    assert key not in str(listed)  # the plaintext is shown once, at creation

    revoked = await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=created.api_key.id), metadata=admin)
    assert revoked.api_key.HasField("revoke_time")
    with pytest.raises(grpc.RpcError) as raised:
        await status.GetStatus(status_pb2.GetStatusRequest(), metadata=(("x-api-key", key),))
    assert error_info(raised.value).reason == "API_KEY_REVOKED"


async def test_api_key_input_is_validated_and_updates_follow_the_mask(
    channel: aio.Channel, admin: Metadata
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(
                    name="", scopes=["download:everything"], limits=admin_pb2.ApiKeyLimits(burst=-1)
                )
            ),
            metadata=admin,
        )
    assert set(_violations(raised.value)) == {"api_key.name", "api_key.scopes", "api_key.limits.burst"}

    key = (
        await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name="k", scopes=["download:read"])),
            metadata=admin,
        )
    ).api_key
    updated = (
        await stub.UpdateApiKey(
            admin_pb2.UpdateApiKeyRequest(
                api_key=admin_pb2.ApiKey(id=key.id, name="ignored", scopes=["download:*"]),
                update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
            ),
            metadata=admin,
        )
    ).api_key
    assert (updated.name, list(updated.scopes)) == ("k", ["download:*"])
    with pytest.raises(grpc.RpcError) as raised:
        await stub.UpdateApiKey(
            admin_pb2.UpdateApiKeyRequest(
                api_key=admin_pb2.ApiKey(id=key.id), update_mask=field_mask_pb2.FieldMask(paths=["key_hash"])
            ),
            metadata=admin,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_listing_pages_through_every_user_once(channel: aio.Channel, admin: Metadata) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    marker = secrets.token_hex(3)
    for n in range(5):
        await stub.CreateUser(
            admin_pb2.CreateUserRequest(
                user=admin_pb2.User(email=f"page-{marker}-{n}@example.test"), password="long enough password"
            ),
            metadata=admin,
        )
    seen: list[str] = []
    token = ""
    while True:
        response = await stub.ListUsers(
            admin_pb2.ListUsersRequest(page_size=2, page_token=token, email_contains=marker), metadata=admin
        )
        assert response.total_size == 5
        seen += [u.email for u in response.users]
        token = response.next_page_token
        if not token:
            break
    assert sorted(seen) == [f"page-{marker}-{n}@example.test" for n in range(5)]
    with pytest.raises(grpc.RpcError) as raised:  # a token is bound to its filters
        await stub.ListUsers(
            admin_pb2.ListUsersRequest(page_size=2, page_token=token or "e30"), metadata=admin
        )
    assert error_info(raised.value).reason == "INVALID_PAGE_TOKEN"


async def test_the_audit_trail_is_listed_and_filtered(
    channel: aio.Channel, admin: Metadata, admin_key: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    key = (
        await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name="audited", scopes=["download:read"])),
            metadata=(*admin, ("x-request-id", "audit-list-1")),
        )
    ).api_key
    await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=key.id), metadata=admin)
    with pytest.raises(grpc.RpcError):  # a denial, from nobody
        await stub.GetStats(admin_pb2.GetStatsRequest())

    events: list[admin_pb2.AuditEvent] = []
    for _ in range(50):  # the writer stores events in batches, every half second
        events = list(
            (
                await stub.ListAuditEvents(
                    admin_pb2.ListAuditEventsRequest(resource=f"api-keys/{key.id}"), metadata=admin
                )
            ).audit_events
        )
        if len(events) == 2:
            break
        await asyncio.sleep(0.1)
    assert [e.action for e in events] == ["api_key.revoke", "api_key.create"]  # newest first
    created = events[1]
    assert created.outcome == admin_pb2.AUDIT_OUTCOME_SUCCESS
    assert created.actor.kind == admin_pb2.ACTOR_KIND_API_KEY
    assert created.request_id == "audit-list-1"
    assert created.details["prefix"] == key.prefix
    assert admin_key not in str(created)

    prefixed = await stub.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(action="api_key.", actor_id=created.actor.id), metadata=admin
    )
    assert {e.action for e in prefixed.audit_events} <= {"api_key.create", "api_key.revoke", "api_key.update"}
    denied = await stub.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(outcome=admin_pb2.AUDIT_OUTCOME_DENIED, action="stats.get"),
        metadata=admin,
    )
    assert denied.total_size >= 1
    assert all(e.actor.kind == admin_pb2.ACTOR_KIND_ANONYMOUS for e in denied.audit_events)


async def test_stats_count_what_is_there(channel: aio.Channel, admin: Metadata) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    before = await stub.GetStats(admin_pb2.GetStatsRequest(), metadata=admin)
    await stub.CreateUser(
        admin_pb2.CreateUserRequest(user=admin_pb2.User(email=_email()), password="long enough password"),
        metadata=admin,
    )
    key = (
        await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name="counted", scopes=["download:read"])),
            metadata=admin,
        )
    ).api_key
    after = await stub.GetStats(admin_pb2.GetStatsRequest(), metadata=admin)
    assert after.users == before.users + 1
    assert after.api_keys_active == before.api_keys_active + 1
    await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=key.id), metadata=admin)
    assert (
        await stub.GetStats(admin_pb2.GetStatsRequest(), metadata=admin)
    ).api_keys_active == before.api_keys_active
    assert after.downloads_total == sum(c.count for c in after.downloads_by_state)
