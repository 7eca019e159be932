"""Database rows and core values -> API messages. Secrets have no field to land in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from wallwhale.core import batches
from wallwhale.core.batches import Member
from wallwhale.core.events import EventKind, StoredEvent
from wallwhale.core.limits import Limits, QuotaUsage
from wallwhale.core.snapshots import DownloadSnapshot, StateChange
from wallwhale.db.models import (
    ApiKey,
    ArchiveLink,
    AuditEvent,
    Batch,
    BatchState,
    DownloadState,
    SteamAccount,
    SteamAccountStatus,
    User,
    UserRole,
)
from wallwhale.db.types import from_signed64
from wallwhale.errors import InvalidArgument
from wallwhale.v1 import admin_pb2, download_pb2

_ROLES = {UserRole.ADMIN: admin_pb2.USER_ROLE_ADMIN, UserRole.USER: admin_pb2.USER_ROLE_USER}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


def requested_time(request: Message, name: str, field: str | None = None) -> datetime | None:
    """A request's Timestamp field as an aware UTC datetime, None when unset. Any client can send
    seconds or nanos outside the Timestamp range: that is the field's fault, not an internal error."""
    if not request.HasField(name):
        return None
    try:
        return getattr(request, name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            field or name, "is not a valid timestamp (years 0001 to 9999, nanos 0 to 999999999)"
        ) from None


def user(row: User, defaults: Limits | None = None, usage: QuotaUsage | None = None) -> admin_pb2.User:
    """The user as the API shows it; with the server's `defaults`, the limits that bind them now, and
    their `usage` (downloads this UTC day and month) where it was read."""
    own = Limits.of(row)
    return admin_pb2.User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        role=_ROLES[row.role],
        disabled=row.disabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        last_login_time=timestamp(row.last_login_time),
        limits=limits_message(own),
        effective_limits=limits_message(own.over(defaults)) if defaults is not None else None,
        usage=key_usage(usage, 0) if usage is not None else None,
    )


def limits_message(limits: Limits) -> admin_pb2.ApiKeyLimits:
    # None leaves an optional field unset, which the API reads as unlimited (or the default).
    runtime = limits.max_runtime_seconds
    return admin_pb2.ApiKeyLimits(
        requests_per_minute=limits.requests_per_minute,
        burst=limits.burst,
        daily_download_quota=limits.daily_download_quota,
        monthly_download_quota=limits.monthly_download_quota,
        max_concurrent_downloads=limits.max_concurrent_downloads,
        max_runtime=None if runtime is None else duration_pb2.Duration(seconds=runtime),
    )


def key_usage(usage: QuotaUsage | None, total_requests: int) -> admin_pb2.ApiKeyUsage:
    # total_requests is written in batches (core.key_usage): up to a few seconds behind.
    if usage is None:
        return admin_pb2.ApiKeyUsage(total_requests=total_requests)
    return admin_pb2.ApiKeyUsage(
        daily_downloads=usage.day.used, monthly_downloads=usage.month.used, total_requests=total_requests
    )


def api_key(row: ApiKey, usage: QuotaUsage | None = None) -> admin_pb2.ApiKey:
    """The key as the API shows it; `usage` (downloads this UTC day and month) where it was read."""
    return admin_pb2.ApiKey(
        id=row.id,
        name=row.name,
        owner_user_id=row.owner_user_id,
        prefix=row.prefix,
        scopes=row.scopes,
        limits=limits_message(Limits.of(row)),
        usage=key_usage(usage, row.total_requests),
        expire_time=timestamp(row.expire_time),
        disabled=row.disabled,
        revoke_time=timestamp(row.revoke_time),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        last_used_time=timestamp(row.last_used_time),
    )


ACTOR_KINDS = {
    "anonymous": admin_pb2.ACTOR_KIND_ANONYMOUS,
    "user": admin_pb2.ACTOR_KIND_USER,
    "api_key": admin_pb2.ACTOR_KIND_API_KEY,
    "system": admin_pb2.ACTOR_KIND_SYSTEM,
}
OUTCOMES = {
    "success": admin_pb2.AUDIT_OUTCOME_SUCCESS,
    "denied": admin_pb2.AUDIT_OUTCOME_DENIED,
    "failure": admin_pb2.AUDIT_OUTCOME_FAILURE,
}


