"""A download as the API shows it and as a state event remembers it: a typed, versioned shape.

State events are stored for good and read back whenever a stream sends a download's history, so
their payload is its own format, not the table's columns: a column renamed or added later leaves
the stored events readable, and a change of the payload itself is a new version that `from_json`
learns to read next to the old ones.

    version 1   (no "v") {"previous": "UNSPECIFIED" | state, "download": every column of the row}
    version 2   {"v": 2, "previous": None | state, "download": the fields of DownloadSnapshot}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from wallwhale.db.models import ArchiveState, Download, DownloadState, GuardKind
from wallwhale.steam.output import Phase, Reason

VERSION = 2


@dataclass(frozen=True, slots=True)
class DownloadSnapshot:
    id: str
    workshop_id: int
    app_id: int
    state: DownloadState
    priority: int
    owner_user_id: str | None
    api_key_id: str | None
    batch_id: str | None
    steam_account_id: str | None
    from_cache: bool
    # The item, as Steam's Web API described it.
    title: str
    item_file_size: int | None
    item_update_time: datetime | None
    preview_url: str
    content_handle: int | None  # signed (db.types.to_signed64)
    # Progress.
    phase: Phase
    percent: float
    bytes_downloaded: int
    bytes_total: int
    current_file: str
    # Failure.
    failure_reason: Reason | None
    failure_message: str | None
    failure_retryable: bool
    # Steam Guard prompt.
    guard_kind: GuardKind | None
    guard_email_hint: str | None
    guard_previous_rejected: bool
    guard_expire_time: datetime | None
    # Archive.
    archive_state: ArchiveState | None
    archive_filename: str | None
    archive_size: int | None
    archive_sha256: str | None
    archive_file_count: int | None
    archive_content_bytes: int | None
    archive_create_time: datetime | None
    archive_expire_time: datetime | None
    # Attempts and times.
    attempt: int
    max_attempts: int
    next_attempt_time: datetime | None
    last_event_sequence: int
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime

    @classmethod
    def of(cls, row: Download | Row[Any]) -> DownloadSnapshot:
        """The download as it is now (a mapped row, or a Core row of the downloads table)."""
        return cls(
            id=row.id,
            workshop_id=row.workshop_id,
            app_id=row.app_id,
            state=row.state,
            priority=row.priority,
            owner_user_id=row.owner_user_id,
            api_key_id=row.api_key_id,
            batch_id=row.batch_id,
            steam_account_id=row.steam_account_id,
            from_cache=row.from_cache,
            title=row.title,
            item_file_size=row.item_file_size,
            item_update_time=row.item_update_time,
            preview_url=row.preview_url,
            content_handle=row.content_handle,
            phase=row.phase,
            percent=row.percent,
            bytes_downloaded=row.bytes_downloaded,
            bytes_total=row.bytes_total,
            current_file=row.current_file,
            failure_reason=row.failure_reason,
            failure_message=row.failure_message,
            failure_retryable=row.failure_retryable,
            guard_kind=row.guard_kind,
            guard_email_hint=row.guard_email_hint,
            guard_previous_rejected=row.guard_previous_rejected,
            guard_expire_time=row.guard_expire_time,
            archive_state=row.archive_state,
            archive_filename=row.archive_filename,
            archive_size=row.archive_size,
            archive_sha256=row.archive_sha256,
            archive_file_count=row.archive_file_count,
            archive_content_bytes=row.archive_content_bytes,
            archive_create_time=row.archive_create_time,
            archive_expire_time=row.archive_expire_time,
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            next_attempt_time=row.next_attempt_time,
            last_event_sequence=row.last_event_sequence,
            create_time=row.create_time,
            start_time=row.start_time,
            end_time=row.end_time,
            update_time=row.update_time,
        )

    def to_json(self) -> dict[str, Any]:
        """The current version's form (enums by value, times in ISO 8601)."""
        values = {name: getattr(self, name) for name in _FIELDS}
        return {name: v.isoformat() if isinstance(v, datetime) else v for name, v in values.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DownloadSnapshot:
        """Version 1 (the row's columns by name) or 2 (the fields by name): both name the fields of
        this class the same way; columns that were never shown (leases, request ids) are ignored."""
        return cls(
            id=data["id"],
            workshop_id=data["workshop_id"],
            app_id=data["app_id"],
            state=DownloadState(data["state"]),
            priority=data["priority"],
            owner_user_id=data["owner_user_id"],
            api_key_id=data["api_key_id"],
            batch_id=data["batch_id"],
            steam_account_id=data["steam_account_id"],
            from_cache=data["from_cache"],
            title=data["title"],
            item_file_size=data["item_file_size"],
            item_update_time=_time(data["item_update_time"]),
            preview_url=data["preview_url"],
            content_handle=data["content_handle"],
            phase=Phase(data["phase"]),
            percent=data["percent"],
            bytes_downloaded=data["bytes_downloaded"],
            bytes_total=data["bytes_total"],
            current_file=data["current_file"],
            failure_reason=_optional(Reason, data["failure_reason"]),
            failure_message=data["failure_message"],
            failure_retryable=data["failure_retryable"],
            guard_kind=_optional(GuardKind, data["guard_kind"]),
            guard_email_hint=data["guard_email_hint"],
            guard_previous_rejected=data["guard_previous_rejected"],
            guard_expire_time=_time(data["guard_expire_time"]),
            archive_state=_optional(ArchiveState, data["archive_state"]),
            archive_filename=data["archive_filename"],
            archive_size=data["archive_size"],
            archive_sha256=data["archive_sha256"],
            archive_file_count=data["archive_file_count"],
            archive_content_bytes=data["archive_content_bytes"],
            archive_create_time=_time(data["archive_create_time"]),
            archive_expire_time=_time(data["archive_expire_time"]),
            attempt=data["attempt"],
            max_attempts=data["max_attempts"],
            next_attempt_time=_time(data["next_attempt_time"]),
            last_event_sequence=data["last_event_sequence"],
            create_time=_required_time(data["create_time"]),
            start_time=_time(data["start_time"]),
            end_time=_time(data["end_time"]),
            update_time=_required_time(data["update_time"]),
        )


_FIELDS = tuple(field.name for field in fields(DownloadSnapshot))


@dataclass(frozen=True, slots=True)
class StateChange:
    """The payload of a state event: the state before (None: the download was created) and after."""

    previous: DownloadState | None
    download: DownloadSnapshot

    def to_json(self) -> dict[str, Any]:
        previous = self.previous.value if self.previous is not None else None
        return {"v": VERSION, "previous": previous, "download": self.download.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StateChange:
        version = data.get("v", 1)
        if version not in (1, 2):
            raise ValueError(f"a state event of version {version}, newer than this server knows")
        previous = data["previous"]
        if version == 1 and previous == "UNSPECIFIED":
            previous = None
        return cls(
            DownloadState(previous) if previous is not None else None,
            DownloadSnapshot.from_json(data["download"]),
        )


def state_in(payload: Mapping[str, Any]) -> DownloadState:
    """The state a stored state event moved to, without reading the rest (every version has it here)."""
    return DownloadState(payload["download"]["state"])


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _optional(kind: Any, value: str | None) -> Any:
    return kind(value) if value else None
