"""Workshop item references (steam/workshop.py): the URL forms people paste and bare ids; anything
else is INVALID_ARGUMENT naming the field, since only a validated id may reach DepotDownloader."""

from __future__ import annotations

import pytest

from wallwhale.errors import InvalidArgument
from wallwhale.steam.workshop import parse_workshop_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2831234567", 2831234567),
        ("  2831234567\n", 2831234567),
        ("https://steamcommunity.com/sharedfiles/filedetails/?id=2831234567", 2831234567),
        ("https://steamcommunity.com/sharedfiles/filedetails/?id=2831234567&searchtext=rain", 2831234567),
        ("http://www.steamcommunity.com/workshop/filedetails/?id=12", 12),
        ("steamcommunity.com/sharedfiles/filedetails?id=99", 99),
        ("steam://url/CommunityFilePage/2831234567", 2831234567),
        ("steam://openurl/https://steamcommunity.com/sharedfiles/filedetails/?id=5", 5),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_workshop_references_people_paste(text: str, expected: int) -> None:
    assert parse_workshop_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "0",
        str(2**64),
        str(2**63),  # stored as a signed BIGINT
        "-5",
        "12 34",
        "https://example.com/sharedfiles/filedetails/?id=1",
        "https://steamcommunity.com/app/431960/workshop/",
        "https://steamcommunity.com/sharedfiles/filedetails/?id=abc",
        "https://steamcommunity.com/sharedfiles/filedetails/?id=1&id=2",
        "file:///etc/passwd",
        "steam://url/CommunityFilePage/../../x",
        "1" * 3000,
    ],
)
def test_anything_else_is_invalid_and_names_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_workshop_id(text)
    assert raised.value.violations[0].field == "url_or_id"
    assert raised.value.reason == "INVALID_WORKSHOP_ITEM"
