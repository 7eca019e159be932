"""People's sessions: login, access JWTs, refresh rotation and reuse detection, logout, password change."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import grpc
import jwt
import pytest
from grpc import aio

from tests.support.server import error_info, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core.bootstrap import BootstrapResult
from wallwhale.db.types import utcnow
from wallwhale.v1 import admin_pb2, auth_pb2, auth_pb2_grpc, status_pb2, status_pb2_grpc

SECRET = "test-secret-" + "x" * 60


@pytest.fixture
async def server(migrated_database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The shared server fixture, with a known signing key so tests can forge tokens."""
    instance = WallWhaleServer(make_settings(migrated_database_url, tmp_path, jwt_secret=SECRET))
    await instance.start()
    yield instance
    await instance.stop(grace=0)


async def _login(channel: aio.Channel, admin: BootstrapResult) -> auth_pb2.LoginResponse:
    return await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(email=admin.email.upper(), password=admin.password)
    )


async def _status_code(channel: aio.Channel, token: str) -> tuple[grpc.StatusCode, str]:
    try:
        await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    except grpc.RpcError as error:
        return error.code(), error_info(error).reason
    return grpc.StatusCode.OK, ""


async def test_login_gives_an_access_token_that_works(
    channel: aio.Channel, first_admin: BootstrapResult
) -> None:
    response = await _login(channel, first_admin)
    assert response.user.email == first_admin.email
    assert response.user.role == admin_pb2.USER_ROLE_ADMIN
    assert response.tokens.refresh_token.startswith("wwr_")
    lifetime = response.tokens.access_token_expire_time.ToDatetime() - utcnow().replace(tzinfo=None)
    assert timedelta(minutes=10) < lifetime <= timedelta(minutes=15)
    assert await _status_code(channel, response.tokens.access_token) == (grpc.StatusCode.OK, "")

    caller = await auth_pb2_grpc.AuthServiceStub(channel).GetCaller(
        auth_pb2.GetCallerRequest(), metadata=(("authorization", f"Bearer {response.tokens.access_token}"),)
    )
    assert caller.actor.kind == admin_pb2.ACTOR_KIND_USER
    assert caller.user.id == first_admin.user_id
    assert list(caller.scopes) == ["admin:*", "download:*", "download:priority", "watch:*", "webhook:*"]


async def test_wrong_password_and_unknown_email_look_the_same(
    channel: aio.Channel, first_admin: BootstrapResult
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    messages = set()
    for email, password in (
        (first_admin.email, "wrong-password"),
        ("nobody@example.test", first_admin.password),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            await stub.Login(auth_pb2.LoginRequest(email=email, password=password))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(raised.value).reason == "CREDENTIALS_INVALID"
        messages.add(raised.value.details())
    assert len(messages) == 1
    with pytest.raises(grpc.RpcError) as raised:
        await stub.Login(auth_pb2.LoginRequest(email="", password="x"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "email" in (raised.value.details() or "")


async def test_refresh_rotates_and_a_reused_token_ends_the_session(
    channel: aio.Channel, first_admin: BootstrapResult
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    first = await _login(channel, first_admin)
    second = await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.tokens.refresh_token))
    assert second.tokens.refresh_token != first.tokens.refresh_token
    assert await _status_code(channel, second.tokens.access_token) == (grpc.StatusCode.OK, "")

    # The first refresh token shown again: stolen. The whole session ends.
    with pytest.raises(grpc.RpcError) as raised:
        await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.tokens.refresh_token))
    assert error_info(raised.value).reason == "REFRESH_TOKEN_REUSED"
    with pytest.raises(grpc.RpcError) as raised:
        await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.tokens.refresh_token))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _status_code(channel, second.tokens.access_token) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIALS_INVALID",
    )


async def test_logout_ends_the_session_and_its_access_tokens(
    channel: aio.Channel, first_admin: BootstrapResult
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    kept = await _login(channel, first_admin)
    ended = await _login(channel, first_admin)
    await stub.Logout(auth_pb2.LogoutRequest(refresh_token=ended.tokens.refresh_token))
    assert (await _status_code(channel, ended.tokens.access_token))[0] == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError):
        await stub.Refresh(auth_pb2.RefreshRequest(refresh_token=ended.tokens.refresh_token))
    assert await _status_code(channel, kept.tokens.access_token) == (
        grpc.StatusCode.OK,
        "",
    )  # other login lives


def _forge(claims: dict[str, object], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


async def test_forged_tampered_and_unsigned_tokens_are_refused(
    channel: aio.Channel, first_admin: BootstrapResult
) -> None:
    good = (await _login(channel, first_admin)).tokens.access_token
    claims = jwt.decode(good, SECRET, algorithms=["HS256"], audience="wallwhale-api")

    header, payload, signature = good.split(".")
    changed = base64.urlsafe_b64encode(json.dumps({**claims, "role": "ADMIN", "sub": "x"}).encode()).rstrip(
        b"="
    )
    tampered = f"{header}.{changed.decode()}.{signature}"
    unsigned_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    unsigned = f"{unsigned_header}.{payload}."
    expired = _forge({**claims, "exp": int(utcnow().timestamp()) - 1})
    for token, reason in (
        (tampered, "CREDENTIALS_INVALID"),
        (unsigned, "CREDENTIALS_INVALID"),
        (_forge(claims, key="another-secret-" + "y" * 60), "CREDENTIALS_INVALID"),
        (_forge({**claims, "aud": "someone-else"}), "CREDENTIALS_INVALID"),
        (_forge({**claims, "iss": "someone-else"}), "CREDENTIALS_INVALID"),
        (_forge({k: v for k, v in claims.items() if k != "sid"}), "CREDENTIALS_INVALID"),
        (_forge(claims, algorithm="HS512"), "CREDENTIALS_INVALID"),
        (expired, "TOKEN_EXPIRED"),
        ("not.a.jwt", "CREDENTIALS_INVALID"),
    ):
        assert await _status_code(channel, token) == (grpc.StatusCode.UNAUTHENTICATED, reason), token


async def test_access_tokens_expire_on_the_server_clock(
    migrated_database_url: str, first_admin: BootstrapResult, tmp_path: Path
) -> None:
    offset = timedelta()
    server = WallWhaleServer(
        make_settings(migrated_database_url, tmp_path, jwt_secret=SECRET), clock=lambda: utcnow() + offset
    )
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            token = (await _login(channel, first_admin)).tokens.access_token
            assert (await _status_code(channel, token))[0] == grpc.StatusCode.OK
            offset = timedelta(minutes=16)
            assert await _status_code(channel, token) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    finally:
        await server.stop(grace=0)


async def test_changing_the_password_ends_the_other_sessions(
    migrated_database_url: str, channel: aio.Channel, first_admin: BootstrapResult
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    current = await _login(channel, first_admin)
    other = await _login(channel, first_admin)
    bearer = (("authorization", f"Bearer {current.tokens.access_token}"),)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="wrong", new_password="a" * 20), metadata=bearer
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    new_password = "a-new-password-of-some-length"
    await stub.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=first_admin.password, new_password=new_password),
        metadata=bearer,
    )
    try:
        assert (await _status_code(channel, other.tokens.access_token))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert (await _status_code(channel, current.tokens.access_token))[0] == grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError):
            await _login(channel, first_admin)  # the old password no longer works
    finally:  # put the shared admin's password back for the other tests
        await stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password=new_password, new_password=first_admin.password),
            metadata=bearer,
        )
