"""What a watch's check finds changed (core.watch_checks.plan), the back-off and the spread of checks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from wallwhale.core.watch_checks import (
    Answers,
    Claimed,
    ItemChange,
    StoredItem,
    members,
    next_check,
    plan,
    retry_delay,
)
from wallwhale.db.watch_models import WatchChange, WatchKind, WatchState
from wallwhale.steam.webapi import CollectionDetails, ItemDetails

UPDATED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def item(workshop_id: int, handle: int = 7, **fields: object) -> ItemDetails:
    values: dict[str, object] = {"app_id": 431960, "content_handle": handle, "time_updated": UPDATED_AT}
    return ItemDetails(workshop_id, 1, **(values | fields))  # type: ignore[arg-type]  # fields by name


def stored(workshop_id: int, handle: int | None = 7, *, available: bool = True) -> StoredItem:
    return StoredItem(workshop_id, handle, UPDATED_AT if handle else None, available)


def watch(
    kind: WatchKind, workshop_id: int, *items: StoredItem, state: WatchState = WatchState.ACTIVE
) -> Claimed:
    return Claimed("w", kind, workshop_id, 900, state, 0, {entry.workshop_id: entry for entry in items})


def kinds(found: list[ItemChange]) -> list[tuple[WatchChange, int]]:
    return [(change.change, change.workshop_id) for change in found]


def test_an_item_with_the_same_version_is_quiet() -> None:
    claimed = watch(WatchKind.ITEM, 1, stored(1))
    result = plan(claimed, Answers({1: item(1)}, {}))
    assert result.changes == []
    assert result.quiet(claimed)


def test_a_new_content_handle_or_update_time_is_a_new_version_that_downloads() -> None:
    claimed = watch(WatchKind.ITEM, 1, stored(1))
    for details in (item(1, handle=8), item(1, time_updated=UPDATED_AT + timedelta(seconds=1))):
        result = plan(claimed, Answers({1: details}, {}))
        assert kinds(result.changes) == [(WatchChange.UPDATED, 1)]
        assert result.changes[0].downloads


def test_an_item_gone_private_or_banned_is_marked_once() -> None:
    for details, reason in (
        (ItemDetails(1, 9), "removed, or private"),
        (item(1, banned=True, ban_reason="copyright"), "banned on Steam: copyright"),
        (item(1, visibility=2), "private"),
        (None, "removed, or private"),
    ):
        claimed = watch(WatchKind.ITEM, 1, stored(1))
        result = plan(claimed, Answers({1: details} if details else {}, {}))
        assert kinds(result.changes) == [(WatchChange.UNAVAILABLE, 1)]
        assert reason in result.unavailable
        assert not result.changes[0].downloads
        # Already marked: the next checks record nothing (the watch does not spin).
        again = watch(WatchKind.ITEM, 1, stored(1, available=False), state=WatchState.UNAVAILABLE)
        assert plan(again, Answers({1: details} if details else {}, {})).quiet(again)


def test_an_item_back_with_new_content_is_available_and_updated() -> None:
    claimed = watch(WatchKind.ITEM, 1, stored(1, available=False), state=WatchState.UNAVAILABLE)
    result = plan(claimed, Answers({1: item(1, handle=9)}, {}))
    assert kinds(result.changes) == [(WatchChange.AVAILABLE, 1), (WatchChange.UPDATED, 1)]
    assert result.unavailable == ""
    assert not result.quiet(claimed)


def test_a_collection_follows_its_members() -> None:
    claimed = watch(WatchKind.COLLECTION, 100, stored(1), stored(2))
    collections = {100: CollectionDetails(100, 1, (2, 3))}
    result = plan(claimed, Answers({2: item(2), 3: item(3)}, collections))
    assert kinds(result.changes) == [(WatchChange.ADDED, 3), (WatchChange.REMOVED, 1)]
    assert result.changes[0].downloads


def test_a_member_added_while_unavailable_is_reported_without_a_download() -> None:
    claimed = watch(WatchKind.COLLECTION, 100)
    result = plan(claimed, Answers({3: ItemDetails(3, 9)}, {100: CollectionDetails(100, 1, (3,))}))
    assert kinds(result.changes) == [(WatchChange.ADDED, 3)]
    assert not result.changes[0].downloads


def test_a_collection_steam_does_not_show_makes_the_watch_unavailable_and_keeps_its_items() -> None:
    claimed = watch(WatchKind.COLLECTION, 100, stored(1))
    result = plan(claimed, Answers({}, {100: CollectionDetails(100, 9)}))
    assert result.changes == []
    assert "collection" in result.unavailable


def test_nested_collections_are_followed_once_in_order() -> None:
    collections = {
        100: CollectionDetails(100, 1, (1, 2), (200,)),
        200: CollectionDetails(200, 1, (2, 3), (100,)),  # a cycle back to the first
    }
    assert members(collections, 100) == [1, 2, 3]
    assert members(collections, 300) is None


def test_failures_back_off_doubling_up_to_the_interval() -> None:
    assert [retry_delay(900, failures, 60) for failures in range(6)] == [60, 120, 240, 480, 900, 900]
    assert retry_delay(30, 0, 60) == 30


def test_checks_are_spread_by_up_to_a_tenth_of_the_interval() -> None:
    rng, now = random.Random(1), datetime(2026, 1, 1, tzinfo=UTC)
    delays = [(next_check(now, 900, rng) - now).total_seconds() for _ in range(1000)]
    assert 810 <= min(delays) < 830
    assert 970 < max(delays) <= 990
