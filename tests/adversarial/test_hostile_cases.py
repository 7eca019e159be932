"""Hostile input, case by case: path traversal towards the filesystem, SQL metacharacters, forged and
replayed tokens, and control characters in everything that ends up in a log line or an audit row.

The server is the one of test_hostile_input.py (tests/support/hostile_server.py: real gRPC, the fake
DepotDownloader, a fresh database per backend), started here with a known JWT signing key so tokens
can be forged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.database import PostgresDatabases, fresh_database
from tests.support.hostile import SPECIAL_STRINGS, decode_status
from tests.support.hostile_server import KEEPER_ITEM, Target, start_target
from tests.support.server import error_info, server_log_to
from wallwhale.core.text import unsafe_characters
from wallwhale.db.types import utcnow
from wallwhale.ids import is_valid_id
from wallwhale.storage.archives import archive_filename
from wallwhale.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    download_pb2,
    download_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
)

pytestmark = pytest.mark.slow

SECRET = "hostile-signing-secret-" + "q" * 50
TRAVERSALS = (
    "../../../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "/etc/passwd",
    "..",
    ".",
    "archives/../../outside",
    "..\\..\\outside",
    "\x00../outside",
    "~/outside",
)


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The server's logging as `wallwhale serve` sets it up (JSON), copied to a file."""
    with server_log_to(tmp_path_factory.mktemp("log") / "server.log") as path:
        yield path


@pytest_asyncio.fixture(scope="module", params=["sqlite", "postgresql"])
async def target(
    request: pytest.FixtureRequest,
    postgres: PostgresDatabases,
    tmp_path_factory: pytest.TempPathFactory,
    server_log: Path,
) -> AsyncIterator[Target]:
    directory = tmp_path_factory.mktemp(f"hostile-cases-{request.param}")
    url = fresh_database(request.param, postgres, directory)
    async for value in start_target(url, directory, jwt_secret=SECRET):
        yield value


def _admin(target: Target) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(target.channel)


def _downloads(target: Target) -> download_pb2_grpc.DownloadServiceStub:
    return download_pb2_grpc.DownloadServiceStub(target.channel)


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.RpcError as error:
        return error.code(), error_info(error).reason
    return grpc.StatusCode.OK, ""


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


# ---- path traversal ------------------------------------------------------------------------------


async def test_traversal_in_download_ids_never_reaches_outside_the_storage_root(target: Target) -> None:
    outside = target.data_dir.parent / "outside"
    outside.write_text("must survive")
    (target.data_dir.parent / "passwd").write_text("must survive")
    before = _tree(target.data_dir / "archives")
    keeper = target.keeper_download
    stub, admin = _downloads(target), target.metadata("admin")
    ids = [*TRAVERSALS, f"{keeper}/../{keeper}", f"../archives/{keeper}.zip", f"{keeper}\x00", f"{keeper}/"]
    for bad in ids:
        stream = stub.FetchArchive(download_pb2.FetchArchiveRequest(id=bad), metadata=admin)
        with pytest.raises(grpc.RpcError) as raised:
            await stream.read()
        assert raised.value.code() in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}, bad
        for call in (
            stub.DeleteDownload(download_pb2.DeleteDownloadRequest(id=bad), metadata=admin),
            stub.CancelDownload(download_pb2.CancelDownloadRequest(id=bad), metadata=admin),
            stub.RetryDownload(download_pb2.RetryDownloadRequest(id=bad), metadata=admin),
        ):
            code, _ = await _code(call)
            assert code in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}, (bad, code)
    assert outside.read_text() == "must survive"
    assert (target.data_dir.parent / "passwd").read_text() == "must survive"
    assert _tree(target.data_dir / "archives") == before
    # The kept download's archive still streams whole, under a name with no path in it.
    call = stub.FetchArchive(download_pb2.FetchArchiveRequest(id=keeper), metadata=admin)
    data = b"".join([chunk.data async for chunk in call])
    headers = dict(await call.initial_metadata())
    assert len(data) == int(headers["x-archive-size"]) > 0
    disposition = headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[0-9]+(-[a-z0-9-]+)?\.zip"', disposition), disposition
    assert headers["x-archive-filename"] == disposition.split('"')[1]


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(
    workshop_id=st.integers(1, 2**64 - 1),
    title=st.one_of(
        st.text(), st.sampled_from(SPECIAL_STRINGS), st.text(st.sampled_from("./\\\r\n\x00\"';:%"))
    ),
)
def test_archive_filenames_from_any_title_are_one_safe_path_component(workshop_id: int, title: str) -> None:
    """Item titles come from Steam (anyone can publish one): the zip's name must stay a plain name
    for the content-disposition header and any file system the client saves to."""
    name = archive_filename(workshop_id, title)
    assert re.fullmatch(rf"{workshop_id}(-[a-z0-9]+(-[a-z0-9]+)*)?\.zip", name), (title, name)
    assert len(name) <= 100
    assert Path(name).name == name
    assert ".." not in name


