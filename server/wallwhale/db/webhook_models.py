"""The tables of webhooks (core.webhooks, core.webhook_outbox): endpoints and their deliveries.

Kept apart from db/models.py (same Base, same conventions); db/__init__.py imports this module, so
the tables are in `Base.metadata` wherever the models are.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from wallwhale.db.models import Base, _counter, _create_time, _enum, _flag, _id, _text, _update_time
from wallwhale.db.types import JSONType


class WebhookDeliveryState(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Webhook(Base):
    """An endpoint a user is told about events at (core.webhooks). The signing secret is sealed with
    the keyring (core.secretbox, bound to the row's id); after a rotation the previous one signs too
    until `previous_secret_expire_time`. `lease_owner`/`lease_expire_time`: the instance sending to it
    now (at most one delivery in flight per endpoint)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = _id()
    owner_user_id: Mapped[str] = mapped_column(
        sa.String(26), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.String(2048))
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str] = _text(500)
    active: Mapped[bool] = _flag(True)
    secret_ciphertext: Mapped[bytes] = mapped_column(sa.LargeBinary)
    secret_key_id: Mapped[str] = mapped_column(sa.String(16))
    previous_secret_ciphertext: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    previous_secret_key_id: Mapped[str] = _text(16)
    previous_secret_expire_time: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = _counter()
    failing_since: Mapped[datetime | None]
    disabled_reason: Mapped[str] = _text(500)
    disable_time: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_expire_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = _create_time()
    update_time: Mapped[datetime] = _update_time()


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row written in the transaction of the change, then
    the record of its attempts. `payload` is what the resource was at the event (rendered as the
    REST API shows it when sent); `message_id` is the webhook-id header."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_state_next_attempt_time", "state", "next_attempt_time"),
        sa.Index("ix_webhook_deliveries_webhook_id_create_time", "webhook_id", "create_time"),
    )

    id: Mapped[str] = _id()
    webhook_id: Mapped[str] = mapped_column(sa.String(26), sa.ForeignKey("webhooks.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(sa.String(40))
    event_type: Mapped[str] = mapped_column(sa.String(64))
    resource: Mapped[str] = mapped_column(sa.String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    event_time: Mapped[datetime]
    state: Mapped[WebhookDeliveryState] = mapped_column(
        _enum(WebhookDeliveryState), default=WebhookDeliveryState.PENDING
    )
    attempts: Mapped[int] = _counter()
    next_attempt_time: Mapped[datetime | None]
    last_attempt_time: Mapped[datetime | None]
    response_code: Mapped[int] = _counter()
    latency_ms: Mapped[int | None]
    last_error: Mapped[str] = _text(500)
    create_time: Mapped[datetime] = _create_time()
