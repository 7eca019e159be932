"""A batch's state derived from its downloads' states (core/batch_state.py) without a server: the
counts, the derivation rule, and how changes noted within one transaction are merged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from wallwhale.core import batch_state
from wallwhale.core.batch_state import Counts, derive
from wallwhale.db.models import BatchState, DownloadState

B, D = BatchState, DownloadState
FINAL = {D.SUCCEEDED, D.FAILED, D.CANCELLED}


def counts(**by_state: int) -> Counts:
    return Counts.of({D[name]: number for name, number in by_state.items()})


def test_counts_sum_every_state_and_name_the_final_ones() -> None:
    mixed = counts(QUEUED=2, RUNNING=1, ARCHIVING=1, SUCCEEDED=3, FAILED=1, CANCELLED=2)
    assert mixed == Counts(total=10, succeeded=3, failed=1, cancelled=2)
    assert mixed.final == 6
    assert Counts.of({}) == Counts()
    assert Counts().final == 0


@pytest.mark.parametrize(
    ("by_state", "cancel_requested", "expected"),
    [
        ({"QUEUED": 1, "SUCCEEDED": 4}, False, B.ACTIVE),
        ({"WAITING_FOR_STEAM_GUARD": 1, "FAILED": 4}, False, B.ACTIVE),
        ({"RUNNING": 1, "CANCELLED": 2}, True, B.ACTIVE),  # cancel asked, one still running: not yet
        ({"SUCCEEDED": 3}, False, B.SUCCEEDED),
        ({"SUCCEEDED": 2, "FAILED": 1}, False, B.PARTIALLY_SUCCEEDED),
        ({"SUCCEEDED": 1, "CANCELLED": 1}, False, B.PARTIALLY_SUCCEEDED),
        ({"FAILED": 2}, False, B.FAILED),
        ({"FAILED": 1, "CANCELLED": 3}, False, B.FAILED),
        ({"CANCELLED": 3}, False, B.CANCELLED),  # every download cancelled one by one
        ({"SUCCEEDED": 2, "CANCELLED": 1}, True, B.CANCELLED),  # CancelBatch decides, whatever finished
        ({"SUCCEEDED": 3}, True, B.CANCELLED),
    ],
)
def test_the_state_follows_the_downloads(
    by_state: dict[str, int], cancel_requested: bool, expected: BatchState
) -> None:
    for current in B:
        assert derive(counts(**by_state), cancel_requested=cancel_requested, current=current) is expected


@pytest.mark.parametrize("current", list(B))
def test_a_batch_whose_downloads_were_all_deleted_keeps_its_state(current: BatchState) -> None:
    assert derive(Counts(), cancel_requested=False, current=current) is current
    assert derive(Counts(), cancel_requested=True, current=current) is current


@settings(database=None)  # nothing written into the repository
@given(st.dictionaries(st.sampled_from(list(D)), st.integers(0, 5)), st.booleans())
def test_a_batch_is_active_exactly_while_a_download_is_not_final(
    by_state: dict[DownloadState, int], cancel_requested: bool
) -> None:
    derived = derive(Counts.of(by_state), cancel_requested=cancel_requested, current=B.SUCCEEDED)
    if not sum(by_state.values()):
        assert derived is B.SUCCEEDED
    elif any(number for state, number in by_state.items() if state not in FINAL):
        assert derived is B.ACTIVE
    else:
        only_successes = not any(number for state, number in by_state.items() if state is not D.SUCCEEDED)
        assert derived is not B.ACTIVE
        if cancel_requested:
            assert derived is B.CANCELLED
        assert (derived is B.SUCCEEDED) == (only_successes and not cancel_requested)


def test_changes_noted_in_one_transaction_merge_per_batch_and_a_rollback_forgets_them() -> None:
    engine = create_engine("sqlite://")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        session.execute(text("SELECT 1"))  # a transaction really begun, as around a download's change
        batch_state.note_change(session, "b1", start, revived=False)
        batch_state.note_change(session, "b2", start, revived=False)
        batch_state.note_change(session, "b1", start - timedelta(seconds=5), revived=True)
        batch_state.note_change(session, "b1", start + timedelta(seconds=5), revived=False)
        # Per batch: the latest moment, and "revived" if any change revived it.
        assert session.info["wallwhale.batches_changed"] == {
            "b1": (start + timedelta(seconds=5), True),
            "b2": (start, False),
        }
        session.rollback()
        assert "wallwhale.batches_changed" not in session.info
    engine.dispose()