def audit_event(row: AuditEvent) -> admin_pb2.AuditEvent:
    details = struct_pb2.Struct()
    details.update(row.details or {})
    return admin_pb2.AuditEvent(
        id=row.id,
        event_time=timestamp(row.event_time),
        actor=admin_pb2.Actor(
            kind=ACTOR_KINDS.get(row.actor_kind, admin_pb2.ACTOR_KIND_UNSPECIFIED),
            id=row.actor_id or "",
            display=row.actor_display,
        ),
        action=row.action,
        resource=row.resource or "",
        outcome=OUTCOMES.get(row.outcome, admin_pb2.AUDIT_OUTCOME_UNSPECIFIED),
        status_code=row.status_code,
        client_address=row.client_address,
        user_agent=row.user_agent,
        request_id=row.request_id,
        details=details,
        trace_id=row.trace_id,
    )


ACCOUNT_STATUSES = {
    SteamAccountStatus.ACTIVE: admin_pb2.STEAM_ACCOUNT_STATUS_ACTIVE,
    SteamAccountStatus.DISABLED: admin_pb2.STEAM_ACCOUNT_STATUS_DISABLED,
    SteamAccountStatus.COOLING_DOWN: admin_pb2.STEAM_ACCOUNT_STATUS_COOLING_DOWN,
    SteamAccountStatus.WAITING_FOR_STEAM_GUARD: admin_pb2.STEAM_ACCOUNT_STATUS_WAITING_FOR_STEAM_GUARD,
}