async def test_steam_usernames_cannot_name_a_home_outside_the_homes_directory(target: Target) -> None:
    stub, admin = _admin(target), target.metadata("admin")
    for username in (*TRAVERSALS, "a/b", "a b", "a\r\nb", "ab\x00", "x" * 65, "é" * 3):
        with pytest.raises(grpc.RpcError) as raised:
            await stub.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(username=username), password="pw"
                ),
                metadata=admin,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, username
        assert "steam_account.username" in (raised.value.details() or "")
    # The homes the setup downloads used are named by server-made account ids, inside the directory.
    homes = (target.data_dir / "steam-homes").resolve()
    children = list(homes.iterdir())
    assert children, "the setup downloads ran without an account home"
    for child in children:
        assert is_valid_id(child.name), child
        assert child.resolve().parent == homes, child
    assert not (target.data_dir.parent / "keeper_account").exists()


# ---- SQL metacharacters ----------------------------------------------------------------------------

SQL = ("' OR 1=1 --", "'; DROP TABLE users; --", '"; DELETE FROM api_keys; --', "%_\\%", "\\'", "$1 $$ ;")


async def test_sql_metacharacters_are_stored_and_read_back_verbatim(target: Target) -> None:
    stub, admin = _admin(target), target.metadata("admin")
    tag = secrets.token_hex(3)
    for text in SQL:
        user = (
            await stub.CreateUser(
                admin_pb2.CreateUserRequest(
                    user=admin_pb2.User(
                        email=f"sql{tag}{SQL.index(text)}@example.test",
                        display_name=text,
                        role=admin_pb2.USER_ROLE_USER,
                    ),
                    password="long-enough-password",
                ),
                metadata=admin,
            )
        ).user
        assert (
            await stub.GetUser(admin_pb2.GetUserRequest(id=user.id), metadata=admin)
        ).user.display_name == text
        key = (
            await stub.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name=text, scopes=["download:read"])),
                metadata=admin,
            )
        ).api_key
        assert (
            await stub.GetApiKey(admin_pb2.GetApiKeyRequest(id=key.id), metadata=admin)
        ).api_key.name == text
        account_name = f"sql_{tag}_{SQL.index(text)}"
        account = (
            await stub.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(
                    steam_account=admin_pb2.SteamAccount(username=account_name, display_name=text)
                ),
                metadata=admin,
            )
        ).steam_account
        got = await stub.GetSteamAccount(admin_pb2.GetSteamAccountRequest(id=account.id), metadata=admin)
        assert got.steam_account.display_name == text
        # As filters, they match themselves only: no injected condition, no LIKE wildcard.
        for field in ("actor_id", "action", "resource"):
            events = await stub.ListAuditEvents(
                admin_pb2.ListAuditEventsRequest(**{field: text}), metadata=admin
            )
            assert events.total_size == 0, (field, text)
        found = await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains=text), metadata=admin)
        assert found.total_size == 0, text
    assert (
        await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains="_"), metadata=admin)
    ).total_size == 0
    assert (
        await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains="%"), metadata=admin)
    ).total_size == 0
    everyone = await stub.ListUsers(admin_pb2.ListUsersRequest(email_contains=f"sql{tag}"), metadata=admin)
    assert everyone.total_size == len(SQL)


