"""Steam's public Web API: what an item is before an account is spent on it.

`ISteamRemoteStorage/GetPublishedFileDetails/v1` and `GetCollectionDetails/v1` need no key and take
form-encoded POSTs of up to 100 ids (`itemcount` / `collectioncount` and `publishedfileids[i]`). Both
answer HTTP 200 with `{"response": {...}}` and one entry per id; an entry's `result` is an EResult
(1 = OK, 9 = file not found, which is also what a private or friends-only item looks like without a
key). Numbers arrive as JSON numbers or as decimal strings (64-bit values always as strings), so every
numeric field is read leniently.

The client never raises for an item that Steam does not know: that is an answer (`ItemDetails.found`).
It raises `WebApiUnavailable` when Steam could not be asked (network, HTTP status, malformed reply),
and remembers the outcome so the status service can report whether the Web API is reachable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from wallwhale import metrics

DEFAULT_BASE_URL = "https://api.steampowered.com"
BATCH_LIMIT = 100  # ids per request; Steam rejects larger batches
RESULT_OK = 1
RESULT_FILE_NOT_FOUND = 9

# EResult values seen in item entries, for messages.
_RESULT_NAMES = {
    2: "Fail",
    8: "InvalidParam",
    9: "FileNotFound",
    15: "AccessDenied",
    16: "Timeout",
    20: "ServiceUnavailable",
}

# `filetype` of a collection's children (EWorkshopFileType): 0 an item, 2 a nested collection.
_CHILD_ITEM = 0
_CHILD_COLLECTION = 2


_Entry = TypeVar("_Entry", "ItemDetails", "CollectionDetails")


class WebApiUnavailable(Exception):
    """Steam's Web API could not be asked or gave an answer that is not its format."""


@dataclass(frozen=True, slots=True)
class ItemDetails:
    workshop_id: int
    # EResult of this entry: 1 when Steam returned the item's details.
    result: int
    app_id: int | None = None
    title: str = ""
    file_size: int = 0
    time_updated: datetime | None = None
    preview_url: str = ""
    # hcontent_file: the UGC handle of the content; it changes whenever the content does.
    content_handle: int | None = None
    # Legacy items whose content is a single web file (DepotDownloader fetches it over HTTP).
    file_url: str = ""
    banned: bool = False
    ban_reason: str = ""
    # 0 public, 1 friends only, 2 private, 3 unlisted.
    visibility: int = 0

    @property
    def found(self) -> bool:
        return self.result == RESULT_OK

    @property
    def result_name(self) -> str:
        return _RESULT_NAMES.get(self.result, f"EResult {self.result}")

    @property
    def has_content(self) -> bool:
        """A collection (or anything else without a file) has neither a content handle nor a URL."""
        return bool(self.content_handle) or bool(self.file_url)


@dataclass(frozen=True, slots=True)
class CollectionDetails:
    workshop_id: int
    result: int
    # In Steam's sort order.
    item_ids: tuple[int, ...] = ()
    collection_ids: tuple[int, ...] = ()

    @property
    def is_collection(self) -> bool:
        return self.result == RESULT_OK and bool(self.item_ids or self.collection_ids)


@dataclass(frozen=True, slots=True)
class WebApiHealth:
    """The outcome of the latest request, for the status service."""

    reachable: bool | None  # None: not asked yet
    last_success: float | None = None  # time.time() of the latest answer
    error: str = ""