def steam_account(row: SteamAccount) -> admin_pb2.SteamAccount:
    # An admin's switch wins over the health the account has on its own.
    status = admin_pb2.STEAM_ACCOUNT_STATUS_DISABLED if row.disabled else ACCOUNT_STATUSES[row.status]
    return admin_pb2.SteamAccount(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        status=status,
        status_reason="disabled by an admin" if row.disabled else row.status_reason,
        disabled=row.disabled,
        cooldown_end_time=timestamp(row.cooldown_end_time),
        owned_app_ids=row.owned_app_ids,
        not_owned_app_ids=row.not_owned_app_ids,
        has_remembered_login=row.has_remembered_login,
        downloads_run=row.downloads_run,
        downloads_failed=row.downloads_failed,
        last_used_time=timestamp(row.last_used_time),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


# --- downloads ---------------------------------------------------------------------------------
# Downloads are converted from core.snapshots.DownloadSnapshot, so a live row and the copy remembered
# in a state event produce the same message.


def _enum(enum: Any, prefix: str, name: str | None) -> Any:  # a ValueType of `enum`
    if not name:
        return 0
    try:
        return enum.Value(f"{prefix}{name}")
    except ValueError:
        return 0


def download(values: DownloadSnapshot, queue_position: int = 0) -> download_pb2.Download:
    state = values.state
    message = download_pb2.Download(
        id=values.id,
        workshop_id=values.workshop_id,
        app_id=values.app_id,
        state=_enum(download_pb2.DownloadState, "DOWNLOAD_STATE_", state),
        priority=values.priority,  # type: ignore[arg-type]  # validated when the job was created
        progress=download_pb2.DownloadProgress(
            phase=_enum(download_pb2.DownloadPhase, "DOWNLOAD_PHASE_", values.phase),
            percent=values.percent,
            bytes_downloaded=values.bytes_downloaded,
            bytes_total=values.bytes_total,
            current_file=values.current_file,
        ),
        steam_account_id=values.steam_account_id or "",
        owner_user_id=values.owner_user_id or "",
        api_key_id=values.api_key_id or "",
        batch_id=values.batch_id or "",
        from_cache=values.from_cache,
        attempt=values.attempt,
        max_attempts=values.max_attempts,
        next_attempt_time=timestamp(values.next_attempt_time) if state is DownloadState.QUEUED else None,
        queue_position=queue_position,
        create_time=timestamp(values.create_time),
        start_time=timestamp(values.start_time),
        end_time=timestamp(values.end_time),
        update_time=timestamp(values.update_time),
        last_event_sequence=values.last_event_sequence,
    )
    if values.title or values.content_handle:
        message.item.CopyFrom(
            download_pb2.WorkshopItem(
                workshop_id=values.workshop_id,
                app_id=values.app_id,
                title=values.title,
                file_size=values.item_file_size or 0,
                update_time=timestamp(values.item_update_time),
                preview_url=values.preview_url,
                content_handle=from_signed64(values.content_handle or 0),
            )
        )
    if values.failure_reason and state in (DownloadState.FAILED, DownloadState.QUEUED):
        message.failure.CopyFrom(
            download_pb2.DownloadFailure(
                reason=_enum(download_pb2.FailureReason, "FAILURE_REASON_", values.failure_reason),
                message=values.failure_message or "",
                retryable=values.failure_retryable,
            )
        )
    if state is DownloadState.WAITING_FOR_STEAM_GUARD and values.guard_kind:
        message.steam_guard.CopyFrom(
            download_pb2.SteamGuardChallenge(
                steam_account_id=values.steam_account_id or "",
                kind=_enum(download_pb2.SteamGuardKind, "STEAM_GUARD_KIND_", values.guard_kind),
                email_hint=values.guard_email_hint or "",
                previous_code_rejected=values.guard_previous_rejected,
                expire_time=timestamp(values.guard_expire_time),
            )
        )
    if values.archive_state:
        message.archive.CopyFrom(
            download_pb2.Archive(
                state=_enum(download_pb2.ArchiveState, "ARCHIVE_STATE_", values.archive_state),
                filename=values.archive_filename or "",
                size_bytes=values.archive_size or 0,
                sha256=values.archive_sha256 or "",
                file_count=values.archive_file_count or 0,
                content_bytes=values.archive_content_bytes or 0,
                create_time=timestamp(values.archive_create_time),
                expire_time=timestamp(values.archive_expire_time),
            )
        )
    return message


def progress(payload: Mapping[str, Any]) -> download_pb2.DownloadProgress:
    message = download_pb2.DownloadProgress(
        phase=_enum(download_pb2.DownloadPhase, "DOWNLOAD_PHASE_", payload.get("phase")),
        percent=payload.get("percent", 0.0),
        bytes_downloaded=payload.get("bytes_downloaded", 0),
        bytes_total=payload.get("bytes_total", 0),
        current_file=payload.get("current_file", ""),
        bytes_per_second=payload.get("bytes_per_second", 0),
    )
    if payload.get("eta_seconds") is not None:
        message.eta.FromTimedelta(timedelta(seconds=payload["eta_seconds"]))
    return message


_LOG_STREAMS = {
    "stdout": download_pb2.LogLineEvent.STREAM_STDOUT,
    "stderr": download_pb2.LogLineEvent.STREAM_STDERR,
    "server": download_pb2.LogLineEvent.STREAM_SERVER,
}


def watch_event(event: StoredEvent) -> download_pb2.WatchDownloadResponse:
    message = download_pb2.WatchDownloadResponse(
        sequence=event.sequence, event_time=timestamp(event.event_time), download_id=event.download_id
    )
    payload = event.payload
    if event.kind is EventKind.STATE:
        change = StateChange.from_json(payload)
        message.state_changed.CopyFrom(
            download_pb2.StateChangedEvent(
                previous_state=_enum(download_pb2.DownloadState, "DOWNLOAD_STATE_", change.previous),
                download=download(change.download),
            )
        )
    elif event.kind is EventKind.PROGRESS:
        message.progress.CopyFrom(progress(payload))
    else:
        message.log_line.CopyFrom(
            download_pb2.LogLineEvent(
                stream=_LOG_STREAMS.get(
                    payload.get("stream", ""), download_pb2.LogLineEvent.STREAM_UNSPECIFIED
                ),
                line=payload.get("line", ""),
            )
        )
    return message


# --- batches -----------------------------------------------------------------------------------

_BATCH_STATES = {state: download_pb2.BatchState.Value(f"BATCH_STATE_{state.value}") for state in BatchState}


def batch(row: Batch, members: Sequence[Member]) -> download_pb2.Batch:
    counted = batches.counts(members)
    return download_pb2.Batch(
        id=row.id,
        state=_BATCH_STATES[row.state],
        collection_id=row.collection_id or 0,
        title=row.title,
        download_ids=[member.id for member in members],
        total_count=counted.total,
        succeeded_count=counted.succeeded,
        failed_count=counted.failed,
        cancelled_count=counted.cancelled,
        owner_user_id=row.owner_user_id or "",
        api_key_id=row.api_key_id or "",
        create_time=timestamp(row.create_time),
        end_time=timestamp(row.end_time),
    )


def archive_link(row: ArchiveLink) -> download_pb2.ArchiveLink:
    return download_pb2.ArchiveLink(
        name=f"archive-links/{row.id}",
        id=row.id,
        download_id=row.download_id or "",
        batch_id=row.batch_id or "",
        expire_time=timestamp(row.expire_time),
        single_use=row.single_use,
        use_count=row.use_count,
        revoked=row.revoke_time is not None,
        create_time=timestamp(row.create_time),
        last_use_time=timestamp(row.last_use_time),
    )
