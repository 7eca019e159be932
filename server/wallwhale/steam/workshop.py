"""Workshop item references: the URL forms people paste, and bare ids.

DepotDownloader crashes on a non-numeric `-pubfile` and silently downloads the whole app when the
value is missing, so only a validated decimal id in range ever reaches its command line.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from wallwhale.errors import InvalidArgument

WALLPAPER_ENGINE_APP_ID = 431960
# PublishedFileId is a ulong, but ids are stored in a signed BIGINT; real ids are far below 2**63.
MAX_WORKSHOP_ID = 2**63 - 1
MAX_APP_ID = 2**32 - 1

_STEAM_HOSTS = {"steamcommunity.com", "www.steamcommunity.com"}
# Pages whose ?id= is a published file id.
_DETAIL_PATHS = re.compile(r"^/(?:sharedfiles|workshop)/filedetails/?$", re.IGNORECASE)
# steam://url/CommunityFilePage/<id> (the Steam client's "open in Steam" links).
_STEAM_PROTOCOL = re.compile(r"^steam://url/CommunityFilePage/(\d+)/?$", re.IGNORECASE)
_STEAM_OPENURL = re.compile(r"^steam://openurl/(.+)$", re.IGNORECASE)
_DIGITS = re.compile(r"^\d{1,20}$")


def parse_workshop_id(text: str, field: str = "url_or_id") -> int:
    """The published file id in `text`, or INVALID_ARGUMENT naming `field`."""
    value = text.strip()
    if not value:
        raise _invalid(field, "is required: a Workshop URL or a numeric item id")
    if len(value) > 2048:
        raise _invalid(field, "is longer than 2048 characters")
    if _DIGITS.match(value):
        return _in_range(int(value), field)
    if match := _STEAM_PROTOCOL.match(value):
        return _in_range(int(match.group(1)), field)
    if match := _STEAM_OPENURL.match(value):
        value = match.group(1)
    return _from_web_url(value, field)


def _from_web_url(value: str, field: str) -> int:
    if "://" not in value and value.lower().startswith(tuple(_STEAM_HOSTS)):
        value = "https://" + value  # pasted without the scheme
    try:
        parts = urlsplit(value)
    except ValueError:
        raise _invalid(field, "is not a URL or a numeric item id") from None
    if parts.scheme.lower() not in {"http", "https"} or (parts.hostname or "") not in _STEAM_HOSTS:
        raise _invalid(
            field,
            "must be a steamcommunity.com Workshop URL (…/sharedfiles/filedetails/?id=N), "
            "a steam://url/CommunityFilePage/N link or a numeric item id",
        )
    if not _DETAIL_PATHS.match(parts.path):
        raise _invalid(field, f"the path {parts.path!r} is not a Workshop item page (…/filedetails/?id=N)")
    ids = parse_qs(parts.query).get("id", [])
    if len(ids) != 1 or not _DIGITS.match(ids[0]):
        raise _invalid(field, "the URL has no numeric ?id= parameter")
    return _in_range(int(ids[0]), field)


def _in_range(workshop_id: int, field: str) -> int:
    if not 1 <= workshop_id <= MAX_WORKSHOP_ID:
        raise _invalid(field, f"the item id must be between 1 and {MAX_WORKSHOP_ID}")
    return workshop_id


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument.field(field, description, reason="INVALID_WORKSHOP_ITEM")


def check_app_id(app_id: int, field: str = "app_id") -> int:
    if not 1 <= app_id <= MAX_APP_ID:
        raise InvalidArgument.field(field, f"must be between 1 and {MAX_APP_ID}")
    return app_id
