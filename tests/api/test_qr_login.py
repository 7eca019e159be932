"""QR logins (AdminService.StartQrLogin) end to end: real server and database, the test
DepotDownloader (which draws the QR code the way the real one does and takes a "scan" from the world
directory). The reader and the drawings alone: tests/unit/test_qr_reader.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from tests.support.harness import Harness, alive, describe, rpc_error, seconds
from tests.support.qr import decoded_png, drawn_svg, modules
from tests.support.server import error_info
from wallwhale.db.models import SteamAccount
from wallwhale.v1 import admin_pb2, download_pb2

ITEM = 2831234567
A = admin_pb2


async def add_qr_account(harness: Harness, username: str) -> A.SteamAccount:
    """An account in the fake Steam, and in the pool without a password (it logs in by QR only)."""
    harness.steam.add_account(username, "phone-only")
    response = await harness.admin_api.CreateSteamAccount(
        A.CreateSteamAccountRequest(steam_account=A.SteamAccount(username=username)), metadata=harness.admin
    )
    return response.steam_account


class Login:
    """One StartQrLogin call, read event by event (heartbeats counted, not returned)."""

    def __init__(self, harness: Harness, account_id: str, metadata: Any = None):
        self.call = harness.admin_api.StartQrLogin(
            A.StartQrLoginRequest(id=account_id), metadata=metadata or harness.admin
        )
        self.heartbeats = 0

    async def next(self, limit: float = 20.0) -> A.StartQrLoginResponse:
        async def read() -> A.StartQrLoginResponse:
            while True:
                event = await self.call.read()
                assert event is not grpc.aio.EOF, "the stream ended"
                if event.WhichOneof("event") != "heartbeat":
                    return event
                self.heartbeats += 1

        return await asyncio.wait_for(read(), limit)


def qr_runs(harness: Harness) -> list[dict[str, Any]]:
    return [run for run in harness.steam.runs() if "-qr" in run["argv"]]


async def wait_until_gone(harness: Harness, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while any(alive(run["pid"]) for run in harness.steam.runs()):
        assert time.monotonic() < deadline, "DepotDownloader is still running"
        await asyncio.sleep(0.05)


async def test_a_qr_login_shows_each_code_and_the_next_download_uses_the_remembered_login(
    harness: Harness,
) -> None:
    harness.steam.set(qr_refresh=seconds(0.6))
    await harness.start()
    account = await add_qr_account(harness, "alice_qr")
    login = Login(harness, account.id)

    first = await login.next()
    assert first.WhichOneof("event") == "qr_code"
    expected = modules(harness.steam.qr_rows(0))
    assert list(first.qr_code.rows) == expected
    assert len(expected) == 37  # 29 modules and the quiet zones DepotDownloader draws
    assert drawn_svg(first.qr_code.svg) == expected
    assert decoded_png(first.qr_code.png) == expected

    second = await login.next()  # "The QR code has changed:"
    assert list(second.qr_code.rows) == modules(harness.steam.qr_rows(1)) != expected
    assert login.heartbeats >= 1  # 0.5 s heartbeats while nothing else happens
    # The account's session is held: a second login is refused while this one waits.
    busy = await rpc_error(
        harness.admin_api.StartQrLogin(A.StartQrLoginRequest(id=account.id), metadata=harness.admin).read()
    )
    assert busy.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(busy).reason == "STEAM_ACCOUNT_BUSY"

    harness.steam.scan_qr("ALICE_QR")  # Steam's account names are not case-sensitive
    event = await login.next()
    while event.WhichOneof("event") == "qr_code":  # a refresh may come before the scan is seen
        event = await login.next()
    assert event.WhichOneof("event") == "succeeded", event
    assert event.succeeded.id == account.id
    assert event.succeeded.has_remembered_login
    assert event.succeeded.status == A.STEAM_ACCOUNT_STATUS_ACTIVE
    assert await login.call.read() is grpc.aio.EOF
    assert await login.call.code() == grpc.StatusCode.OK

    [run] = qr_runs(harness)
    home = harness.data_dir.resolve() / "steam-homes" / account.id
    assert run["HOME"] == str(home)
    assert run["loginid"] == str(harness_login_id(run))
    assert "-username" not in run["argv"]
    assert "-remember-password" in run["argv"]
    assert "-manifest-only" in run["argv"]
    assert not run["password_on_argv"]
    assert [name.lower() for name in harness.steam.stored_tokens(home)] == ["alice_qr"]
    await wait_until_gone(harness)
    assert not (home / "qr-login").exists()  # the scratch -dir is removed

    # The next download of the account logs in with the remembered login: no password exists.
    harness.steam.add_item(ITEM)
    created = await harness.create(str(ITEM), steam_account_id=account.id)
    done = await harness.wait_for(created.id)
    assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, done
    job_run = harness.steam.runs()[-1]
    assert job_run["argv"][job_run["argv"].index("-username") + 1] == "alice_qr"
    assert "-remember-password" in job_run["argv"]
    assert job_run["account"] == "alice_qr"
    assert job_run["HOME"] == str(home)
    logs = [event.log_line.line for event in await harness.watch(created.id) if event.HasField("log_line")]
    assert not any("Enter account password" in line for line in logs), logs


def harness_login_id(run: dict[str, Any]) -> int:
    # Account login ids are handed out from 0x57570000 up (core.steam_accounts), never the default.
    value = int(run["loginid"])
    assert value >= 0x57570000
    return value


async def test_a_code_scanned_by_another_account_fails_and_remembers_nothing(harness: Harness) -> None:
    await harness.start()
    account = await add_qr_account(harness, "alice_qr")
    harness.steam.add_account("mallory", "x")
    login = Login(harness, account.id)
    assert (await login.next()).WhichOneof("event") == "qr_code"
    harness.steam.scan_qr("mallory")
    event = await login.next()
    assert event.WhichOneof("event") == "failed"
    assert "'mallory'" in event.failed
    assert "'alice_qr'" in event.failed
    got = await harness.admin_api.GetSteamAccount(
        A.GetSteamAccountRequest(id=account.id), metadata=harness.admin
    )
    assert not got.steam_account.has_remembered_login
    await wait_until_gone(harness)


@pytest.mark.parametrize("scanned_by", ["alice_qr", "mallory"])
async def test_without_the_success_line_a_second_run_checks_the_token_is_the_accounts(
    harness: Harness, scanned_by: str
) -> None:
    # Row 11 names the account only when Steam sends new guard data; without it a run as
    # -username alice_qr -remember-password tells (a password prompt: the token is someone else's).
    harness.steam.set(qr_new_guard_data=False)
    await harness.start()
    account = await add_qr_account(harness, "alice_qr")
    harness.steam.add_account("mallory", "x")
    login = Login(harness, account.id)
    assert (await login.next()).WhichOneof("event") == "qr_code"
    harness.steam.scan_qr(scanned_by)
    event = await login.next()
    check = harness.steam.runs()[-1]
    assert check["username"] == "alice_qr"
    assert "-remember-password" in check["argv"]
    if scanned_by == "alice_qr":
        assert event.WhichOneof("event") == "succeeded", event
    else:
        assert event.WhichOneof("event") == "failed", event
        assert "another account" in event.failed
    await wait_until_gone(harness)


async def test_an_expired_code_and_the_servers_wait_limit_fail_with_the_reason(harness: Harness) -> None:
    harness.steam.set(auth_timeout=seconds(0.5))
    await harness.start()
    account = await add_qr_account(harness, "alice_qr")
    login = Login(harness, account.id)
    assert (await login.next()).WhichOneof("event") == "qr_code"
    event = await login.next()
    assert event.WhichOneof("event") == "failed"
    assert "expired" in event.failed
    assert "Expired" in event.failed
    await wait_until_gone(harness)

    await harness.servers[-1].stop(grace=0)
    harness.steam.set(auth_timeout=None)
    await harness.start(qr_login_timeout_seconds=0.6)
    login = Login(harness, account.id)
    assert (await login.next()).WhichOneof("event") == "qr_code"
    event = await login.next()
    assert event.WhichOneof("event") == "failed"
    assert event.failed == "nobody scanned the QR code within 0.6s"
    await wait_until_gone(harness)
    [_, timed_out] = qr_runs(harness)
    assert timed_out["exit_code"] == 143  # SIGTERM


async def test_an_account_running_a_download_is_busy(harness: Harness) -> None:
    await harness.start()
    account_id = await harness.add_account("alice_we", "pw")
    harness.steam.add_item(ITEM, behaviour={"file_delay": seconds(0.3)})
    created = await harness.create(str(ITEM), steam_account_id=account_id)
    await harness.wait_for(created.id, {download_pb2.DOWNLOAD_STATE_RUNNING})
    error = await rpc_error(Login(harness, account_id).call.read())
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "STEAM_ACCOUNT_BUSY"
    assert "alice_we" in (error.details() or "")
    assert qr_runs(harness) == []
    done = await harness.wait_for(created.id)
    assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED


async def test_unknown_accounts_and_callers_without_admin_rights_are_refused(harness: Harness) -> None:
    await harness.start()
    error = await rpc_error(Login(harness, "nosuchaccount").call.read())
    assert error.code() == grpc.StatusCode.NOT_FOUND
    account = await add_qr_account(harness, "alice_qr")
    user_key = await harness.add_key(["download:read", "download:write"])
    error = await rpc_error(Login(harness, account.id, metadata=user_key).call.read())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert qr_runs(harness) == []


async def test_a_caller_going_away_stops_depotdownloader_and_frees_the_account(harness: Harness) -> None:
    server = await harness.start()
    account_id = await harness.add_account("alice_we", "pw")
    started = datetime.now(UTC)
    login = Login(harness, account_id)
    assert (await login.next()).WhichOneof("event") == "qr_code"
    [run] = qr_runs(harness)
    assert alive(run["pid"])
    # While the login waits, the scheduler leaves the account alone, past the 2 s lease too, whose
    # renewals other instances see.
    harness.steam.add_item(ITEM)
    created = await harness.create(str(ITEM), steam_account_id=account_id)
    await asyncio.sleep(2.5)
    assert (await harness.get(created.id)).state == download_pb2.DOWNLOAD_STATE_QUEUED
    async with server.sessions() as session:
        account = await session.get(SteamAccount, account_id)
        assert account is not None
        assert account.session_owner == server.instance_id
        assert account.session_expire_time is not None
        assert account.session_expire_time > started + timedelta(seconds=2)  # renewed at least once
    busy = await rpc_error(Login(harness, account_id).call.read())
    assert error_info(busy).reason == "STEAM_ACCOUNT_BUSY"

    login.call.cancel()
    deadline = time.monotonic() + 10
    while alive(run["pid"]):
        assert time.monotonic() < deadline, "DepotDownloader is still running"
        await asyncio.sleep(0.05)
    # Free again: the waiting download runs.
    done = await harness.wait_for(created.id)
    assert done.state == download_pb2.DOWNLOAD_STATE_SUCCEEDED, describe(await harness.watch(created.id))
    [qr_run] = qr_runs(harness)
    assert qr_run["exit_code"] == 143  # SIGTERM
    job_run = harness.steam.runs()[-1]
    assert job_run["start"] >= qr_run["end"]  # one DepotDownloader session of the account at a time


async def test_a_stopping_server_ends_the_login(harness: Harness) -> None:
    server = await harness.start()
    account = await add_qr_account(harness, "alice_qr")
    login = Login(harness, account.id)
    assert (await login.next()).WhichOneof("event") == "qr_code"
    await server.stop(grace=5)
    await wait_until_gone(harness)