# ---- forged and replayed tokens ----------------------------------------------------------------------


async def _audit_rows(target: Target, request_ids: set[str]) -> list[admin_pb2.AuditEvent]:
    """The audit rows of these requests, once all of them are stored (the writer batches)."""
    stub, admin = _admin(target), target.metadata("admin")
    rows: list[admin_pb2.AuditEvent] = []
    for _ in range(100):
        rows, token = [], ""
        while True:
            listed = await stub.ListAuditEvents(
                admin_pb2.ListAuditEventsRequest(page_size=500, page_token=token), metadata=admin
            )
            rows += [row for row in listed.audit_events if row.request_id in request_ids]
            token = listed.next_page_token
            if not token:
                break
        if {row.request_id for row in rows} == request_ids:
            return rows
        await asyncio.sleep(0.1)
    missing = request_ids - {row.request_id for row in rows}
    raise AssertionError(f"no audit row for {missing}")


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_forged_tokens_are_unauthenticated_and_audited(target: Target) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(target.channel)
    login = await auth.Login(auth_pb2.LoginRequest(email=target.admin.email, password=target.admin.password))
    good = login.tokens.access_token
    claims = jwt.decode(good, SECRET, algorithms=["HS256"], audience="wallwhale-api")
    header, payload, signature = good.split(".")
    now = int(utcnow().timestamp())
    forged = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg none, no dot": f"{_b64({'alg': 'none'})}.{payload}",
        "wrong key": jwt.encode(claims, "another-secret-" + "z" * 50, algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - 1}, SECRET, algorithm="HS256"),
        "tampered payload": f"{header}.{_b64({**claims, 'sub': target.read[0]})}.{signature}",
        "tampered header": f"{_b64({'alg': 'HS512', 'typ': 'JWT'})}.{payload}.{signature}",
        "refresh token as access token": login.tokens.refresh_token,
        "API key id as token": target.admin.api_key_id,
        "signed, sub a number": jwt.encode({**claims, "sub": 12}, SECRET, algorithm="HS256"),
        "signed, sid a list": jwt.encode({**claims, "sid": ["x"]}, SECRET, algorithm="HS256"),
        "signed, sid an object": jwt.encode({**claims, "sid": {"a": 1}}, SECRET, algorithm="HS256"),
        "signed, exp a string": jwt.encode({**claims, "exp": str(now + 600)}, SECRET, algorithm="HS256"),
        "signed, unknown user": jwt.encode({**claims, "sub": "0" * 26}, SECRET, algorithm="HS256"),
        "empty": ".",
        "garbage": "a.b.c",
    }
    status = status_pb2_grpc.StatusServiceStub(target.channel)
    sent: dict[str, str] = {}
    for name, token in forged.items():
        request_id = f"forged-{secrets.token_hex(6)}"
        sent[request_id] = name
        metadata = (("authorization", f"Bearer {token}"), ("x-request-id", request_id))
        code, reason = await _code(status.GetStatus(status_pb2.GetStatusRequest(), metadata=metadata))
        assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code, reason)
        assert reason in {"CREDENTIALS_INVALID", "TOKEN_EXPIRED"}, (name, reason)
    # The real token still works; every forgery left a denial in the audit trail.
    good_call = status.GetStatus(
        status_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {good}"),)
    )
    assert await _code(good_call) == (grpc.StatusCode.OK, "")
    rows = await _audit_rows(target, set(sent))
    assert len(rows) == len(sent)
    for row in rows:
        assert row.outcome == admin_pb2.AUDIT_OUTCOME_DENIED, (sent[row.request_id], row)
        assert row.status_code == "UNAUTHENTICATED"
        assert row.action == "status.get"


