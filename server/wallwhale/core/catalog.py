"""What Steam says about workshop items, asked before a job spends a Steam account on them.

A lookup happens outside any database transaction (it is an HTTP round trip). When the Web API is
off or cannot be reached, the answer is "unknown" and jobs are queued anyway; the worker asks again
before it runs them. After a failure the catalog does not ask again for `retry_seconds`, so a Steam
outage does not add a timeout to every CreateDownload.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from wallwhale.errors import FailedPrecondition, NotFound
from wallwhale.log import get_logger
from wallwhale.steam.webapi import (
    CollectionDetails,
    ItemDetails,
    SteamWebApi,
    WebApiHealth,
    WebApiUnavailable,
)

_log = get_logger("wallwhale.catalog")

# visibility values of GetPublishedFileDetails.
_VISIBILITY = {1: "friends-only", 2: "private"}


@dataclass(frozen=True)
class Lookup:
    """Details of every id asked (empty when Steam could not be asked), and which ids are collections."""

    items: dict[int, ItemDetails] = field(default_factory=dict)
    collections: dict[int, CollectionDetails] = field(default_factory=dict)
    available: bool = True

    def item(self, workshop_id: int) -> ItemDetails | None:
        return self.items.get(workshop_id)


UNKNOWN = Lookup(available=False)


class Catalog:
    def __init__(self, api: SteamWebApi | None, retry_seconds: float = 60.0):
        self._api = api
        self._retry_seconds = retry_seconds
        self._quiet_until = 0.0

    @property
    def enabled(self) -> bool:
        return self._api is not None

    @property
    def health(self) -> WebApiHealth | None:
        return self._api.health if self._api is not None else None

    @property
    def api(self) -> SteamWebApi | None:
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()

    async def downloadable(self, workshop_id: int) -> ItemDetails | None:
        """The item's details before CreateDownload queues it (None when Steam could not be asked);
        NOT_FOUND / FAILED_PRECONDITION when it cannot be downloaded."""
        return check_downloadable(await self.look_up([workshop_id]), workshop_id)

    async def look_up(self, workshop_ids: Iterable[int], *, force: bool = False) -> Lookup:
        """Details of the ids; ids without content are also asked whether they are collections.

        `force` asks even during the quiet time after a failure (the engine, before a run)."""
        ids = list(workshop_ids)
        if self._api is None or not ids or (not force and time.monotonic() < self._quiet_until):
            return UNKNOWN
        try:
            items = await self._api.item_details(ids)
            # A collection has no content of its own; only such ids need the second question.
            maybe = [value for value, item in items.items() if item.found and item.content_handle is None]
            collections = await self._api.collection_details(maybe) if maybe else {}
        except WebApiUnavailable as exc:
            self._quiet_until = time.monotonic() + self._retry_seconds
            _log.warning("steam web api unavailable; jobs are queued without item details", error=str(exc))
            return UNKNOWN
        self._quiet_until = 0.0
        return Lookup(items, {value: c for value, c in collections.items() if c.is_collection})


def check_downloadable(lookup: Lookup, workshop_id: int, field: str = "url_or_id") -> ItemDetails | None:
    """The item's details when it can be downloaded (None when unknown); else NOT_FOUND or
    FAILED_PRECONDITION naming the reason, before any account or quota is spent."""
    if not lookup.available:
        return None
    if workshop_id in lookup.collections:
        raise FailedPrecondition(
            f"workshop item {workshop_id} is a collection; download it with CreateBatch",
            reason="WORKSHOP_ITEM_IS_COLLECTION",
        )
    item = lookup.item(workshop_id)
    if item is None or not item.found:
        raise NotFound(
            "workshop item",
            str(workshop_id),
            message=f"Steam has no public workshop item {workshop_id} (it does not exist, was removed "
            "or is private)",
            reason="WORKSHOP_ITEM_UNAVAILABLE",
        )
    if item.banned:
        why = f": {item.ban_reason}" if item.ban_reason else ""
        raise FailedPrecondition(
            f"workshop item {workshop_id} is banned on Steam{why}", reason="WORKSHOP_ITEM_UNAVAILABLE"
        )
    if item.visibility in _VISIBILITY:
        raise FailedPrecondition(
            f"workshop item {workshop_id} is {_VISIBILITY[item.visibility]}",
            reason="WORKSHOP_ITEM_UNAVAILABLE",
        )
    if not item.has_content:
        raise FailedPrecondition(
            f"workshop item {workshop_id} has no downloadable content", reason="WORKSHOP_ITEM_UNAVAILABLE"
        )
    return item
