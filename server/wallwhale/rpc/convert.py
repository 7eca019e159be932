"""Database rows and core values -> API messages. Secrets have no field to land in."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from wallwhale.core.limits import QuotaUsage
from wallwhale.db.models import ApiKey, AuditEvent, SteamAccount, SteamAccountStatus, User, UserRole
from wallwhale.v1 import admin_pb2

_ROLES = {UserRole.ADMIN: admin_pb2.USER_ROLE_ADMIN, UserRole.USER: admin_pb2.USER_ROLE_USER}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


def user(row: User) -> admin_pb2.User:
    return admin_pb2.User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        role=_ROLES[row.role],
        disabled=row.disabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        last_login_time=timestamp(row.last_login_time),
    )


def key_limits(row: ApiKey) -> admin_pb2.ApiKeyLimits:
    # None leaves an optional field unset, which the API reads as unlimited.
    runtime = row.max_runtime_seconds
    return admin_pb2.ApiKeyLimits(
        requests_per_minute=row.requests_per_minute,
        burst=row.burst,
        daily_download_quota=row.daily_download_quota,
        monthly_download_quota=row.monthly_download_quota,
        max_concurrent_downloads=row.max_concurrent_downloads,
        max_runtime=None if runtime is None else duration_pb2.Duration(seconds=runtime),
    )


def key_usage(usage: QuotaUsage | None) -> admin_pb2.ApiKeyUsage | None:
    if usage is None:
        return None
    return admin_pb2.ApiKeyUsage(daily_downloads=usage.day.used, monthly_downloads=usage.month.used)


def api_key(row: ApiKey, usage: QuotaUsage | None = None) -> admin_pb2.ApiKey:
    """The key as the API shows it; `usage` (downloads this UTC day and month) where it was read."""
    return admin_pb2.ApiKey(
        id=row.id,
        name=row.name,
        owner_user_id=row.owner_user_id,
        prefix=row.prefix,
        scopes=row.scopes,
        limits=key_limits(row),
        usage=key_usage(usage),
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
