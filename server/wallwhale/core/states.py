"""A download's states and the moves between them (core.downloads.transition makes the moves)."""

from __future__ import annotations

from wallwhale.db.models import DownloadState
from wallwhale.errors import FailedPrecondition

QUEUED, RUNNING, WAITING, ARCHIVING = (
    DownloadState.QUEUED,
    DownloadState.RUNNING,
    DownloadState.WAITING_FOR_STEAM_GUARD,
    DownloadState.ARCHIVING,
)
SUCCEEDED, FAILED, CANCELLED = DownloadState.SUCCEEDED, DownloadState.FAILED, DownloadState.CANCELLED

FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
# States in which a worker holds the job's lease (and a DepotDownloader process may run).
ACTIVE_STATES = frozenset({RUNNING, WAITING, ARCHIVING})
MOVES: dict[DownloadState, frozenset[DownloadState]] = {
    QUEUED: frozenset({RUNNING, FAILED, CANCELLED}),
    # RUNNING -> SUCCEEDED: an archive of the same content turned up in the cache before the run.
    RUNNING: frozenset({WAITING, ARCHIVING, SUCCEEDED, QUEUED, FAILED, CANCELLED}),
    WAITING: frozenset({RUNNING, QUEUED, FAILED, CANCELLED}),
    ARCHIVING: frozenset({SUCCEEDED, QUEUED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset({QUEUED}),
    CANCELLED: frozenset({QUEUED}),
}


def check_move(previous: DownloadState, state: DownloadState) -> None:
    """FAILED_PRECONDITION unless a download may go from `previous` to `state` (staying is allowed)."""
    if state is not previous and state not in MOVES[previous]:
        raise FailedPrecondition(f"a download cannot go from {previous.value} to {state.value}")