async def test_a_replayed_refresh_token_ends_the_session_and_is_audited(target: Target) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(target.channel)
    first = await auth.Login(auth_pb2.LoginRequest(email=target.admin.email, password=target.admin.password))
    second = await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=first.tokens.refresh_token))
    replay_id = f"replay-{secrets.token_hex(6)}"
    code, reason = await _code(
        auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=first.tokens.refresh_token),
            metadata=(("x-request-id", replay_id),),
        )
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    # The whole family is gone: the rotated refresh token and its access token too.
    after_id = f"replay-{secrets.token_hex(6)}"
    code, _ = await _code(
        auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=second.tokens.refresh_token),
            metadata=(("x-request-id", after_id),),
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    caller = auth.GetCaller(
        auth_pb2.GetCallerRequest(), metadata=(("authorization", f"Bearer {second.tokens.access_token}"),)
    )
    assert (await _code(caller))[0] == grpc.StatusCode.UNAUTHENTICATED
    rows = {row.request_id: row for row in await _audit_rows(target, {replay_id, after_id})}
    assert rows[replay_id].outcome == admin_pb2.AUDIT_OUTCOME_FAILURE
    assert rows[replay_id].status_code == "UNAUTHENTICATED"
    assert rows[replay_id].action == "auth.refresh"
    assert rows[after_id].status_code == "UNAUTHENTICATED"
    # Tokens of the wrong kind or shape are refused the same way.
    for token in (
        second.tokens.access_token,
        target.admin.api_key,
        "wwr_" + "A" * 43,
        "wwr_\r\n",
        "x" * 5000,
    ):
        code, _ = await _code(auth.Refresh(auth_pb2.RefreshRequest(refresh_token=token)))
        assert code == grpc.StatusCode.UNAUTHENTICATED, token[:20]


# ---- control characters in log-bound fields ----------------------------------------------------------

FORGED_LINE = '{"event": "forged", "level": "critical", "logger": "wallwhale.rpc"}'
INJECTIONS = (
    f"x\r\n{FORGED_LINE}",
    f"x\n{FORGED_LINE}\n",
    f"x\r{FORGED_LINE}",
    f"\u2028{FORGED_LINE}\u2029",
    f"\x85{FORGED_LINE}",
    f"x\x00\x1b[2K\r{FORGED_LINE}",
    '", "event": "forged", "x": "',
)


async def test_control_characters_do_not_forge_log_lines_or_audit_rows(
    target: Target, server_log: Path
) -> None:
    stub = _admin(target)
    request_ids: set[str] = set()
    calls = 0
    for index, text in enumerate(INJECTIONS):
        # gRPC metadata cannot carry CR, LF or NUL (the client refuses them); the JSON breakout can.
        request_id = f"log-{secrets.token_hex(4)}-{index}"
        user_agent = 'ua", "event": "forged'
        metadata = (*target.metadata("admin"), ("x-request-id", request_id), ("user-agent", user_agent))
        await _code(
            stub.CreateUser(
                admin_pb2.CreateUserRequest(
                    user=admin_pb2.User(
                        email=f"log{index}{secrets.token_hex(3)}@example.test", display_name=text
                    ),
                    password="long-enough-password",
                ),
                metadata=metadata,
            )
        )
        created = await _code(
            stub.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(api_key=admin_pb2.ApiKey(name=text, scopes=["download:read"])),
                metadata=(*target.metadata("admin"), ("x-request-id", request_id + "k")),
            )
        )
        # Names with control or bidi characters are refused (issue 15); the rest is stored as sent.
        refused = bool(unsafe_characters(text))
        assert created[0] == (grpc.StatusCode.INVALID_ARGUMENT if refused else grpc.StatusCode.OK), created
        # Refused input is echoed in messages: the user names (e-mail) and usernames of accounts.
        await _code(
            stub.CreateUser(
                admin_pb2.CreateUserRequest(user=admin_pb2.User(email=text), password="long-enough-password"),
                metadata=(*target.metadata("admin"), ("x-request-id", request_id + "e")),
            )
        )
        await _code(
            stub.CreateSteamAccount(
                admin_pb2.CreateSteamAccountRequest(steam_account=admin_pb2.SteamAccount(username=text)),
                metadata=(*target.metadata("admin"), ("x-request-id", request_id + "s")),
            )
        )
        await _code(
            auth_pb2_grpc.AuthServiceStub(target.channel).Login(
                auth_pb2.LoginRequest(email=text, password=text),
                metadata=(("x-request-id", request_id + "l"), ("user-agent", user_agent)),
            )
        )
        calls += 5
        request_ids |= {request_id, request_id + "k", request_id + "e", request_id + "s", request_id + "l"}
    rows = await _audit_rows(target, request_ids)
    assert len(rows) == calls  # one row per call, none forged
    for row in rows:
        assert row.action in {"user.create", "api_key.create", "steam_account.create", "auth.login"}
        assert row.request_id in request_ids
    # Every line of the log is one JSON object; no line is the forged one; one "rpc" line per call.
    for handler in logging.getLogger().handlers:
        handler.flush()
    rpc_lines = 0
    for line in (await asyncio.to_thread(server_log.read_text, encoding="utf-8")).splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert record.get("event") != "forged", line
        if record.get("event") == "rpc" and record.get("request_id") in request_ids:
            rpc_lines += 1
    assert rpc_lines == calls


