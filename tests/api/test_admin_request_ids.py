"""request_id on CreateUser, CreateApiKey, CreateSteamAccount (and RetryDownload, which shares the
mechanism, core.idempotency): through the real server on SQLite and PostgreSQL, plus the race of two
transactions claiming one id, driven step by step on the real databases."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from sqlalchemy import select, update

from wallwhale.core import idempotency
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import IdempotencyRecord
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2, download_pb2_grpc

Metadata = tuple[tuple[str, str], ...]
PASSWORD = "correct horse battery"


def _details(error: grpc.RpcError, kind: type) -> object:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):  # type: ignore[attr-defined]
            message = kind()
            detail.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} in the status details")


def _assert_reused(error: grpc.RpcError) -> None:
    """The refusal of a used request_id: ALREADY_EXISTS, reason REQUEST_ID_REUSED, named in the message."""
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info = _details(error, error_details_pb2.ErrorInfo)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "REQUEST_ID_REUSED"
    assert "request_id" in (error.details() or "")


def _rid() -> str:
    return f"rid-{secrets.token_hex(8)}"


def _user(email: str, rid: str, password: str = PASSWORD) -> admin_pb2.CreateUserRequest:
    return admin_pb2.CreateUserRequest(
        user=admin_pb2.User(email=email, display_name="Ida"), password=password, request_id=rid
    )


def _key(name: str, rid: str, scopes: tuple[str, ...] = ("download:read",)) -> admin_pb2.CreateApiKeyRequest:
    return admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name=name, scopes=scopes), request_id=rid)


def _account(username: str, rid: str, password: str = "steam-pw") -> admin_pb2.CreateSteamAccountRequest:
    # Disabled: the database is shared by the tests of a backend, and an active account would run
    # downloads that other tests left queued.
    return admin_pb2.CreateSteamAccountRequest(
        steam_account=admin_pb2.SteamAccount(username=username, disabled=True),
        password=password,
        request_id=rid,
    )


async def _keys_named(stub: admin_pb2_grpc.AdminServiceStub, name: str, admin: Metadata) -> list[str]:
    listed = await stub.ListApiKeys(admin_pb2.ListApiKeysRequest(page_size=500), metadata=admin)
    return [key.id for key in listed.api_keys if key.name == name]


async def _accounts_named(stub: admin_pb2_grpc.AdminServiceStub, username: str, admin: Metadata) -> list[str]:
    listed = await stub.ListSteamAccounts(admin_pb2.ListSteamAccountsRequest(page_size=500), metadata=admin)
    return [account.id for account in listed.steam_accounts if account.username == username]


async def _second_admin(stub: admin_pb2_grpc.AdminServiceStub, admin: Metadata) -> Metadata:
    """Another caller: a second key of the same admin (a key's request_ids are its own), holding
    what the keys it makes are given (nobody grants a scope it does not hold)."""
    created = await stub.CreateApiKey(
        _key(f"second-{secrets.token_hex(3)}", "", ("admin:*", "download:*")), metadata=admin
    )
    return (("x-api-key", created.plaintext_key),)


async def test_a_repeated_create_user_answers_the_first_user(channel: aio.Channel, admin: Metadata) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    email, rid = f"ida-{secrets.token_hex(4)}@example.test", _rid()
    first = await stub.CreateUser(_user(email, rid), metadata=admin)
    again = await stub.CreateUser(_user(email.upper(), rid), metadata=admin)  # the same e-mail, spelled up
    assert again == first
    listed = await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains=email), metadata=admin)
    assert [user.id for user in listed.users] == [first.user.id]

    for other in (_user(f"x{email}", rid), _user(email, rid, password="another long password")):
        with pytest.raises(grpc.RpcError) as raised:
            await stub.CreateUser(other, metadata=admin)
        _assert_reused(raised.value)
    with pytest.raises(grpc.RpcError) as raised:  # the id is the caller's, whatever the RPC
        await stub.CreateSteamAccount(_account("ida_steam", rid), metadata=admin)
    _assert_reused(raised.value)

    await stub.DeleteUser(admin_pb2.DeleteUserRequest(id=first.user.id), metadata=admin)
    with pytest.raises(grpc.RpcError) as raised:  # not made again behind the deleting admin's back
        await stub.CreateUser(_user(email, rid), metadata=admin)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "request_id" in (raised.value.details() or "")


async def test_a_repeated_create_api_key_answers_the_first_key_without_its_plaintext(
    channel: aio.Channel, admin: Metadata
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    name, rid = f"ci-{secrets.token_hex(4)}", _rid()
    first = await stub.CreateApiKey(_key(name, rid), metadata=admin)
    assert first.plaintext_key
    assert not first.repeated_request
    again = await stub.CreateApiKey(_key(name, rid), metadata=admin)
    assert again.api_key == first.api_key
    assert (again.plaintext_key, again.repeated_request) == ("", True)
    assert await _keys_named(stub, name, admin) == [first.api_key.id]

    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateApiKey(_key(name, rid, ("download:*",)), metadata=admin)
    _assert_reused(raised.value)

    audited: list[admin_pb2.AuditEvent] = []
    for _ in range(50):  # the writer stores events in batches, every half second
        listed = await stub.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(resource=f"api-keys/{first.api_key.id}"), metadata=admin
        )
        audited = list(listed.audit_events)
        if len(audited) == 2:
            break
        await asyncio.sleep(0.1)
    assert [dict(event.details).get("repeated_request") for event in audited] == [True, None]  # newest first


async def test_a_repeated_create_steam_account_answers_the_first_account(
    channel: aio.Channel, admin: Metadata
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    username, rid = f"acct_{secrets.token_hex(4)}", _rid()
    first = await stub.CreateSteamAccount(_account(username, rid), metadata=admin)
    again = await stub.CreateSteamAccount(_account(username, rid), metadata=admin)
    assert again == first
    assert await _accounts_named(stub, username, admin) == [first.steam_account.id]

    for other in (_account(f"{username}_2", rid), _account(username, rid, password="another")):
        with pytest.raises(grpc.RpcError) as raised:
            await stub.CreateSteamAccount(other, metadata=admin)
        _assert_reused(raised.value)


async def test_request_ids_of_different_callers_are_independent(
    channel: aio.Channel, admin: Metadata
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    other = await _second_admin(stub, admin)
    rid, name = _rid(), f"shared-{secrets.token_hex(4)}"
    mine = await stub.CreateApiKey(_key(name, rid), metadata=admin)
    theirs = await stub.CreateApiKey(_key(name, rid), metadata=other)
    assert theirs.plaintext_key
    assert theirs.api_key.id != mine.api_key.id
    assert sorted(await _keys_named(stub, name, admin)) == sorted([mine.api_key.id, theirs.api_key.id])

    suffix, rid = secrets.token_hex(4), _rid()  # (the id above is used up for another RPC)
    users = [
        await stub.CreateUser(_user(f"{who}-{suffix}@example.test", rid), metadata=caller)
        for who, caller in (("mine", admin), ("theirs", other))
    ]
    assert users[0].user.id != users[1].user.id


@pytest.mark.parametrize("rpc", ["CreateUser", "CreateApiKey", "CreateSteamAccount"])
async def test_a_concurrent_double_submit_makes_one_resource(
    channel: aio.Channel, admin: Metadata, rpc: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    rid, tag = _rid(), secrets.token_hex(4)
    request = {
        "CreateUser": _user(f"twice-{tag}@example.test", rid),
        "CreateApiKey": _key(f"twice-{tag}", rid),
        "CreateSteamAccount": _account(f"twice_{tag}", rid),
    }[rpc]
    method = getattr(stub, rpc)
    answers = await asyncio.gather(*(method(request, metadata=admin) for _ in range(6)))
    if rpc == "CreateUser":
        listed = await stub.ListUsers(
            admin_pb2.ListUsersRequest(email_contains=f"twice-{tag}"), metadata=admin
        )
        made = [user.id for user in listed.users]
        assert {answer.user.id for answer in answers} == set(made)
    elif rpc == "CreateApiKey":
        made = await _keys_named(stub, f"twice-{tag}", admin)
        assert {answer.api_key.id for answer in answers} == set(made)
        assert sum(bool(answer.plaintext_key) for answer in answers) == 1  # the first call's alone
        assert sum(answer.repeated_request for answer in answers) == 5
    else:
        made = await _accounts_named(stub, f"twice_{tag}", admin)
        assert {answer.steam_account.id for answer in answers} == set(made)
    assert len(made) == 1


async def test_a_bad_request_id_is_invalid_argument_naming_it(channel: aio.Channel, admin: Metadata) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    too_long = "r" * (idempotency.MAX_REQUEST_ID + 1)
    calls = (
        stub.CreateUser(_user(f"long-{secrets.token_hex(4)}@example.test", too_long), metadata=admin),
        stub.CreateApiKey(_key("long", too_long), metadata=admin),
        stub.CreateSteamAccount(_account(f"long_{secrets.token_hex(4)}", too_long), metadata=admin),
    )
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = _details(raised.value, error_details_pb2.BadRequest)
        assert isinstance(bad, error_details_pb2.BadRequest)
        assert [v.field for v in bad.field_violations] == ["request_id"]


async def test_an_expired_request_id_starts_afresh(
    channel: aio.Channel, admin: Metadata, migrated_database_url: str
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    name, rid = f"old-{secrets.token_hex(4)}", _rid()
    first = await stub.CreateApiKey(_key(name, rid), metadata=admin)
    engine = create_engine(migrated_database_url)
    try:
        async with session_factory(engine).begin() as session:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await session.execute(
                update(IdempotencyRecord).where(IdempotencyRecord.request_id == rid).values(expire_time=past)
            )
    finally:
        await engine.dispose()
    later = await stub.CreateApiKey(_key(name, rid), metadata=admin)
    assert later.plaintext_key
    assert later.api_key.id != first.api_key.id


async def _ended(downloads: download_pb2_grpc.DownloadServiceStub, download_id: str, admin: Metadata) -> None:
    """Cancels the download unless it has ended already (with no active Steam account the worker
    fails it at once), and waits until it has: the database is shared by the tests of a backend."""
    try:
        await downloads.CancelDownload(download_pb2.CancelDownloadRequest(id=download_id), metadata=admin)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
    ended = (download_pb2.DOWNLOAD_STATE_FAILED, download_pb2.DOWNLOAD_STATE_CANCELLED)
    for _ in range(100):
        got = await downloads.GetDownload(download_pb2.GetDownloadRequest(id=download_id), metadata=admin)
        if got.download.state in ended:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"download {download_id} did not end")


async def test_a_repeated_retry_download_queues_once(channel: aio.Channel, admin: Metadata) -> None:
    downloads = download_pb2_grpc.DownloadServiceStub(channel)
    made = (
        await downloads.CreateDownload(download_pb2.CreateDownloadRequest(url_or_id="424242"), metadata=admin)
    ).download
    await _ended(downloads, made.id, admin)
    rid = _rid()
    retry = download_pb2.RetryDownloadRequest(id=made.id, request_id=rid)
    first = await downloads.RetryDownload(retry, metadata=admin)
    again = await downloads.RetryDownload(retry, metadata=admin)
    assert again.download.id == first.download.id
    with pytest.raises(grpc.RpcError) as raised:  # the same id for another RPC of the same caller
        await admin_pb2_grpc.AdminServiceStub(channel).CreateApiKey(_key("x", rid), metadata=admin)
    _assert_reused(raised.value)
    await _ended(downloads, made.id, admin)
    history = downloads.WatchDownload(download_pb2.WatchDownloadRequest(id=made.id), metadata=admin)
    lines = [event.log_line.line async for event in history if event.HasField("log_line")]
    assert lines.count("queued again by RetryDownload") == 1  # queued once


class _RolledBack(Exception):
    pass


@pytest.mark.parametrize("first_commits", [True, False])
async def test_of_two_transactions_claiming_one_id_the_second_waits_for_the_first(
    migrated_database_url: str, first_commits: bool
) -> None:
    """The race the double submit above may or may not hit, forced: the first transaction holds the
    claim while the second asks. The second answers with the first's result once it commits, or
    runs as the first when it rolls back."""
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    key = idempotency.RequestKey("race-scope", _rid())
    now = datetime.now(UTC)

    async def second() -> str | None:
        async with sessions.begin() as session:
            claim = await idempotency.claim(session, key, "CreateThing", "same", now)
            claim.settle("thing-2")
            return claim.earlier

    try:
        with pytest.raises(_RolledBack) if not first_commits else contextlib.nullcontext():
            async with sessions.begin() as first:
                claim = await idempotency.claim(first, key, "CreateThing", "same", now)
                assert claim.earlier is None
                claim.settle("thing-1")
                waiting = asyncio.create_task(second())
                await asyncio.sleep(0.5)
                assert not waiting.done()  # held on the first's claim (PostgreSQL) or write lock (SQLite)
                if not first_commits:
                    raise _RolledBack
        assert await waiting == ("thing-1" if first_commits else None)
        async with sessions() as session:
            stored = await session.scalars(
                select(IdempotencyRecord.response).where(
                    IdempotencyRecord.scope == key.scope, IdempotencyRecord.request_id == key.request_id
                )
            )
            assert list(stored) == [b"thing-1" if first_commits else b"thing-2"]
    finally:
        await engine.dispose()
