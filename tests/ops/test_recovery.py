"""`wallwhale admin issue-key` and `reset-password`: the operator's way back, on the database, audited."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from sqlalchemy import select

from tests.support.harness import Harness
from wallwhale import cli, log
from wallwhale.db import engine as db_engine
from wallwhale.db.models import AuditEvent
from wallwhale.v1 import admin_pb2, auth_pb2, auth_pb2_grpc

ADMIN = "admin@example.test"  # the harness's first admin


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main configures logging for a process; in-process it would point the root logger at this
    test's captured (soon closed) stream for every later test."""
    monkeypatch.setattr(log, "configure", lambda *args, **kwargs: None)


async def wallwhale(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("WALLWHALE_DATABASE_URL", database_url)
    code = await asyncio.to_thread(cli.main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_json(out: str) -> dict[str, str]:
    # The server of the harness logs to the same stdout: the command's answer is its JSON line.
    line = next(line for line in reversed(out.splitlines()) if line.startswith("{"))
    result: dict[str, str] = json.loads(line)
    return result


async def audit_rows(database_url: str) -> list[AuditEvent]:
    engine = db_engine.create_engine(database_url)
    try:
        async with db_engine.session_factory(engine)() as session:
            return list(
                (await session.scalars(select(AuditEvent).where(AuditEvent.actor_kind == "system"))).all()
            )
    finally:
        await engine.dispose()


async def test_issue_key_gives_an_existing_admin_a_working_admin_key(
    harness: Harness, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await harness.start()
    code, out, _ = await wallwhale(
        database_url, monkeypatch, capsys, "admin", "issue-key", "--email", ADMIN.upper(), "--json"
    )
    assert code == 0
    issued = printed_json(out)
    keys = await harness.admin_api.ListApiKeys(
        admin_pb2.ListApiKeysRequest(), metadata=(("x-api-key", issued["api_key"]),)
    )
    assert issued["api_key_id"] in [key.id for key in keys.api_keys]
    audited = [row for row in await audit_rows(database_url) if row.action == "system.issue_admin_key"]
    assert len(audited) == 1
    assert audited[0].actor_display == "local operator"
    assert audited[0].resource == f"users/{issued['user_id']}"
    assert issued["api_key"] not in json.dumps(audited[0].details)  # the secret is never stored


async def test_issue_key_refuses_unknown_users_and_non_admins(
    harness: Harness, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await harness.start()
    code, _, err = await wallwhale(
        database_url, monkeypatch, capsys, "admin", "issue-key", "--email", "nobody@example.test"
    )
    assert code == 1
    assert "no user with the e-mail 'nobody@example.test'" in err
    await harness.admin_api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="plain@example.test", role=admin_pb2.USER_ROLE_USER),
            password="a-long-password-1",
        ),
        metadata=harness.admin,
    )
    code, _, err = await wallwhale(
        database_url, monkeypatch, capsys, "admin", "issue-key", "--email", "plain@example.test"
    )
    assert code == 1
    assert "not an admin" in err
    assert "Traceback" not in err


async def test_reset_password_prints_a_new_one_and_ends_login_sessions(
    harness: Harness, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await harness.start()
    auth = auth_pb2_grpc.AuthServiceStub(harness.channel)
    # The harness's admin password is unknown here: set one through the API, then log in with it.
    listed = await harness.admin_api.ListUsers(admin_pb2.ListUsersRequest(), metadata=harness.admin)
    admin_id = next(user.id for user in listed.users if user.email == ADMIN)
    code, out, _ = await wallwhale(
        database_url, monkeypatch, capsys, "admin", "reset-password", "--email", ADMIN, "--json"
    )
    assert code == 0
    first = printed_json(out)
    assert first["user_id"] == admin_id
    session = await auth.Login(auth_pb2.LoginRequest(email=ADMIN, password=first["password"]))

    code, out, _ = await wallwhale(
        database_url, monkeypatch, capsys, "admin", "reset-password", "--email", ADMIN
    )
    assert code == 0
    assert "Their login sessions were ended." in out
    new_password = out.split("(shown once): ", 1)[1].splitlines()[0]
    assert new_password != first["password"]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=session.tokens.refresh_token))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.Login(auth_pb2.LoginRequest(email=ADMIN, password=first["password"]))
    await auth.Login(auth_pb2.LoginRequest(email=ADMIN, password=new_password))
    audited = [row for row in await audit_rows(database_url) if row.action == "system.reset_password"]
    assert len(audited) == 2
    assert {row.actor_display for row in audited} == {"local operator"}
