"""Webhook deliveries: the outbox rows core.webhooks writes, claimed and settled by the senders.

Claiming. An instance leases an *endpoint* (webhooks.lease_owner / lease_expire_time), not a
delivery: while the lease holds, no other instance sends to that endpoint, so at most one delivery
per endpoint is in flight across all instances. On PostgreSQL the endpoint row is picked with
FOR UPDATE SKIP LOCKED, so instances claiming at once take different endpoints without waiting; the
lease itself is written in the same transaction (SQLite has one writer at a time). After a success
the sender keeps the lease for the endpoint's next due delivery (TURNS_PER_LEASE in a row at most),
so a backlog costs one transaction per delivery, not two. A lease outlives
an attempt by a margin (the timeout plus 10 s); an instance that dies mid-attempt leaves the delivery
PENDING, and once the lease expires another instance sends it again (at least once; the webhook-id
stays the same so a receiver can drop the repeat).

Order. Each endpoint's due deliveries are sent oldest event first, one at a time. A delivery waiting
for its retry does not hold back newer ones, so after a failure a receiver may see a later event of
the same resource before the earlier one: each payload carries the resource's update_time / end_time
to tell which is newer.

Retries (`Outcome.retryable`): network errors, timeouts, 408, 429 and 5xx are retried after the waits
of the schedule (by default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts over about 27.5 h);
other answers (3xx are not followed, 4xx) end the delivery at once. An endpoint whose attempts failed
`disable_after_failures` times in a row over at least `disable_after` is disabled, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from wallwhale.core import paging, webhooks
from wallwhale.core.after_commit import after_commit
from wallwhale.core.identity import Principal
from wallwhale.db.webhook_models import Webhook, WebhookDelivery, WebhookDeliveryState
from wallwhale.errors import FailedPrecondition, NotFound
from wallwhale.ids import is_valid_id, new_id

LEASE_MARGIN = timedelta(seconds=10)
# Deliveries sent to one endpoint in a row under one lease before it goes back to the queue of
# endpoints (a backlog is sent without a claim per delivery, and other endpoints still get turns).
TURNS_PER_LEASE = 20


@dataclass(frozen=True)
class Policy:
    retry_waits: Sequence[timedelta]
    disable_after_failures: int
    disable_after: timedelta


@dataclass(frozen=True)
class Claim:
    """One attempt to make: the endpoint (leased) and its oldest due delivery."""

    webhook: Webhook
    delivery_id: str
    message_id: str
    event_type: str
    event_time: datetime
    payload: dict[str, Any]
    attempt: int
    turn: int = 1  # the how-manieth delivery sent under this lease


@dataclass(frozen=True)
class Outcome:
    status: int  # the HTTP status, 0 without an answer
    latency: timedelta | None
    error: str = ""  # why it failed ("" on success)

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth trying again: no answer (network error, timeout), 408, 429 or 5xx."""
        return self.status == 0 or self.status in (408, 429) or self.status >= 500


async def claim(session: AsyncSession, owner: str, now: datetime, lease: timedelta) -> Claim | None:
    """Leases an active endpoint with a due delivery (the one that waited longest for a turn) and
    counts the attempt of its oldest due delivery; None when there is nothing to send."""
    due = select(WebhookDelivery.webhook_id).where(
        WebhookDelivery.state == WebhookDeliveryState.PENDING, WebhookDelivery.next_attempt_time <= now
    )
    webhook = await session.scalar(
        select(Webhook)
        .where(
            Webhook.active.is_(True),
            Webhook.id.in_(due),
            or_(Webhook.lease_owner.is_(None), Webhook.lease_expire_time < now),
        )
        .order_by(Webhook.lease_expire_time.asc().nulls_first(), Webhook.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if webhook is None:
        return None
    return await _next_of(session, webhook, owner, now, lease, turn=1)


async def _next_of(
    session: AsyncSession, webhook: Webhook, owner: str, now: datetime, lease: timedelta, turn: int
) -> Claim | None:
    delivery = await session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.webhook_id == webhook.id,
            WebhookDelivery.state == WebhookDeliveryState.PENDING,
            WebhookDelivery.next_attempt_time <= now,
        )
        .order_by(WebhookDelivery.create_time, WebhookDelivery.id)
        .limit(1)
    )
    if delivery is None:
        return None
    webhook.lease_owner, webhook.lease_expire_time = owner, now + lease
    delivery.attempts += 1
    delivery.last_attempt_time = now
    # Should this instance die now, the next attempt waits for the lease to expire anyway.
    delivery.next_attempt_time = now + lease
    return Claim(
        webhook,
        delivery.id,
        delivery.message_id,
        delivery.event_type,
        delivery.event_time,
        dict(delivery.payload),
        delivery.attempts,
        turn,
    )


