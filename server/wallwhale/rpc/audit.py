"""Audit of calls: every denial (through deny(), which the IP-rule and authentication interceptors
call before this one runs) and the outcome of every mutating RPC (written here). Reads are not
audited."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from grpc import aio

from wallwhale.core.audit import AuditRecord, AuditWriter, action_name
from wallwhale.errors import WallWhaleError
from wallwhale.rpc import errors
from wallwhale.rpc.access import Rule
from wallwhale.rpc.calls import Call, CallInterceptor, current_call, on_end

# Where a request's `id` field points, by the noun of the action.
_COLLECTIONS = {
    "download": "downloads",
    "batch": "batches",
    "user": "users",
    "api_key": "api-keys",
    "steam_account": "steam-accounts",
    "steam_guard_code": "steam-accounts",
    "qr_login": "steam-accounts",
}


def record_for(call: Call, request: Any, outcome: str, status_code: str, **details: Any) -> AuditRecord:
    action = action_name(call.method)
    resource = call.audit_resource
    if resource is None:
        noun = action.rpartition(".")[0]
        item_id = getattr(request, "id", "") if noun in _COLLECTIONS else ""
        resource = f"{_COLLECTIONS[noun]}/{item_id}" if item_id else None
    principal = call.principal
    return AuditRecord(
        action=action,
        outcome=outcome,
        status_code=status_code,
        actor_kind=principal.kind if principal else "anonymous",
        actor_id=(principal.api_key_id or principal.user_id) if principal else None,
        actor_display=principal.display if principal else "",
        resource=resource,
        client_address=call.client_address,
        user_agent=call.metadata.get("user-agent", "")[:256],
        request_id=call.request_id,
        trace_id=call.trace_id,
        details={**call.audit_details, **details},
    )


class AuditInterceptor(CallInterceptor):
    def __init__(self, rules: dict[str, Rule], writer: AuditWriter):
        self._rules = rules
        self._writer = writer

    @contextlib.asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        rule = self._rules.get(details.method)
        if rule is None or not rule.mutating:
            yield
            return
        call = current_call()

        def record(code: str) -> None:
            self._writer.record(record_for(call, request, "success" if code == "OK" else "failure", code))

        async with on_end(context, record):
            yield


async def deny(writer: AuditWriter, context: Any, request: Any, denied: WallWhaleError) -> NoReturn:
    """Refuses the call before any work: records the denial, then ends the call with its status."""
    call = current_call()
    writer.record(record_for(call, request, "denied", errors.code_name(denied), reason=denied.reason))
    await errors.abort(context, denied)
