"""Through REST, a JSON body with a field the request does not have is a 400 naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.support.database import prepare_database
from tests.support.envoy import Envoy, http, servers_behind_envoy
from wallwhale.config import to_async_url


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Envoy, dict[str, str]]]:
    url = to_async_url(f"sqlite:///{tmp_path / 'wallwhale.sqlite3'}")
    admin = await prepare_database(url)
    async with servers_behind_envoy(tmp_path, url) as (envoy, _servers):
        yield envoy, {"x-api-key": admin.api_key}


def violations(body: dict[str, object]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for detail in body.get("details", []):  # type: ignore[union-attr]
        found += detail.get("fieldViolations", [])
    return found


async def test_an_unknown_top_level_field_is_named(stack: tuple[Envoy, dict[str, str]]) -> None:
    envoy, key = stack
    reply = await http(
        "POST",
        envoy.url("/v1/admin/steam-accounts"),
        json_body={"username": "alice_we", "password": "pw"},
        headers=key,
    )
    assert reply.status == 400, reply.body
    body = reply.json()
    assert "username" in body["message"]
    assert "unknown field" in body["message"]
    assert [v["field"] for v in violations(body)] == ["username"]


async def test_an_unknown_nested_field_is_named_with_its_path(stack: tuple[Envoy, dict[str, str]]) -> None:
    envoy, key = stack
    reply = await http(
        "POST",
        envoy.url("/v1/admin/steam-accounts"),
        json_body={"steamAccount": {"username": "alice_we", "ownedApps": [431960]}, "password": "pw"},
        headers=key,
    )
    assert reply.status == 400, reply.body
    assert [v["field"] for v in violations(reply.json())] == ["steam_account.ownedApps"]


async def test_known_fields_in_either_spelling_pass(stack: tuple[Envoy, dict[str, str]]) -> None:
    envoy, key = stack
    for number, account in enumerate(
        [
            {"steamAccount": {"username": "bob_we", "ownedAppIds": [431960]}},
            {"steam_account": {"username": "carol_we"}},
        ]
    ):
        reply = await http(
            "POST",
            envoy.url("/v1/admin/steam-accounts"),
            json_body={**account, "password": f"pw-{number}"},
            headers=key,
        )
        assert reply.status == 200, reply.body


async def test_a_forged_copy_header_cannot_fake_a_body(stack: tuple[Envoy, dict[str, str]]) -> None:
    envoy, key = stack
    # A client's own x-wallwhale-rest-body is removed by Envoy; GET bodies are not copied.
    reply = await http(
        "GET",
        envoy.url("/v1/status"),
        headers={**key, "x-wallwhale-rest-body": "eyJib2d1cyI6IDF9"},  # {"bogus": 1}
    )
    assert reply.status == 200, reply.body


async def test_a_large_body_is_checked_too(stack: tuple[Envoy, dict[str, str]]) -> None:
    envoy, key = stack
    # About 30 KiB: its copy is over gRPC's default metadata limit of 8 KiB.
    reply = await http(
        "POST",
        envoy.url("/v1/admin/steam-accounts"),
        json_body={"steamAccount": {"username": "dave_we", "displayName": "d" * 30_000}, "pasword": "pw"},
        headers=key,
    )
    assert reply.status == 400, reply.body
    assert [v["field"] for v in violations(reply.json())] == ["pasword"]
