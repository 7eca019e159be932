"""Webhooks: endpoints the server tells about events, signed per Standard Webhooks, and their
deliveries (AsyncClient's webhook methods)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Protocol

from google.protobuf import field_mask_pb2

from wallwhale_client.transport import Transport, Unary
from wallwhale_client.v1 import webhook_pb2, webhook_pb2_grpc
from wallwhale_client.watches import duration

W = webhook_pb2


class _WebhookRpcs(Protocol):
    CreateWebhook: Unary[W.CreateWebhookRequest, W.CreateWebhookResponse]
    GetWebhook: Unary[W.GetWebhookRequest, W.GetWebhookResponse]
    ListWebhooks: Unary[W.ListWebhooksRequest, W.ListWebhooksResponse]
    UpdateWebhook: Unary[W.UpdateWebhookRequest, W.UpdateWebhookResponse]
    DeleteWebhook: Unary[W.DeleteWebhookRequest, W.DeleteWebhookResponse]
    RotateWebhookSecret: Unary[W.RotateWebhookSecretRequest, W.RotateWebhookSecretResponse]
    ListWebhookDeliveries: Unary[W.ListWebhookDeliveriesRequest, W.ListWebhookDeliveriesResponse]
    RedeliverWebhookDelivery: Unary[W.RedeliverWebhookDeliveryRequest, W.RedeliverWebhookDeliveryResponse]


class WebhooksApi:
    """AsyncClient's calls for webhooks (the raw stub stays `client.webhooks`)."""

    _transport: Transport
    webhooks: webhook_pb2_grpc.WebhookServiceStub

    @property
    def _webhook_rpcs(self) -> _WebhookRpcs:
        return self.webhooks

    async def create_webhook(
        self, url: str, events: Iterable[str], *, description: str = "", active: bool = True
    ) -> W.CreateWebhookResponse:
        """A new endpoint for `events` (download.succeeded, download.failed, batch.finished,
        watch.item_updated, watch.item_unavailable). The response's `secret` (whsec_...) verifies
        the deliveries' signatures; it is shown only this once."""
        webhook = W.Webhook(url=url, events=list(events), description=description, active=active)
        return await self._transport.unary(
            self._webhook_rpcs.CreateWebhook, W.CreateWebhookRequest(webhook=webhook)
        )

    async def get_webhook(self, webhook_id: str) -> W.Webhook:
        response = await self._transport.unary(
            self._webhook_rpcs.GetWebhook, W.GetWebhookRequest(id=webhook_id)
        )
        return response.webhook

    async def list_webhooks(self, *, limit: int = 50) -> list[W.Webhook]:
        """Up to `limit` endpoints, newest first (the caller's own; everybody's for admins)."""
        found: list[W.Webhook] = []
        token = ""
        while len(found) < limit:
            request = W.ListWebhooksRequest(page_size=min(500, limit - len(found)), page_token=token)
            page = await self._transport.unary(self._webhook_rpcs.ListWebhooks, request)
            found += page.webhooks
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        active: bool | None = None,
    ) -> W.Webhook:
        """Changes the fields given (None: left as they are). `active=True` enables an endpoint the
        server disabled and clears its disabled_reason."""
        webhook = W.Webhook(id=webhook_id)
        paths = []
        if url is not None:
            webhook.url = url
            paths.append("url")
        if events is not None:
            webhook.events.extend(events)
            paths.append("events")
        if description is not None:
            webhook.description = description
            paths.append("description")
        if active is not None:
            webhook.active = active
            paths.append("active")
        if not paths:
            raise ValueError("update_webhook: give at least one of url, events, description, active")
        request = W.UpdateWebhookRequest(webhook=webhook, update_mask=field_mask_pb2.FieldMask(paths=paths))
        response = await self._transport.unary(self._webhook_rpcs.UpdateWebhook, request)
        return response.webhook

    async def delete_webhook(self, webhook_id: str) -> None:
        """Removes the endpoint and its deliveries."""
        await self._transport.unary(self._webhook_rpcs.DeleteWebhook, W.DeleteWebhookRequest(id=webhook_id))

    async def rotate_webhook_secret(
        self, webhook_id: str, *, grace_period: timedelta | None = None
    ) -> W.RotateWebhookSecretResponse:
        """A new signing secret in the response's `secret`, shown only this once. The previous one
        keeps signing for `grace_period` (None: the server's 24 hours; zero: not at all)."""
        request = W.RotateWebhookSecretRequest(
            id=webhook_id, grace_period=duration(grace_period) if grace_period is not None else None
        )
        return await self._transport.unary(self._webhook_rpcs.RotateWebhookSecret, request)

    async def list_webhook_deliveries(self, webhook_id: str, *, limit: int = 50) -> list[W.WebhookDelivery]:
        """Up to `limit` of the endpoint's deliveries, newest first, with state, attempts, the last
        response code and latency."""
        found: list[W.WebhookDelivery] = []
        token = ""
        while len(found) < limit:
            request = W.ListWebhookDeliveriesRequest(
                webhook_id=webhook_id, page_size=min(500, limit - len(found)), page_token=token
            )
            page = await self._transport.unary(self._webhook_rpcs.ListWebhookDeliveries, request)
            found += page.deliveries
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def redeliver_webhook_delivery(self, webhook_id: str, delivery_id: str) -> W.WebhookDelivery:
        """Sends the delivery again as a new delivery (same webhook-id header)."""
        request = W.RedeliverWebhookDeliveryRequest(webhook_id=webhook_id, id=delivery_id)
        response = await self._transport.unary(self._webhook_rpcs.RedeliverWebhookDelivery, request)
        return response.delivery