async def test_a_hostile_request_id_is_replaced_not_logged(target: Target, server_log: Path) -> None:
    """x-request-id is echoed in logs and headers: anything but short printable ASCII is replaced."""
    status = status_pb2_grpc.StatusServiceStub(target.channel)
    for request_id in ("a" * 129, '", "event": "forged'):
        call = status.GetStatus(
            status_pb2.GetStatusRequest(), metadata=(*target.metadata("admin"), ("x-request-id", request_id))
        )
        await call
        echoed = dict(await call.initial_metadata())["x-request-id"]
        assert echoed != request_id or request_id.isprintable()
        assert len(echoed) <= 128
    for line in (await asyncio.to_thread(server_log.read_text, encoding="utf-8")).splitlines():
        assert json.loads(line).get("event") != "forged"


async def test_the_status_details_of_a_refusal_are_complete_for_an_echoed_huge_input(target: Target) -> None:
    """A refusal that names the client's input must still fit gRPC's metadata limits."""
    stub, admin = _downloads(target), target.metadata("admin")
    for huge in ("A" * 300_000, "../" * 100_000, "\r\n" * 100_000):
        for call in (
            stub.GetDownload(download_pb2.GetDownloadRequest(id=huge), metadata=admin),
            _admin(target).GetUser(admin_pb2.GetUserRequest(id=huge), metadata=admin),
            _admin(target).UpdateUser(
                admin_pb2.UpdateUserRequest(
                    user=admin_pb2.User(id=huge), update_mask=field_mask_pb2.FieldMask(paths=[huge])
                ),
                metadata=admin,
            ),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                await call
            assert raised.value.code() in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}
            assert decode_status(raised.value.trailing_metadata() or ()) is not None


async def test_workshop_ids_at_the_edges_of_uint64_are_taken_or_refused_never_internal(
    target: Target,
) -> None:
    """The API says uint64 (Steam's PublishedFileId); the database column is a signed BIGINT."""
    stub, admin = _downloads(target), target.metadata("admin")
    for value in (2**63 - 1, 2**63, 2**64 - 1, 2**64):
        for text in (str(value), f"https://steamcommunity.com/sharedfiles/filedetails/?id={value}"):
            code, _ = await _code(
                stub.CreateDownload(download_pb2.CreateDownloadRequest(url_or_id=text), metadata=admin)
            )
            assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, (text, code)
        listed = await _code(
            stub.ListDownloads(
                download_pb2.ListDownloadsRequest(workshop_id=min(value, 2**64 - 1)), metadata=admin
            )
        )
        assert listed[0] in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, (value, listed)


async def test_the_kept_download_is_still_there(target: Target) -> None:
    listed = await _downloads(target).ListDownloads(
        download_pb2.ListDownloadsRequest(workshop_id=KEEPER_ITEM), metadata=target.metadata("admin")
    )
    assert listed.total_size == 1
