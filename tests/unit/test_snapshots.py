"""State events stored by earlier versions stay readable (core.snapshots), and read back into the
same API message as the live row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wallwhale.core.events import EventKind, StoredEvent
from wallwhale.core.snapshots import StateChange, state_in
from wallwhale.db.models import ArchiveState, DownloadState
from wallwhale.rpc import convert
from wallwhale.steam.output import Phase
from wallwhale.v1 import download_pb2 as D

# A state event as version 1 stored it (no "v"; the row's columns), taken from the server before
# the payload had a version: a download that ran and succeeded.
VERSION_1 = {
    "download": {
        "api_key_id": None,
        "app_id": 431960,
        "archive_content_bytes": 2353,
        "archive_create_time": "2026-03-01T12:00:09+00:00",
        "archive_expire_time": "2026-03-08T12:00:00+00:00",
        "archive_file_count": 2,
        "archive_filename": "3078111111.zip",
        "archive_path": "archives/x.zip",
        "archive_sha256": "abababababababababababababababababababababababababababababababab",
        "archive_size": 2048,
        "archive_state": "AVAILABLE",
        "attempt": 1,
        "batch_id": None,
        "bytes_downloaded": 2353,
        "bytes_total": 2353,
        "cancel_requested": False,
        "content_handle": -5000000000000000000,
        "create_time": "2026-03-01T12:00:00+00:00",
        "current_file": "scene.pkg",
        "end_time": "2026-03-01T12:00:09+00:00",
        "failure_message": None,
        "failure_reason": None,
        "failure_retryable": False,
        "from_cache": False,
        "guard_email_hint": None,
        "guard_expire_time": None,
        "guard_kind": None,
        "guard_previous_rejected": False,
        "id": "01m8xhmtfx6xjzv769zpmnjaqx",
        "idempotency_scope": None,
        "item_file_size": None,
        "item_update_time": None,
        "last_event_sequence": 2,
        "lease_expire_time": None,
        "lease_owner": None,
        "max_attempts": 3,
        "max_runtime_seconds": None,
        "next_attempt_time": None,
        "owner_user_id": "01m8xhmtdp77xef8zazj5hqn8e",
        "percent": 100.0,
        "phase": "DONE",
        "preview_url": "",
        "priority": 2,
        "request_fingerprint": None,
        "request_id": None,
        "requested_steam_account_id": None,
        "skip_cache": False,
        "start_time": "2026-03-01T12:00:01+00:00",
        "state": "SUCCEEDED",
        "steam_account_id": None,
        "title": "",
        "update_time": "2026-03-01T12:00:09+00:00",
        "workshop_id": 3078111111,
    },
    "previous": "RUNNING",
}


def test_a_version_1_state_event_reads_back_whole() -> None:
    change = StateChange.from_json(VERSION_1)
    assert change.previous is DownloadState.RUNNING
    snapshot = change.download
    assert snapshot.state is DownloadState.SUCCEEDED
    assert snapshot.phase is Phase.DONE
    assert snapshot.archive_state is ArchiveState.AVAILABLE
    assert snapshot.archive_create_time == datetime(2026, 3, 1, 12, 0, 9, tzinfo=UTC)
    assert snapshot.content_handle == -5000000000000000000
    assert state_in(VERSION_1) is DownloadState.SUCCEEDED


def test_a_version_1_state_event_becomes_the_same_message_as_before() -> None:
    event = StoredEvent(
        "01m8xhmg0wbq297ybjad2d2rse",
        3,
        datetime(2026, 3, 1, 12, 0, 9, tzinfo=UTC),
        EventKind.STATE,
        VERSION_1,
    )
    message = convert.watch_event(event).state_changed
    assert message.previous_state == D.DOWNLOAD_STATE_RUNNING
    download = message.download
    assert download.state == D.DOWNLOAD_STATE_SUCCEEDED
    assert download.progress.phase == D.DOWNLOAD_PHASE_DONE
    assert download.progress.bytes_downloaded == 2353
    assert download.attempt == 1
    assert download.last_event_sequence == 2
    assert download.end_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 1, 12, 0, 9, tzinfo=UTC)
    assert download.archive.state == D.ARCHIVE_STATE_AVAILABLE
    assert download.archive.size_bytes == 2048
    assert download.archive.filename == "3078111111.zip"
    assert download.item.content_handle == 2**64 - 5000000000000000000
    assert not download.HasField("failure")


def test_the_current_version_writes_what_it_reads_and_names_its_version() -> None:
    change = StateChange.from_json(VERSION_1)
    stored = change.to_json()
    assert stored["v"] == 2
    assert "lease_owner" not in stored["download"]  # never shown, so not remembered
    assert StateChange.from_json(stored) == change
    created = StateChange(None, change.download).to_json()
    assert StateChange.from_json(created).previous is None


def test_a_newer_version_than_the_server_knows_is_refused_not_misread() -> None:
    with pytest.raises(ValueError, match="version 3"):
        StateChange.from_json({**VERSION_1, "v": 3})
