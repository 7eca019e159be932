"""A password reset or a disable ends every session of the user, and their access tokens with them
(issue 15 item 6): sessions are revoked (kept, marked), tokens of unknown or revoked sessions and
tokens issued before the last credential change are refused."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio
from sqlalchemy import select

from tests.support.server import make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import RefreshToken
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc, status_pb2, status_pb2_grpc

SECRET = "revocation-secret-" + "y" * 60
PASSWORD = "a-long-enough-password"
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def server(migrated_database_url: str, tmp_path: Path) -> AsyncIterator[WallWhaleServer]:
    """The shared server fixture, with a known signing key so tests can forge tokens."""
    instance = WallWhaleServer(make_settings(migrated_database_url, tmp_path, jwt_secret=SECRET))
    await instance.start()
    yield instance
    await instance.stop(grace=0)


async def _new_user(channel: aio.Channel, admin: Metadata) -> admin_pb2.User:
    response = await admin_pb2_grpc.AdminServiceStub(channel).CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email=f"r{secrets.token_hex(4)}@example.test"), password=PASSWORD
        ),
        metadata=admin,
    )
    return response.user


async def _login(channel: aio.Channel, email: str, password: str = PASSWORD) -> auth_pb2.TokenPair:
    response = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(email=email, password=password)
    )
    return response.tokens


async def _code(channel: aio.Channel, token: str) -> grpc.StatusCode:
    try:
        await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _update(channel: aio.Channel, admin: Metadata, user: admin_pb2.User, **change: object) -> None:
    password = str(change.pop("password", ""))
    await admin_pb2_grpc.AdminServiceStub(channel).UpdateUser(
        admin_pb2.UpdateUserRequest(
            user=admin_pb2.User(id=user.id, **change),  # type: ignore[arg-type]
            # A reset alone: display_name (left empty, as created) keeps the mask from meaning "all".
            update_mask=field_mask_pb2.FieldMask(paths=list(change) or ["display_name"]),
            password=password,
        ),
        metadata=admin,
    )


def _forge(user_id: str, session_id: str, issued_at: float) -> str:
    return jwt.encode(
        {
            "iss": "wallwhale",
            "aud": "wallwhale-api",
            "sub": user_id,
            "sid": session_id,
            "role": "USER",
            "iat": int(issued_at),
            "exp": int(time.time()) + 600,
            "jti": secrets.token_hex(8),
        },
        SECRET,
        algorithm="HS256",
    )


async def test_a_password_reset_revokes_sessions_and_their_access_tokens(
    channel: aio.Channel, admin: Metadata, migrated_database_url: str
) -> None:
    user = await _new_user(channel, admin)
    tokens = await _login(channel, user.email)
    assert await _code(channel, tokens.access_token) == grpc.StatusCode.OK

    await _update(channel, admin, user, password="another-long-password")
    assert await _code(channel, tokens.access_token) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as refresh:
        await auth_pb2_grpc.AuthServiceStub(channel).Refresh(
            auth_pb2.RefreshRequest(refresh_token=tokens.refresh_token)
        )
    assert refresh.value.code() == grpc.StatusCode.UNAUTHENTICATED

    engine = create_engine(migrated_database_url)
    try:
        async with session_factory(engine)() as session:
            rows = list(await session.scalars(select(RefreshToken).where(RefreshToken.user_id == user.id)))
    finally:
        await engine.dispose()
    assert rows, "the session was deleted instead of revoked"
    assert all(row.revoke_time is not None for row in rows)


async def test_a_disable_and_enable_does_not_bring_old_tokens_back(
    channel: aio.Channel, admin: Metadata
) -> None:
    user = await _new_user(channel, admin)
    tokens = await _login(channel, user.email)
    await _update(channel, admin, user, disabled=True)
    await _update(channel, admin, user, disabled=False)
    assert await _code(channel, tokens.access_token) == grpc.StatusCode.UNAUTHENTICATED
    fresh = await _login(channel, user.email)
    assert await _code(channel, fresh.access_token) == grpc.StatusCode.OK


async def test_a_token_of_an_unknown_session_is_refused(channel: aio.Channel, admin: Metadata) -> None:
    user = await _new_user(channel, admin)
    assert await _code(channel, _forge(user.id, "0" * 26, time.time())) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_issued_before_the_last_credential_change_is_refused(
    channel: aio.Channel, admin: Metadata
) -> None:
    user = await _new_user(channel, admin)
    await _update(channel, admin, user, password="another-long-password")
    live = await _login(channel, user.email, "another-long-password")
    session_id = jwt.decode(live.access_token, options={"verify_signature": False})["sid"]
    assert await _code(channel, _forge(user.id, session_id, time.time())) == grpc.StatusCode.OK
    # The same live session, but a token dated before the reset.
    assert (
        await _code(channel, _forge(user.id, session_id, time.time() - 60)) == grpc.StatusCode.UNAUTHENTICATED
    )
