"""Database rows and core values -> API messages. Secrets have no field to land in."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from wallwhale.db.models import ApiKey, User, UserRole
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


def api_key(row: ApiKey) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        id=row.id,
        name=row.name,
        owner_user_id=row.owner_user_id,
        prefix=row.prefix,
        scopes=row.scopes,
        expire_time=timestamp(row.expire_time),
        disabled=row.disabled,
        revoke_time=timestamp(row.revoke_time),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        last_used_time=timestamp(row.last_used_time),
    )