class SteamWebApi:
    """Asks Steam's Web API about workshop items and collections (see the module docstring)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_seconds: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_seconds,
            transport=transport,
            headers={"user-agent": "WallWhale", "accept": "application/json"},
            follow_redirects=False,
        )
        self._health = WebApiHealth(reachable=None)

    @property
    def health(self) -> WebApiHealth:
        return self._health

    async def aclose(self) -> None:
        await self._client.aclose()

    async def ping(self) -> WebApiHealth:
        """Asks once (about an id that does not exist: any well-formed answer means it works)."""
        with contextlib.suppress(WebApiUnavailable):
            await self.item_details([1])
        return self._health

    async def item_details(self, workshop_ids: Iterable[int]) -> dict[int, ItemDetails]:
        """Details for each id (every id asked is in the result, found or not)."""
        return await self._ask(
            "/ISteamRemoteStorage/GetPublishedFileDetails/v1/",
            ("itemcount", "publishedfiledetails"),
            workshop_ids,
            _item,
            lambda workshop_id: ItemDetails(workshop_id, RESULT_FILE_NOT_FOUND),
        )

    async def collection_details(self, workshop_ids: Iterable[int]) -> dict[int, CollectionDetails]:
        """The children of each id that is a collection; other ids come back with no children."""
        return await self._ask(
            "/ISteamRemoteStorage/GetCollectionDetails/v1/",
            ("collectioncount", "collectiondetails"),
            workshop_ids,
            _collection,
            lambda workshop_id: CollectionDetails(workshop_id, RESULT_FILE_NOT_FOUND),
        )

    async def _ask(
        self,
        path: str,
        fields: tuple[str, str],
        workshop_ids: Iterable[int],
        parse: Callable[[Mapping[str, Any]], _Entry | None],
        missing: Callable[[int], _Entry],
    ) -> dict[int, _Entry]:
        count_field, list_field = fields
        found: dict[int, _Entry] = {}
        for chunk in _chunks(_unique(workshop_ids)):
            response = await self._post(path, count_field, chunk)
            for entry in _entries(response, list_field):
                details = parse(entry)
                if details is not None:
                    found[details.workshop_id] = details
            for workshop_id in chunk:
                # An id Steam left out of its answer is one it does not know.
                found.setdefault(workshop_id, missing(workshop_id))
        return found

    async def _post(self, path: str, count_field: str, ids: Sequence[int]) -> Mapping[str, Any]:
        form = {count_field: str(len(ids))}
        form.update({f"publishedfileids[{index}]": str(value) for index, value in enumerate(ids)})
        try:
            reply = await self._client.post(path, data=form)
            if reply.status_code != httpx.codes.OK:
                raise WebApiUnavailable(f"Steam's Web API answered HTTP {reply.status_code}")
            try:
                body = reply.json()
            except ValueError:
                raise WebApiUnavailable("Steam's Web API answered something that is not JSON") from None
            response = body.get("response") if isinstance(body, dict) else None
            if not isinstance(response, dict):
                raise WebApiUnavailable("Steam's Web API answer has no 'response' object")
        except httpx.HTTPError as exc:
            metrics.WEBAPI_REQUESTS.labels("error").inc()
            self._health = WebApiHealth(False, self._health.last_success, _describe(exc))
            raise WebApiUnavailable(f"Steam's Web API could not be reached: {_describe(exc)}") from exc
        except WebApiUnavailable as exc:
            metrics.WEBAPI_REQUESTS.labels("error").inc()
            self._health = WebApiHealth(False, self._health.last_success, str(exc))
            raise
        metrics.WEBAPI_REQUESTS.labels("ok").inc()
        self._health = WebApiHealth(True, time.time())
        return response


def _unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(value) for value in values))


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), BATCH_LIMIT):
        yield values[start : start + BATCH_LIMIT]


def _entries(response: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    entries = response.get(key, [])
    if not isinstance(entries, list):
        raise WebApiUnavailable(f"Steam's Web API answer has no '{key}' list")
    return [entry for entry in entries if isinstance(entry, dict)]


def _item(entry: Mapping[str, Any]) -> ItemDetails | None:
    workshop_id = _number(entry.get("publishedfileid"))
    if not workshop_id:
        return None
    result = _number(entry.get("result")) or 0
    if result != RESULT_OK:
        return ItemDetails(workshop_id, result)
    updated = _number(entry.get("time_updated"))
    return ItemDetails(
        workshop_id=workshop_id,
        result=result,
        app_id=_number(entry.get("consumer_app_id")) or None,
        title=_text(entry.get("title")),
        file_size=_number(entry.get("file_size")) or 0,
        time_updated=datetime.fromtimestamp(updated, UTC) if updated else None,
        preview_url=_text(entry.get("preview_url")),
        content_handle=_number(entry.get("hcontent_file")) or None,
        file_url=_text(entry.get("file_url")),
        banned=bool(_number(entry.get("banned"))),
        ban_reason=_text(entry.get("ban_reason")),
        visibility=_number(entry.get("visibility")) or 0,
    )


def _collection(entry: Mapping[str, Any]) -> CollectionDetails | None:
    workshop_id = _number(entry.get("publishedfileid"))
    if not workshop_id:
        return None
    result = _number(entry.get("result")) or 0
    children = entry.get("children") if result == RESULT_OK else None
    if not isinstance(children, list):
        return CollectionDetails(workshop_id, result)
    ordered = sorted(
        (child for child in children if isinstance(child, dict)),
        key=lambda child: _number(child.get("sortorder")) or 0,
    )
    items: list[int] = []
    collections: list[int] = []
    for child in ordered:
        child_id = _number(child.get("publishedfileid"))
        if not child_id:
            continue
        kind = _number(child.get("filetype")) or _CHILD_ITEM
        if kind == _CHILD_COLLECTION:
            collections.append(child_id)
        elif kind == _CHILD_ITEM:
            items.append(child_id)
    return CollectionDetails(workshop_id, result, tuple(items), tuple(collections))


def _number(value: object) -> int | None:
    """A JSON number or a decimal string (Steam sends 64-bit numbers as strings), else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _describe(exc: httpx.HTTPError) -> str:
    # The exception text can be empty (e.g. a bare ReadTimeout); its type still says what happened.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
