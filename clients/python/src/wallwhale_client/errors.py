"""Typed exceptions for WallWhale's statuses, with the google.rpc details the server sends.

Every server error carries ErrorInfo (domain "wallwhale"): `.reason` is its reason, e.g.
"INVALID_WORKSHOP_ITEM" (see proto/wallwhale/v1/errors.proto); switch on it, not on the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from wallwhale_client.v1 import download_pb2

ERROR_DOMAIN = "wallwhale"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    subject: str
    description: str


class WallWhaleError(Exception):
    """Any failure the client reports. `code` is the gRPC status (None for client-side checks)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        request_id: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata = dict(metadata or {})
        # Seconds the server asked us to wait before trying again (RetryInfo), if it said.
        self.retry_after = retry_after
        # The server's x-request-id for this call: quote it when reporting a problem.
        self.request_id = request_id

    def __str__(self) -> str:
        code = f"{self.code.name}: " if self.code is not None else ""
        reason = f" [{self.reason}]" if self.reason and self.reason != getattr(self.code, "name", "") else ""
        return f"{code}{self.message}{reason}"


class InvalidArgument(WallWhaleError):
    """The request is wrong; `field_violations` names the fields (BadRequest)."""

    field_violations: tuple[FieldViolation, ...] = ()


class NotFound(WallWhaleError):
    pass


class AlreadyExists(WallWhaleError):
    pass


class FailedPrecondition(WallWhaleError):
    """The resource is not in a state that allows the call (e.g. ARCHIVE_NOT_READY, WRONG_STATE)."""


class Unauthenticated(WallWhaleError):
    pass


class PermissionDenied(WallWhaleError):
    pass


class ResourceExhausted(WallWhaleError):
    """A limit was hit; `violations` come from QuotaFailure, `retry_after` from RetryInfo."""

    violations: tuple[QuotaViolation, ...] = ()


class RateLimited(ResourceExhausted):
    """Too many calls for the key's (or person's) rate limit; worth retrying after `retry_after`."""


class QuotaExceeded(ResourceExhausted):
    """The daily or monthly download quota is used up; `retry_after` says when it resets."""


class Unavailable(WallWhaleError):
    """The server could not be reached, is stopping, or lost a dependency; worth retrying."""


class UntrustedCertificate(WallWhaleError):
    """The TLS handshake failed because the server's certificate is not trusted (an unknown CA, or
    a name it was not made for). Not retried: only another CA or address helps."""


class DeadlineExceeded(WallWhaleError):
    pass


class Cancelled(WallWhaleError):
    pass


class Unimplemented(WallWhaleError):
    """The server does not offer this yet (e.g. StartQrLogin, batches)."""


class InternalError(WallWhaleError):
    """A fault in the server; `request_id` finds it in the server's log."""


class DownloadFailed(WallWhaleError):
    """The download job ended FAILED or CANCELLED; `download` is its final state."""

    def __init__(self, download: download_pb2.Download):
        failure = download.failure
        state = download_pb2.DownloadState.Name(download.state).removeprefix("DOWNLOAD_STATE_")
        reason = download_pb2.FailureReason.Name(failure.reason).removeprefix("FAILURE_REASON_")
        if download.state == download_pb2.DOWNLOAD_STATE_CANCELLED:
            reason = "CANCELLED"
        message = f"download {download.id} of item {download.workshop_id} is {state.lower()}"
        super().__init__(f"{message}: {failure.message}" if failure.message else message, reason=reason)
        self.download = download
        self.retryable = failure.retryable


class BatchFailed(WallWhaleError):
    """The batch ended without one succeeded item (FAILED, or CANCELLED before any finished);
    `batch` is its final state, with the counts."""

    def __init__(self, batch: download_pb2.Batch):
        state = download_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")
        super().__init__(
            f"batch {batch.id} is {state.lower()}: {batch.failed_count} of {batch.total_count} items failed,"
            f" {batch.cancelled_count} cancelled",
            reason=state,
        )
        self.batch = batch


class IntegrityError(WallWhaleError):
    """The archive received does not match the size or sha256 the server announced."""


_CLASSES: dict[grpc.StatusCode, type[WallWhaleError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}
_QUOTA_REASONS = {"DAILY_QUOTA_EXCEEDED", "MONTHLY_QUOTA_EXCEEDED"}
# What gRPC core says when the server's certificate does not verify (unknown CA, wrong name).
_UNTRUSTED_CERTIFICATE = ("CERTIFICATE_VERIFY_FAILED", "not in peer certificate")


def from_rpc_error(error: grpc.RpcError) -> WallWhaleError:
    """The typed exception for a failed call, with the details of its google.rpc.Status."""
    code: grpc.StatusCode = error.code()
    message = error.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and any(sign in message for sign in _UNTRUSTED_CERTIFICATE):
        return UntrustedCertificate(
            "the server's TLS certificate is not trusted: give the CA certificate that signed it"
            " (Tls(ca_cert=PATH), or wallwhale-cli --ca-cert PATH / WALLWHALE_CA_CERT) and an address"
            f" its certificate names ({message})",
            code=code,
            reason="TLS_CERTIFICATE_UNTRUSTED",
        )
    trailers: Any = error.trailing_metadata() or ()
    request_id = next((str(v) for k, v in trailers if k == "x-request-id"), "")
    info = error_details_pb2.ErrorInfo()
    retry_after: float | None = None
    fields: list[FieldViolation] = []
    quotas: list[QuotaViolation] = []
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a status whose details disagree with the call's code or message
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            quotas += [QuotaViolation(v.subject, v.description) for v in quota.violations]
    cls = _CLASSES.get(code, WallWhaleError)
    if info.reason in _QUOTA_REASONS:
        cls = QuotaExceeded
    elif info.reason == "RATE_LIMITED":
        cls = RateLimited
    result = cls(
        message,
        code=code,
        reason=info.reason if info.domain == ERROR_DOMAIN else "",
        metadata=dict(info.metadata),
        retry_after=retry_after,
        request_id=request_id or dict(info.metadata).get("request_id", ""),
    )
    if isinstance(result, InvalidArgument):
        result.field_violations = tuple(fields)
    if isinstance(result, ResourceExhausted):
        result.violations = tuple(quotas)
    return result
