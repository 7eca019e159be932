"""Page tokens (core/paging.py) without a server: where a listing goes on, that a walk through the
pages meets every row once, and that a token is refused when altered or used with other filters."""

from __future__ import annotations

import base64
import json

import pytest

from wallwhale.core import paging
from wallwhale.errors import InvalidArgument


def forged_raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forged(payload: object) -> str:
    return forged_raw(json.dumps(payload).encode())


def refusal(page_size: int, token: str, **filters: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        paging.page(page_size, token, **filters)
    return raised.value


def test_the_first_page_starts_at_zero_with_a_default_and_a_ceiling() -> None:
    assert paging.page(0, "").offset == 0
    assert paging.page(0, "").size == paging.DEFAULT_PAGE_SIZE
    assert paging.page(7, "").size == 7
    assert paging.page(paging.MAX_PAGE_SIZE + 1, "").size == paging.MAX_PAGE_SIZE
    error = refusal(-1, "")
    assert [(v.field, v.description) for v in error.violations] == [("page_size", "must not be negative")]
    assert error.reason == "INVALID_ARGUMENT"


def test_walking_the_tokens_meets_every_row_once_and_ends_with_an_empty_token() -> None:
    rows, total = list(range(1234)), 1234
    seen: list[int] = []
    token, pages = "", 0
    while True:
        current = paging.page(100, token, state="QUEUED", owner="u1")
        seen += rows[current.offset : current.offset + current.size]
        pages += 1
        token = current.next_token(total)
        if not token:
            break
        assert "=" not in token  # unpadded, safe in a URL
    assert seen == rows
    assert pages == 13


def test_the_last_full_page_has_no_next_token() -> None:
    assert paging.page(10, "").next_token(10) == ""
    assert paging.page(10, "").next_token(11) != ""
    assert paging.page(10, "").next_token(0) == ""


def test_a_token_follows_its_filters_in_any_order_and_any_page_size() -> None:
    token = paging.page(10, "", state="QUEUED", owner="u1").next_token(100)
    following = paging.page(25, token, owner="u1", state="QUEUED")
    assert (following.offset, following.size) == (10, 25)


@pytest.mark.parametrize(
    "filters",
    [{"state": "FAILED", "owner": "u1"}, {"state": "QUEUED"}, {"state": "QUEUED", "owner": "u1", "x": 1}],
)
def test_a_token_used_with_other_filters_is_refused(filters: dict[str, object]) -> None:
    token = paging.page(10, "", state="QUEUED", owner="u1").next_token(100)
    error = refusal(10, token, **filters)
    assert error.reason == "INVALID_PAGE_TOKEN"
    assert [(v.field, v.description) for v in error.violations] == [
        ("page_token", "belongs to a listing with other filters")
    ]


def test_altered_and_foreign_tokens_are_refused_as_not_issued_here() -> None:
    fingerprint = json.loads(base64.urlsafe_b64decode(paging.page(10, "").next_token(100) + "=="))["f"]
    for token in (
        "not base64 at all!",
        forged([1, 2]),
        forged({"o": 10}),  # no fingerprint
        forged({"o": 10.0, "f": fingerprint}),  # a float where next_token writes an int
        forged({"o": True, "f": fingerprint}),  # a bool is an int to Python, not to the database
        forged({"o": "10", "f": fingerprint}),
        forged({"o": 2**62 + 1, "f": fingerprint}),  # more than the database takes as OFFSET
        forged_raw(b"[" * 5000 + b"]" * 5000),  # nesting deep enough to raise RecursionError
    ):
        error = refusal(10, token)
        assert error.reason == "INVALID_PAGE_TOKEN", token
        assert [v.field for v in error.violations] == ["page_token"], token
        assert error.violations[0].description == "is not a token this server issued", token


def test_a_negative_offset_with_the_right_fingerprint_is_refused() -> None:
    fingerprint = json.loads(base64.urlsafe_b64decode(paging.page(10, "").next_token(100) + "=="))["f"]
    assert paging.page(10, forged({"o": 2**62, "f": fingerprint})).offset == 2**62  # the largest accepted
    assert refusal(10, forged({"o": -1, "f": fingerprint})).reason == "INVALID_PAGE_TOKEN"
