"""Typed domain errors. The core raises them; rpc/errors.py alone turns them into gRPC statuses.

`reason` is a name from wallwhale.v1.ErrorReason without its ERROR_REASON_ prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class WallWhaleError(Exception):
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata or {}


class InvalidArgument(WallWhaleError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None):
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(message, reason=reason)
        self.violations = violations

    @classmethod
    def field(cls, name: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(name, description)], reason=reason)


class Unauthenticated(WallWhaleError):
    reason = "CREDENTIALS_INVALID"


class PermissionDenied(WallWhaleError):
    reason = "SCOPE_MISSING"


class NotFound(WallWhaleError):
    reason = "NOT_FOUND"

    def __init__(
        self, resource_type: str, resource_name: str, message: str | None = None, *, reason: str | None = None
    ):
        super().__init__(message or f"{resource_type} {resource_name!r} not found", reason=reason)
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(WallWhaleError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(WallWhaleError):
    reason = "WRONG_STATE"


@dataclass(frozen=True)
class QuotaViolation:
    subject: str
    description: str


class ResourceExhausted(WallWhaleError):
    reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float,
        violations: list[QuotaViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds
        self.violations = violations or []


class RateLimited(ResourceExhausted):
    """A caller sent more requests than its rate limit allows; one passes after retry_after_seconds."""

    reason = "RATE_LIMITED"


class QuotaExceeded(ResourceExhausted):
    """A download quota of an API key would be crossed; nothing was counted.

    `period` is "day" or "month" (UTC); the quota is whole again at `reset_time`.
    """

    def __init__(
        self,
        message: str,
        *,
        period: str,
        limit: int,
        used: int,
        requested: int,
        reset_time: datetime,
        retry_after_seconds: float,
        violations: list[QuotaViolation],
    ):
        super().__init__(
            message,
            retry_after_seconds=retry_after_seconds,
            violations=violations,
            reason="DAILY_QUOTA_EXCEEDED" if period == "day" else "MONTHLY_QUOTA_EXCEEDED",
            metadata={"period": period, "limit": str(limit), "reset_time": reset_time.isoformat()},
        )
        self.period = period
        self.limit = limit
        self.used = used
        self.requested = requested
        self.reset_time = reset_time


class Unavailable(WallWhaleError):
    reason = "UNAVAILABLE"