async def settle(
    session: AsyncSession,
    claim: Claim,
    owner: str,
    outcome: Outcome,
    policy: Policy,
    now: datetime,
    lease: timedelta,
) -> Claim | None:
    """Records the attempt's outcome, schedules the retry or ends the delivery, and disables an
    endpoint failing for long. Then, after a success, keeps the lease for the endpoint's next due
    delivery (returned, its attempt counted) for up to TURNS_PER_LEASE in a row; otherwise releases
    the lease (only this instance's: one that expired and was taken by another is left alone)."""
    webhook = await session.get(Webhook, claim.webhook.id, with_for_update=True)
    delivery = await session.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
    if delivery is None or webhook is None:
        return None  # deleted meanwhile
    if delivery.state is WebhookDeliveryState.PENDING and delivery.attempts == claim.attempt:
        delivery.response_code = outcome.status
        delivery.latency_ms = None if outcome.latency is None else int(outcome.latency.total_seconds() * 1000)
        delivery.last_error = outcome.error[:500]
        if outcome.succeeded:
            delivery.state, delivery.next_attempt_time = WebhookDeliveryState.SUCCEEDED, None
        elif outcome.retryable and claim.attempt <= len(policy.retry_waits):
            delivery.next_attempt_time = now + policy.retry_waits[claim.attempt - 1]
        else:
            delivery.state, delivery.next_attempt_time = WebhookDeliveryState.FAILED, None
    if outcome.succeeded:
        webhook.consecutive_failures, webhook.failing_since = 0, None
    else:
        webhook.consecutive_failures += 1
        webhook.failing_since = webhook.failing_since or now
        if (
            webhook.active
            and webhook.consecutive_failures >= policy.disable_after_failures
            and now - webhook.failing_since >= policy.disable_after
        ):
            webhook.active, webhook.disable_time = False, now
            webhook.disabled_reason = (
                f"disabled after {webhook.consecutive_failures} failed attempts in a row since"
                f" {webhook.failing_since.isoformat()}; the last: {outcome.error}"
            )[:500]
    if webhook.lease_owner != owner:
        return None
    if outcome.succeeded and webhook.active and claim.turn < TURNS_PER_LEASE:
        following = await _next_of(session, webhook, owner, now, lease, claim.turn + 1)
        if following is not None:
            return following
    webhook.lease_owner, webhook.lease_expire_time = None, now
    return None


async def give_back(session: AsyncSession, claim: Claim, owner: str, now: datetime) -> None:
    """Hands back a claimed delivery that was not sent (the instance is stopping): its attempt is
    not counted, it is due at once, and the endpoint's lease is released."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claim.delivery_id,
            WebhookDelivery.state == WebhookDeliveryState.PENDING,
            WebhookDelivery.attempts == claim.attempt,
        )
        .values(attempts=claim.attempt - 1, next_attempt_time=now)
    )
    await session.execute(
        update(Webhook)
        .where(Webhook.id == claim.webhook.id, Webhook.lease_owner == owner)
        .values(lease_owner=None, lease_expire_time=now)
    )


async def prune(session: AsyncSession, finished_before: datetime) -> int:
    """Deletes the deliveries that ended (succeeded or given up) and were made before the time."""
    deleted = await session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.state != WebhookDeliveryState.PENDING,
            WebhookDelivery.create_time < finished_before,
        )
    )
    return int(getattr(deleted, "rowcount", 0) or 0)


async def list_deliveries(
    session: AsyncSession, principal: Principal, webhook_id: str, page_size: int, page_token: str
) -> tuple[list[WebhookDelivery], str, int]:
    await webhooks.get_visible(session, principal, webhook_id)
    page = paging.page(page_size, page_token, webhook=webhook_id)
    rows, total = await paging.fetch(
        session,
        select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id),
        page,
        WebhookDelivery.create_time.desc(),
        WebhookDelivery.id.desc(),
    )
    return rows, page.next_token(total), total


async def redeliver(
    session: AsyncSession, principal: Principal, webhook_id: str, delivery_id: str, now: datetime
) -> WebhookDelivery:
    """A new pending delivery of the same message (same webhook-id and payload), due now."""
    webhook = await webhooks.get_visible(session, principal, webhook_id)
    earlier = await session.get(WebhookDelivery, delivery_id) if is_valid_id(delivery_id) else None
    if earlier is None or earlier.webhook_id != webhook.id:
        raise NotFound("webhook_delivery", delivery_id)
    if not webhook.active:
        raise FailedPrecondition(
            "the webhook is not active; enable it first (UpdateWebhook with active)",
            reason="WEBHOOK_INACTIVE",
        )
    again = WebhookDelivery(
        id=new_id(),
        webhook_id=webhook.id,
        message_id=earlier.message_id,
        event_type=earlier.event_type,
        resource=earlier.resource,
        payload=earlier.payload,
        event_time=earlier.event_time,
        state=WebhookDeliveryState.PENDING,
        next_attempt_time=now,
        create_time=now,
    )
    session.add(again)
    await session.flush()
    after_commit(session).wake_webhooks()
    return again
