"""No plaintext secret anywhere: every path that handles a password, key or token is driven through
the real server with logging at DEBUG (the production JSON logs, SQLAlchemy's statements and
parameters included), then every column of every table and every log line is searched for each
secret, as text, hex and base64 (at any alignment inside a longer blob)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from grpc import aio

from tests.support.server import make_settings, server_log_to
from wallwhale import log
from wallwhale.app import WallWhaleServer
from wallwhale.core import api_keys, secretbox
from wallwhale.core.bootstrap import bootstrap_admin
from wallwhale.db import migrate
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import User
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc

JWT_SECRET = "jwt-signing-secret-" + "s3cr3t" * 6


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    """The server's logging as `wallwhale serve` sets it up (JSON, here at DEBUG), copied to a file,
    with every SQL statement and its parameters (as with echo=True)."""
    with server_log_to(tmp_path / "server.log", "DEBUG", sql_statements=True) as path:
        yield path


def encodings(secret: str) -> set[str]:
    """The secret as text, hex, and the parts of its base64 (standard and URL-safe) that are the
    same wherever it starts inside a longer encoded blob."""
    raw = secret.encode()
    forms = {secret, raw.hex(), raw.hex().upper()}
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode()
            # Skip the group shared with the bytes before, and the last group if bytes after share it.
            first, last = (1 if offset else 0), (offset + len(raw)) // 3
            forms.add(text[4 * first : 4 * last])
    return {form for form in forms if len(form) >= 12}


def leaks(secrets: dict[str, str], haystack: str) -> list[str]:
    """The names of the secrets found in `haystack`, in any of their encodings."""
    return sorted(name for name, secret in secrets.items() if any(f in haystack for f in encodings(secret)))


def _text(value: object) -> str:
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        return f"{raw.decode('latin-1')} {raw.hex()} {base64.b64encode(raw).decode()}"
    return str(value)


async def dump_database(database_url: str) -> str:
    """Every value of every column of every table, as text (bytes also as hex and base64)."""

    def dump(connection: sa.Connection) -> str:
        lines = []
        metadata = sa.MetaData()
        for name in sa.inspect(connection).get_table_names():
            table = sa.Table(name, metadata, autoload_with=connection)
            for row in connection.execute(sa.select(table)):
                lines.append(f"{name}: " + " | ".join(_text(value) for value in row))
        return "\n".join(lines)

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            text = await connection.run_sync(dump)
    finally:
        await engine.dispose()
    if database_url.startswith("sqlite"):
        # Also the raw file and its write-ahead log: freed pages keep what was deleted.
        path = Path(database_url.split("///", 1)[1])
        for part in (path, path.with_name(path.name + "-wal")):
            if part.exists():
                text += "\n" + _text(part.read_bytes())
    return text


async def _refused(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.RpcError as error:
        return error.code()
    raise AssertionError("the call was expected to fail")


async def test_no_password_key_or_token_is_stored_or_logged(
    database_url: str, tmp_path: Path, server_log: Path
) -> None:
    secrets: dict[str, str] = {"jwt signing key": JWT_SECRET}
    steam_key = secretbox.generate_key()
    secrets["steam password encryption key"] = steam_key

    await asyncio.to_thread(migrate.upgrade, database_url)
    engine = create_engine(database_url)
    try:
        first = await bootstrap_admin(session_factory(engine), "root@example.test")
    finally:
        await engine.dispose()
    secrets |= {"bootstrap password": first.password, "bootstrap key": first.api_key}
    admin = (("x-api-key", first.api_key),)

    server = WallWhaleServer(
        make_settings(database_url, tmp_path, jwt_secret=JWT_SECRET, secret_key=steam_key)
    )
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            admins = admin_pb2_grpc.AdminServiceStub(channel)
            auth = auth_pb2_grpc.AuthServiceStub(channel)

            # People: created with a password, given a new one, signing in, refreshing, changing it.
            secrets |= {"first password": "first-Password-of-alice-1", "second password": "2nd-pw-alice-Xq"}
            alice = (
                await admins.CreateUser(
                    admin_pb2.CreateUserRequest(
                        user=admin_pb2.User(email="alice@example.test"), password=secrets["first password"]
                    ),
                    metadata=admin,
                )
            ).user
            await admins.UpdateUser(
                admin_pb2.UpdateUserRequest(
                    user=admin_pb2.User(id=alice.id, display_name="Alice"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                    password=secrets["second password"],
                ),
                metadata=admin,
            )
            login = await auth.Login(
                auth_pb2.LoginRequest(email="alice@example.test", password=secrets["second password"])
            )
            refreshed = await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.tokens.refresh_token))
            reused = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.tokens.refresh_token))
            assert await _refused(reused) == grpc.StatusCode.UNAUTHENTICATED  # rotation: the old one is spent
            for n, tokens in enumerate((login.tokens, refreshed.tokens)):
                secrets[f"access token {n}"] = tokens.access_token
                secrets[f"access token {n} signature"] = tokens.access_token.rsplit(".", 1)[1]
                secrets[f"refresh token {n}"] = tokens.refresh_token
            login = await auth.Login(
                auth_pb2.LoginRequest(email="alice@example.test", password=secrets["second password"])
            )
            bearer = (("authorization", f"Bearer {login.tokens.access_token}"),)
            secrets |= {
                "access token 2": login.tokens.access_token,
                "refresh token 2": login.tokens.refresh_token,
            }
            secrets["third password"] = "third-Password-of-alice-3"
            await auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password=secrets["second password"], new_password=secrets["third password"]
                ),
                metadata=bearer,
            )
            login = await auth.Login(
                auth_pb2.LoginRequest(email="alice@example.test", password=secrets["third password"])
            )
            secrets["refresh token 3"] = login.tokens.refresh_token
            await auth.Logout(auth_pb2.LogoutRequest(refresh_token=login.tokens.refresh_token))

            # Wrong passwords, for a real user and an unknown one.
            secrets |= {"wrong password": "not-alices-password-9", "guess": "admin-guess-Password-7"}
            for email, password in (
                ("alice@example.test", secrets["wrong password"]),
                ("nobody@example.test", secrets["guess"]),
            ):
                attempt = auth.Login(auth_pb2.LoginRequest(email=email, password=password))
                assert await _refused(attempt) == grpc.StatusCode.UNAUTHENTICATED

            # API keys: created (plaintext shown once), used, revoked and used again; one never issued.
            for name in ("used key", "revoked key"):
                created = await admins.CreateApiKey(
                    admin_pb2.CreateApiKeyRequest(
                        api_key=admin_pb2.ApiKey(name=name, owner_user_id=alice.id, scopes=["download:*"])
                    ),
                    metadata=admin,
                )
                secrets[name] = created.plaintext_key
            await auth.GetCaller(auth_pb2.GetCallerRequest(), metadata=(("x-api-key", secrets["used key"]),))
            revoked = await admins.ListApiKeys(
                admin_pb2.ListApiKeysRequest(owner_user_id=alice.id), metadata=admin
            )
            revoked_id = next(k.id for k in revoked.api_keys if k.name == "revoked key")
            await admins.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(id=revoked_id), metadata=admin)
            secrets["unknown key"] = api_keys.generate_key()
            for key in (secrets["revoked key"], secrets["unknown key"]):
                attempt = auth.GetCaller(
                    auth_pb2.GetCallerRequest(), metadata=(("authorization", f"Bearer {key}"),)
                )
                assert await _refused(attempt) == grpc.StatusCode.UNAUTHENTICATED

            # Steam accounts: added with a password, given a new one, and one refused for bad input.
            secrets |= {
                "steam password": "steam-Password-one-111",
                "new steam password": "steam-Password-two-222",
                "refused steam password": "steam-Password-bad-333",
            }
            account = (
                await admins.CreateSteamAccount(
                    admin_pb2.CreateSteamAccountRequest(
                        steam_account=admin_pb2.SteamAccount(username="wallpaper_bot"),
                        password=secrets["steam password"],
                    ),
                    metadata=admin,
                )
            ).steam_account
            await admins.UpdateSteamAccount(
                admin_pb2.UpdateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(id=account.id),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                    password=secrets["new steam password"],
                ),
                metadata=admin,
            )
            refused = admins.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(username="bad name with spaces"),
                    password=secrets["refused steam password"],
                ),
                metadata=admin,
            )
            assert await _refused(refused) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(grace=1)  # stores the queued audit events too

    logged = await asyncio.to_thread(server_log.read_text, encoding="utf-8")
    # The capture saw the server's calls and its SQL, and the dump saw the rows.
    assert '"event": "rpc"' in logged
    assert '"logger": "sqlalchemy.engine.Engine"' in logged
    stored = await dump_database(database_url)
    assert "alice@example.test" in stored
    assert "auth.login" in stored
    assert leaks(secrets, stored) == []
    assert leaks(secrets, logged) == []


async def test_the_search_finds_a_planted_secret(database_url: str, server_log: Path) -> None:
    """The check above can fail: a key written to a column or a log line, even encoded, is found."""
    await asyncio.to_thread(migrate.upgrade, database_url)
    key = api_keys.generate_key()
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            session.add(
                User(
                    email=f"{key[-12:].lower()}@example.test",
                    password_hash="-",
                    display_name=base64.b64encode(b"x" + key.encode()).decode(),
                )
            )
    finally:
        await engine.dispose()
    log.get_logger("wallwhale.test").info("oops", presented=key.encode().hex())

    assert leaks({"key": key}, await dump_database(database_url)) == ["key"]
    logged = await asyncio.to_thread(server_log.read_text, encoding="utf-8")
    assert leaks({"key": key}, logged) == ["key"]
    assert leaks({"key": key}, key[:20]) == []  # a shorter piece is not the key
