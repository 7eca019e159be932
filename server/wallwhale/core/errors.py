"""Typed domain errors. The core raises them; rpc/errors.py alone turns them into gRPC statuses.

`reason` is a name from wallwhale.v1.ErrorReason without its ERROR_REASON_ prefix.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def __init__(self, resource_type: str, resource_name: str, message: str | None = None):
        super().__init__(message or f"{resource_type} {resource_name!r} not found")
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


class Unavailable(WallWhaleError):
    reason = "UNAVAILABLE"


class NotImplementedYet(WallWhaleError):
    """A part of the API that this version of the server does not provide yet."""

    reason = "NOT_IMPLEMENTED"
