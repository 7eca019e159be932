"""Steam accounts: CRUD through the server; passwords sealed at rest, never returned, rotatable."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio
from sqlalchemy import select

from tests.support.cli import run_wallwhale, wallwhale_env
from tests.support.server import Metadata
from wallwhale.core import secretbox, steam_accounts
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import SteamAccount
from wallwhale.v1 import admin_pb2, admin_pb2_grpc

PASSWORD = "hunter2-but-longer-ZQX"


def test_a_sealed_password_opens_only_with_its_key_and_row() -> None:
    keyring = secretbox.Keyring([secretbox.parse_key(secretbox.generate_key(), "test")])
    sealed = keyring.seal(PASSWORD, bound_to="row-1")
    assert PASSWORD.encode() not in sealed.ciphertext
    assert keyring.open(sealed, bound_to="row-1") == PASSWORD
    with pytest.raises(secretbox.KeyringError, match="does not decrypt"):
        keyring.open(sealed, bound_to="row-2")  # copied onto another row
    other = secretbox.Keyring([secretbox.parse_key(secretbox.generate_key(), "test")])
    with pytest.raises(secretbox.KeyringError, match="not in the keyring"):
        other.open(sealed, bound_to="row-1")
    with pytest.raises(secretbox.KeyringError, match="32 bytes"):
        secretbox.parse_key("c2hvcnQ=", "WALLWHALE_SECRET_KEY")


async def test_accounts_are_managed_and_the_password_never_comes_back(
    channel: aio.Channel, admin: Metadata, migrated_database_url: str, tmp_path: Path
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    username = f"wallpaper_{os.getpid()}_{id(stub) % 10000}"
    created = (
        await stub.CreateSteamAccount(
            admin_pb2.CreateSteamAccountRequest(
                steam_account=admin_pb2.SteamAccount(username=username, owned_app_ids=[431960, 431960]),
                password=PASSWORD,
            ),
            metadata=admin,
        )
    ).steam_account
    assert created.status == admin_pb2.STEAM_ACCOUNT_STATUS_ACTIVE
    assert list(created.owned_app_ids) == [431960]
    assert PASSWORD not in str(created)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateSteamAccount(
            admin_pb2.CreateSteamAccountRequest(
                steam_account=admin_pb2.SteamAccount(username=username.upper())
            ),
            metadata=admin,
        )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as raised:
        await stub.CreateSteamAccount(
            admin_pb2.CreateSteamAccountRequest(steam_account=admin_pb2.SteamAccount(username="has space")),
            metadata=admin,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # At rest: sealed, bound to the row, opened by the server's key (the test server's data dir).
    engine = create_engine(migrated_database_url)
    try:
        async with session_factory(engine)() as session:
            row = await session.scalar(select(SteamAccount).where(SteamAccount.id == created.id))
    finally:
        await engine.dispose()
    assert row is not None
    assert row.encrypted_password is not None
    assert PASSWORD.encode() not in row.encrypted_password

    disabled = (
        await stub.UpdateSteamAccount(
            admin_pb2.UpdateSteamAccountRequest(
                steam_account=admin_pb2.SteamAccount(id=created.id, disabled=True),
                update_mask=field_mask_pb2.FieldMask(paths=["disabled"]),
            ),
            metadata=admin,
        )
    ).steam_account
    assert disabled.status == admin_pb2.STEAM_ACCOUNT_STATUS_DISABLED
    for status, expected in (
        (admin_pb2.STEAM_ACCOUNT_STATUS_ACTIVE, False),
        (admin_pb2.STEAM_ACCOUNT_STATUS_DISABLED, True),
    ):
        listed = await stub.ListSteamAccounts(
            admin_pb2.ListSteamAccountsRequest(statuses=[status]), metadata=admin
        )
        assert (created.id in {a.id for a in listed.steam_accounts}) is expected
    await stub.DeleteSteamAccount(admin_pb2.DeleteSteamAccountRequest(id=created.id), metadata=admin)
    with pytest.raises(grpc.RpcError) as raised:
        await stub.GetSteamAccount(admin_pb2.GetSteamAccountRequest(id=created.id), metadata=admin)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_each_account_gets_its_own_login_id(channel: aio.Channel, admin: Metadata) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    ids = []
    for n in range(3):
        account = (
            await stub.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(
                        username=f"login_id_{n}_{os.getpid()}_{id(ids) % 9999}"
                    )
                ),
                metadata=admin,
            )
        ).steam_account
        ids.append(account.id)
    assert len(set(ids)) == 3


@pytest.mark.slow
def test_keys_rotate_reseals_every_password_under_the_new_key(tmp_path: Path) -> None:
    old_key, new_key = secretbox.generate_key(), secretbox.generate_key()
    key_file = tmp_path / "keys"
    key_file.write_text(f"{old_key}\n")
    env = wallwhale_env(tmp_path, WALLWHALE_SECRET_KEY_FILE=str(key_file))
    assert run_wallwhale("migrate", env=env).returncode == 0

    async def add() -> str:
        engine = create_engine(f"sqlite:///{tmp_path / 'wallwhale.sqlite3'}")
        try:
            async with session_factory(engine).begin() as session:
                created = await steam_accounts.create_account(
                    session,
                    steam_accounts.AccountInput(username="rotating"),
                    PASSWORD,
                    secretbox.Keyring.from_file(key_file),
                    datetime.now(UTC),
                )
                return created.account.id
        finally:
            await engine.dispose()

    account_id = asyncio.run(add())
    key_file.write_text(f"{new_key}\n{old_key}\n")  # the new key first; the old one still opens
    rotated = run_wallwhale("keys", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1" in rotated.stdout

    key_file.write_text(f"{new_key}\n")  # the old key is gone: the password must still open
    with sqlite3.connect(tmp_path / "wallwhale.sqlite3") as connection:
        ciphertext, key_id = connection.execute(
            "SELECT encrypted_password, encryption_key_id FROM steam_accounts WHERE id = ?", (account_id,)
        ).fetchone()
    keyring = secretbox.Keyring.from_file(key_file)
    assert key_id == keyring.current_id
    assert keyring.open(secretbox.Sealed(ciphertext, key_id), bound_to=account_id) == PASSWORD

    generated = subprocess.run(
        [sys.executable, "-m", "wallwhale.cli", "keys", "generate"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(secretbox.parse_key(generated.stdout, "generated")) == 32
    assert json.dumps(PASSWORD) not in rotated.stdout + rotated.stderr
