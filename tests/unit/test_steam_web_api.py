"""The Steam Web API client against a local HTTP server that answers in Steam's format."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fakes import depotdownloader as dd
from tests.fakes.steam import FakeSteam
from tests.fakes.webapi import COLLECTION_PATH, DETAILS_PATH, FakeWebApi
from wallwhale.steam.webapi import SteamWebApi, WebApiUnavailable


@pytest.fixture
def steam(tmp_path: Path) -> FakeSteam:
    return FakeSteam(tmp_path / "steam")


@pytest.fixture
def web(steam: FakeSteam) -> Iterator[FakeWebApi]:
    with FakeWebApi(steam) as server:
        yield server


async def test_item_details_are_read_from_steams_format(steam: FakeSteam, web: FakeWebApi) -> None:
    steam.add_item(3342703486, title="Neon Rain", files={"project.json": b"{}", "scene.pkg": 5000})
    api = SteamWebApi(web.base_url)
    try:
        details = (await api.item_details([3342703486]))[3342703486]
    finally:
        await api.aclose()
    manifest = steam.manifest(3342703486)
    assert details.found
    assert details.app_id == dd.WALLPAPER_ENGINE
    assert details.title == "Neon Rain"
    assert details.file_size == 5002
    assert details.content_handle == manifest["id"]
    assert details.time_updated == datetime.fromtimestamp(manifest["created"], UTC)
    assert details.preview_url.startswith("https://")
    assert details.has_content
    assert not details.banned
    assert api.health.reachable is True


async def test_content_handle_changes_with_the_files(steam: FakeSteam, web: FakeWebApi) -> None:
    steam.add_item(11, files={"a.bin": 100})
    api = SteamWebApi(web.base_url)
    try:
        before = (await api.item_details([11]))[11].content_handle
        steam.add_item(11, files={"a.bin": 101})
        after = (await api.item_details([11]))[11].content_handle
    finally:
        await api.aclose()
    assert before
    assert after
    assert before != after


async def test_unknown_private_and_banned_items(steam: FakeSteam, web: FakeWebApi) -> None:
    steam.add_item(21, web={"result": 9})  # private: without a key Steam says "file not found"
    steam.add_item(22, web={"banned": 1, "ban_reason": "Copyright"})
    api = SteamWebApi(web.base_url)
    try:
        details = await api.item_details([20, 21, 22])
    finally:
        await api.aclose()
    assert not details[20].found
    assert details[20].result_name == "FileNotFound"
    assert not details[21].found
    assert details[22].found
    assert details[22].banned
    assert details[22].ban_reason == "Copyright"


async def test_more_than_a_hundred_ids_are_asked_in_batches(steam: FakeSteam, web: FakeWebApi) -> None:
    ids = list(range(1000, 1250))
    for workshop_id in ids[::50]:
        steam.add_item(workshop_id, files={"a.bin": 10})
    api = SteamWebApi(web.base_url)
    try:
        details = await api.item_details([*ids, ids[0]])  # a repeated id is asked once
    finally:
        await api.aclose()
    assert sorted(details) == ids
    assert [len(asked) for _, asked in web.requests] == [100, 100, 50]
    assert {workshop_id for workshop_id, item in details.items() if item.found} == set(ids[::50])


async def test_collections_list_their_items_in_order(steam: FakeSteam, web: FakeWebApi) -> None:
    for workshop_id in (31, 32, 33):
        steam.add_item(workshop_id, files={"a.bin": 10})
    steam.add_collection(40, [33, 31])
    steam.add_collection(41, [32, 40], title="Favourites")
    api = SteamWebApi(web.base_url)
    try:
        collections = await api.collection_details([41, 31])
        details = await api.item_details([41])
    finally:
        await api.aclose()
    assert collections[41].is_collection
    assert collections[41].item_ids == (32,)
    assert collections[41].collection_ids == (40,)
    assert not collections[31].is_collection
    assert details[41].found
    assert not details[41].has_content
    assert details[41].title == "Favourites"
    assert web.asked(COLLECTION_PATH) == [41, 31]
    assert web.asked(DETAILS_PATH) == [41]


@pytest.mark.parametrize("mode", ["down", "garbage", "stopped"])
async def test_an_unreachable_api_is_an_error_and_is_remembered(
    steam: FakeSteam, web: FakeWebApi, mode: str
) -> None:
    api = SteamWebApi(web.base_url, timeout_seconds=2)
    if mode == "stopped":
        web.stop()
    else:
        web.mode = mode
    try:
        with pytest.raises(WebApiUnavailable, match="Steam's Web API"):
            await api.item_details([1])
    finally:
        await api.aclose()
    assert api.health.reachable is False
    assert api.health.error
