"""The one place where exceptions become gRPC statuses with google.rpc details.

Every status carries ErrorInfo (domain "wallwhale", a reason from wallwhale.v1.ErrorReason) so
clients can switch on it, plus BadRequest, ResourceInfo, QuotaFailure or RetryInfo where they apply.
Unexpected exceptions become INTERNAL with the request id and never a stack trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from wallwhale import errors
from wallwhale.rpc.calls import current_call

ERROR_DOMAIN = "wallwhale"
# Messages and details echo client input (an id, a name, a mask path). A status must fit in the
# trailers every client accepts (gRPC's default is 8 KiB of metadata, where the message goes
# percent-encoded and the details base64-encoded), or the client sees RESOURCE_EXHAUSTED without
# them: so the status carries bounded texts (UTF-8 bytes) and at most a few field violations.
_MESSAGE_BYTES = 512
_TEXT_BYTES = 256
_MAX_VIOLATIONS = 5

_CODES: dict[type[errors.WallWhaleError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}

Metadata = Sequence[tuple[str, str | bytes]]


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _code_of(error: errors.WallWhaleError) -> int:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return int(code_pb2.INTERNAL)


def _bounded(text: str, limit: int = _TEXT_BYTES) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def code_name(error: errors.WallWhaleError) -> str:
    """The gRPC status code name an error is sent with, e.g. "PERMISSION_DENIED"."""
    return str(code_pb2.Code.Name(_code_of(error)))


def status_for(error: BaseException, request_id: str) -> status_pb2.Status:
    """The google.rpc.Status to send for an exception raised while serving a call."""
    if not isinstance(error, errors.WallWhaleError):
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message=f"internal error; quote request id {request_id} when reporting it",
            details=[
                _pack(
                    error_details_pb2.ErrorInfo(
                        domain=ERROR_DOMAIN, reason="INTERNAL", metadata={"request_id": request_id}
                    )
                )
            ],
        )
    details: list[Message] = [
        error_details_pb2.ErrorInfo(
            domain=ERROR_DOMAIN,
            reason=error.reason,
            metadata={key: _bounded(value) for key, value in error.metadata.items()},
        )
    ]
    if isinstance(error, errors.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_bounded(v.field), description=_bounded(v.description)
                    )
                    for v in error.violations[:_MAX_VIOLATIONS]
                ]
            )
        )
    elif isinstance(error, errors.NotFound):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type,
                resource_name=_bounded(error.resource_name),
                description=_bounded(error.message),
            )
        )
    elif isinstance(error, errors.ResourceExhausted):
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=_bounded(v.subject), description=_bounded(v.description)
                    )
                    for v in error.violations[:_MAX_VIOLATIONS]
                ]
            )
        )
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(0, round(error.retry_after_seconds * 1000)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return status_pb2.Status(
        code=_code_of(error),
        message=_bounded(error.message, _MESSAGE_BYTES),
        details=[_pack(d) for d in details],
    )


def to_grpc_status(status: status_pb2.Status, extra_trailing: Metadata = ()) -> grpc.Status:
    """grpc.Status whose trailing metadata holds the rich details and `extra_trailing`."""
    converted = rpc_status.to_status(status)
    return _Status(converted.code, converted.details, (*converted.trailing_metadata, *extra_trailing))


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata):
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)


async def abort(context: Any, error: BaseException) -> NoReturn:
    """Ends the current call with the status for `error`; response headers go out as trailers."""
    call = current_call()
    extra = () if call.headers_sent else tuple(call.response_headers)
    await context.abort_with_status(to_grpc_status(status_for(error, call.request_id), extra))
    raise AssertionError("abort_with_status returned")  # pragma: no cover - it always raises
