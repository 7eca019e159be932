"""WebhookService: endpoints (core.webhooks) and their deliveries (core.webhook_outbox)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import webhook_outbox, webhooks
from wallwhale.core.secretbox import Keyring
from wallwhale.core.webhooks import TargetRules, WebhookInput
from wallwhale.db.webhook_models import Webhook, WebhookDelivery, WebhookDeliveryState
from wallwhale.errors import InvalidArgument
from wallwhale.rpc.calls import current_call
from wallwhale.rpc.convert import timestamp
from wallwhale.v1 import webhook_pb2, webhook_pb2_grpc

_STATES = {
    state: webhook_pb2.WebhookDeliveryState.Value(f"WEBHOOK_DELIVERY_STATE_{state.value}")
    for state in WebhookDeliveryState
}


def webhook_message(row: Webhook) -> webhook_pb2.Webhook:
    return webhook_pb2.Webhook(
        name=f"webhooks/{row.id}",
        id=row.id,
        url=row.url,
        events=list(row.events),
        description=row.description,
        active=row.active,
        owner_user_id=row.owner_user_id,
        disabled_reason=row.disabled_reason,
        disable_time=timestamp(row.disable_time),
        previous_secret_expire_time=timestamp(row.previous_secret_expire_time),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def delivery_message(row: WebhookDelivery) -> webhook_pb2.WebhookDelivery:
    latency = None
    if row.latency_ms is not None:
        latency = duration_pb2.Duration()
        latency.FromMilliseconds(row.latency_ms)
    return webhook_pb2.WebhookDelivery(
        name=f"webhooks/{row.webhook_id}/deliveries/{row.id}",
        id=row.id,
        webhook_id=row.webhook_id,
        message_id=row.message_id,
        event_type=row.event_type,
        resource=row.resource,
        state=_STATES[row.state],
        attempts=row.attempts,
        response_code=row.response_code,
        latency=latency,
        last_error=row.last_error,
        next_attempt_time=timestamp(row.next_attempt_time),
        last_attempt_time=timestamp(row.last_attempt_time),
        create_time=timestamp(row.create_time),
    )


def _input(message: webhook_pb2.Webhook) -> WebhookInput:
    return WebhookInput(
        url=message.url, events=list(message.events), description=message.description, active=message.active
    )


def _audit(webhook_id: str, **details: Any) -> None:
    call = current_call()
    call.audit_resource = f"webhooks/{webhook_id}"
    call.audit_details.update(details)


class WebhookServicer(webhook_pb2_grpc.WebhookServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        readers: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        keyring: Keyring,
        rules: TargetRules,
    ):
        self._sessions = sessions
        self._readers = readers
        self._clock = clock
        self._keyring = keyring
        self._rules = rules

    async def CreateWebhook(
        self, request: webhook_pb2.CreateWebhookRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.CreateWebhookResponse:
        values = _input(request.webhook)
        await webhooks.check_target(values.url, self._rules)  # resolving: outside the transaction
        async with self._sessions.begin() as session:
            made = await webhooks.create(session, current_call().caller(), values, self._keyring, self._rules)
            message = webhook_message(made.webhook)
        _audit(made.webhook.id, url=values.url, events=list(message.events))
        return webhook_pb2.CreateWebhookResponse(webhook=message, secret=made.secret)

    async def GetWebhook(
        self, request: webhook_pb2.GetWebhookRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.GetWebhookResponse:
        async with self._readers() as session:
            row = await webhooks.get_visible(session, current_call().caller(), request.id)
            return webhook_pb2.GetWebhookResponse(webhook=webhook_message(row))

    async def ListWebhooks(
        self, request: webhook_pb2.ListWebhooksRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.ListWebhooksResponse:
        async with self._readers() as session:
            rows, token, total = await webhooks.list_visible(
                session, current_call().caller(), request.page_size, request.page_token
            )
            return webhook_pb2.ListWebhooksResponse(
                webhooks=[webhook_message(row) for row in rows], next_page_token=token, total_size=total
            )

    async def UpdateWebhook(
        self, request: webhook_pb2.UpdateWebhookRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.UpdateWebhookResponse:
        fields = set(request.update_mask.paths) if request.update_mask.paths else set(webhooks.UPDATABLE)
        values = _input(request.webhook)
        _audit(request.webhook.id, fields=sorted(fields))
        if "url" in fields:
            await webhooks.check_target(values.url, self._rules)
        async with self._sessions.begin() as session:
            row = await webhooks.update(
                session,
                current_call().caller(),
                request.webhook.id,
                values,
                fields,
                self._rules,
                self._clock(),
            )
            return webhook_pb2.UpdateWebhookResponse(webhook=webhook_message(row))

    async def DeleteWebhook(
        self, request: webhook_pb2.DeleteWebhookRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.DeleteWebhookResponse:
        _audit(request.id)
        async with self._sessions.begin() as session:
            await webhooks.delete(session, current_call().caller(), request.id)
        return webhook_pb2.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: webhook_pb2.RotateWebhookSecretRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.RotateWebhookSecretResponse:
        grace: timedelta | None = None
        if request.HasField("grace_period"):
            seconds = request.grace_period.seconds
            if not 0 <= seconds <= webhooks.MAX_GRACE.total_seconds():
                raise InvalidArgument.field(
                    "grace_period", f"must be between 0 and {webhooks.MAX_GRACE.days} days"
                )
            grace = request.grace_period.ToTimedelta()
        _audit(request.id, grace_seconds=None if grace is None else grace.total_seconds())
        async with self._sessions.begin() as session:
            made = await webhooks.rotate_secret(
                session, current_call().caller(), request.id, grace, self._keyring, self._clock()
            )
            message = webhook_message(made.webhook)
        return webhook_pb2.RotateWebhookSecretResponse(webhook=message, secret=made.secret)

    async def ListWebhookDeliveries(
        self, request: webhook_pb2.ListWebhookDeliveriesRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.ListWebhookDeliveriesResponse:
        async with self._readers() as session:
            rows, token, total = await webhook_outbox.list_deliveries(
                session, current_call().caller(), request.webhook_id, request.page_size, request.page_token
            )
            return webhook_pb2.ListWebhookDeliveriesResponse(
                deliveries=[delivery_message(row) for row in rows], next_page_token=token, total_size=total
            )

    async def RedeliverWebhookDelivery(
        self, request: webhook_pb2.RedeliverWebhookDeliveryRequest, context: aio.ServicerContext[Any, Any]
    ) -> webhook_pb2.RedeliverWebhookDeliveryResponse:
        _audit(request.webhook_id, delivery_id=request.id)
        async with self._sessions.begin() as session:
            row = await webhook_outbox.redeliver(
                session, current_call().caller(), request.webhook_id, request.id, self._clock()
            )
            return webhook_pb2.RedeliverWebhookDeliveryResponse(delivery=delivery_message(row))
