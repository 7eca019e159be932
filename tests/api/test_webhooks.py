"""Webhooks against the real server (both databases) and a real HTTP receiver started by the test;
every delivery is verified with the `standardwebhooks` package from PyPI, not with our own code."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from tests.support.harness import Harness, rpc_error
from tests.support.server import Metadata, error_info
from tests.support.webhook_receiver import receiver
from wallwhale.core import webhooks
from wallwhale.db.types import utcnow
from wallwhale.db.webhook_models import Webhook
from wallwhale.v1 import admin_pb2, webhook_pb2_grpc
from wallwhale.v1 import download_pb2 as D
from wallwhale.v1 import webhook_pb2 as W

ITEM = 2_000_000_101
# The receiver runs on this machine: an admin's allowance for it, and fast retries.
LOCAL: dict[str, Any] = {
    "webhook_http_hosts": ["127.0.0.1"],
    "webhook_allowed_networks": ["127.0.0.1/32"],
    "webhook_retry_schedule_seconds": [0.2, 0.2, 0.2],
    "webhook_timeout_seconds": 1.0,
    "webhook_poll_interval_seconds": 0.2,
}


def _api(harness: Harness) -> webhook_pb2_grpc.WebhookServiceStub:
    return webhook_pb2_grpc.WebhookServiceStub(harness.channel)


async def _hook(
    harness: Harness,
    url: str,
    events: tuple[str, ...] = ("download.succeeded",),
    metadata: Metadata | None = None,
) -> W.CreateWebhookResponse:
    return await _api(harness).CreateWebhook(
        W.CreateWebhookRequest(webhook=W.Webhook(url=url, events=list(events), active=True)),
        metadata=metadata or harness.admin,
    )


async def _deliveries(harness: Harness, webhook_id: str) -> list[W.WebhookDelivery]:
    response = await _api(harness).ListWebhookDeliveries(
        W.ListWebhookDeliveriesRequest(webhook_id=webhook_id), metadata=harness.admin
    )
    return list(response.deliveries)


async def _settled(harness: Harness, webhook_id: str, limit: float = 20) -> W.WebhookDelivery:
    """The endpoint's newest delivery once it is no longer pending."""
    for _ in range(int(limit / 0.1)):
        found = await _deliveries(harness, webhook_id)
        if found and found[0].state != W.WEBHOOK_DELIVERY_STATE_PENDING:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"still pending: {found}")


async def _succeed_one(harness: Harness) -> D.Download:
    await harness.add_account("hook_we", "pw-hook")
    harness.steam.add_item(ITEM, files={"scene.pkg": 20_000})
    done = await harness.wait_for((await harness.create(str(ITEM))).id)
    assert done.state == D.DOWNLOAD_STATE_SUCCEEDED
    return done


async def test_a_succeeded_download_is_delivered_signed_with_the_download_as_rest_shows_it(
    harness: Harness,
) -> None:
    await harness.start(**LOCAL)
    with receiver() as hook:
        made = await _hook(harness, hook.url, ("download.succeeded", "download.failed"))
        assert made.secret.startswith("whsec_")
        assert made.webhook.active
        done = await _succeed_one(harness)
        [arrived] = await hook.wait_for(1)
        payload = arrived.verified(made.secret)
        assert payload["type"] == "download.succeeded"
        data = payload["data"]
        # As Envoy prints the message: lowerCamelCase, int64 as strings, enums by name.
        assert data["id"] == done.id
        assert data["workshopId"] == str(ITEM)
        assert data["state"] == "DOWNLOAD_STATE_SUCCEEDED"
        assert data["archive"]["sha256"] == done.archive.sha256
        assert arrived.headers["webhook-id"].startswith("msg_")
        assert arrived.headers["content-type"] == "application/json"

        delivery = await _settled(harness, made.webhook.id)
        assert delivery.state == W.WEBHOOK_DELIVERY_STATE_SUCCEEDED
        assert (delivery.attempts, delivery.response_code) == (1, 200)
        assert delivery.event_type == "download.succeeded"
        assert delivery.resource == f"downloads/{done.id}"
        assert delivery.message_id == arrived.headers["webhook-id"]
        assert delivery.HasField("latency")

        # A rotation keeps the old secret valid for the grace period: both sign a redelivery.
        rotated = await _api(harness).RotateWebhookSecret(
            W.RotateWebhookSecretRequest(id=made.webhook.id), metadata=harness.admin
        )
        assert rotated.secret != made.secret
        assert rotated.webhook.HasField("previous_secret_expire_time")
        await _api(harness).RedeliverWebhookDelivery(
            W.RedeliverWebhookDeliveryRequest(webhook_id=made.webhook.id, id=delivery.id),
            metadata=harness.admin,
        )
        again = (await hook.wait_for(2))[1]
        assert again.headers["webhook-id"] == arrived.headers["webhook-id"]
        assert len(again.headers["webhook-signature"].split(" ")) == 2
        assert again.verified(made.secret)["data"]["id"] == done.id
        assert again.verified(rotated.secret)["data"]["id"] == done.id
        # Without a grace period the old secret stops signing at once.
        await _api(harness).RotateWebhookSecret(
            W.RotateWebhookSecretRequest(id=made.webhook.id, grace_period=duration_pb2.Duration()),
            metadata=harness.admin,
        )
        await _api(harness).RedeliverWebhookDelivery(
            W.RedeliverWebhookDeliveryRequest(webhook_id=made.webhook.id, id=delivery.id),
            metadata=harness.admin,
        )
        third = (await hook.wait_for(3))[2]
        assert len(third.headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(Exception, match=r"(?i)signature"):
            third.verified(rotated.secret)


async def test_a_500_is_retried_and_the_event_is_delivered_once(harness: Harness) -> None:
    await harness.start(**LOCAL)
    with receiver(script=[500]) as hook:
        made = await _hook(harness, hook.url)
        await _succeed_one(harness)
        first, second = await hook.wait_for(2)
        assert (first.status, second.status) == (500, 200)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert second.verified(made.secret)["type"] == "download.succeeded"
        delivery = await _settled(harness, made.webhook.id)
        assert (delivery.state, delivery.attempts, delivery.response_code) == (
            W.WEBHOOK_DELIVERY_STATE_SUCCEEDED,
            2,
            200,
        )
        await asyncio.sleep(1)  # longer than the retry schedule: nothing more comes
        assert len(hook.received) == 2


async def test_a_receiver_that_hangs_times_out_and_is_retried(harness: Harness) -> None:
    await harness.start(**LOCAL)
    with receiver(script=["hang"]) as hook:
        made = await _hook(harness, hook.url)
        await _succeed_one(harness)
        hung, answered = await hook.wait_for(2)
        assert (hung.status, answered.status) == (0, 200)
        answered.verified(made.secret)
        delivery = await _settled(harness, made.webhook.id)
        assert (delivery.state, delivery.attempts) == (W.WEBHOOK_DELIVERY_STATE_SUCCEEDED, 2)


@pytest.mark.parametrize("status", [410, 302])  # a redirect is not followed either
async def test_a_410_or_a_redirect_is_not_retried(harness: Harness, status: int) -> None:
    await harness.start(**LOCAL)
    with receiver(then=status) as hook:
        made = await _hook(harness, hook.url)
        await _succeed_one(harness)
        await hook.wait_for(1)
        delivery = await _settled(harness, made.webhook.id)
        assert (delivery.state, delivery.attempts, delivery.response_code) == (
            W.WEBHOOK_DELIVERY_STATE_FAILED,
            1,
            status,
        )
        assert str(status) in delivery.last_error
        await asyncio.sleep(1)
        assert len(hook.received) == 1


async def test_an_endpoint_failing_for_long_is_disabled_and_its_owner_sees_why(harness: Harness) -> None:
    await harness.start(
        **{**LOCAL, "webhook_disable_after_failures": 3, "webhook_disable_after_seconds": 0.3}
    )
    with receiver(then=503) as hook:
        made = await _hook(harness, hook.url)
        await _succeed_one(harness)
        await hook.wait_for(3)
        for _ in range(100):
            webhook = (
                await _api(harness).GetWebhook(
                    W.GetWebhookRequest(id=made.webhook.id), metadata=harness.admin
                )
            ).webhook
            if not webhook.active:
                break
            await asyncio.sleep(0.1)
        assert not webhook.active
        assert "503" in webhook.disabled_reason
        assert webhook.HasField("disable_time")
        arrived = len(hook.received)
        await asyncio.sleep(1)
        assert len(hook.received) == arrived  # nothing more is sent to it
        # Enabled again by its owner, the failures are forgotten.
        enabled = await _api(harness).UpdateWebhook(
            W.UpdateWebhookRequest(
                webhook=W.Webhook(id=made.webhook.id, active=True),
                update_mask=field_mask_pb2.FieldMask(paths=["active"]),
            ),
            metadata=harness.admin,
        )
        assert enabled.webhook.active
        assert not enabled.webhook.disabled_reason


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://10.1.2.3/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
    ],
)
async def test_local_private_and_metadata_addresses_are_refused_without_an_admins_allowance(
    harness: Harness, url: str
) -> None:
    await harness.start()
    error = await rpc_error(_hook(harness, url))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "webhook.url" in (error.details() or "")
    assert error_info(error).reason == "WEBHOOK_ADDRESS_REFUSED"


async def test_http_needs_an_admins_allowance_and_the_address_is_checked_again_at_each_attempt(
    harness: Harness,
) -> None:
    await harness.start(webhook_allowed_networks=["127.0.0.1/32"])
    error = await rpc_error(_hook(harness, "http://127.0.0.1:9/hook"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "https" in (error.details() or "")
    # Made while allowed, sent by a server that no longer allows it: refused, nothing arrives.
    allowed = await harness.start(**LOCAL)
    with receiver() as hook:
        made = await _hook(harness, hook.url)
        await harness.servers[0].webhooks.stop()
        await allowed.webhooks.stop()
        await harness.start(**{**LOCAL, "webhook_allowed_networks": []})
        await _succeed_one(harness)
        delivery = await _settled_attempt(harness, made.webhook.id)
        assert "refused" in delivery.last_error
        assert "127.0.0.1" in delivery.last_error
        assert hook.received == []


async def _settled_attempt(harness: Harness, webhook_id: str) -> W.WebhookDelivery:
    for _ in range(200):
        found = await _deliveries(harness, webhook_id)
        if found and (found[0].last_error or found[0].response_code):  # an attempt ended
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no attempt was made")


async def test_users_manage_their_own_webhooks_and_admins_see_all(harness: Harness) -> None:
    await harness.start(**LOCAL)
    user = await harness.admin_api.CreateUser(
        admin_pb2.CreateUserRequest(
            user=admin_pb2.User(email="hooks@example.test"), password="a long password 1"
        ),
        metadata=harness.admin,
    )

    async def key(scopes: list[str]) -> Metadata:
        made = await harness.admin_api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(name="hooks", owner_user_id=user.user.id, scopes=scopes)
            ),
            metadata=harness.admin,
        )
        return (("x-api-key", made.plaintext_key),)

    theirs = await key(["webhook:*"])
    downloads_only = await key(["download:*"])
    admins = await _hook(harness, "http://127.0.0.1:9/admin")
    mine = await _hook(harness, "http://127.0.0.1:9/mine", metadata=theirs)
    assert mine.webhook.owner_user_id == user.user.id
    listed = await _api(harness).ListWebhooks(W.ListWebhooksRequest(), metadata=theirs)
    assert [webhook.id for webhook in listed.webhooks] == [mine.webhook.id]
    everyone = await _api(harness).ListWebhooks(W.ListWebhooksRequest(), metadata=harness.admin)
    assert {webhook.id for webhook in everyone.webhooks} >= {mine.webhook.id, admins.webhook.id}
    for call in (
        _api(harness).GetWebhook(W.GetWebhookRequest(id=admins.webhook.id), metadata=theirs),
        _api(harness).DeleteWebhook(W.DeleteWebhookRequest(id=admins.webhook.id), metadata=theirs),
        _api(harness).RotateWebhookSecret(
            W.RotateWebhookSecretRequest(id=admins.webhook.id), metadata=theirs
        ),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    denied = await rpc_error(_api(harness).ListWebhooks(W.ListWebhooksRequest(), metadata=downloads_only))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    bad = await rpc_error(_hook(harness, "http://127.0.0.1:9/x", ("download.exploded",), metadata=theirs))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "webhook.events" in (bad.details() or "")
    await _api(harness).DeleteWebhook(W.DeleteWebhookRequest(id=mine.webhook.id), metadata=theirs)
    gone = await rpc_error(_api(harness).GetWebhook(W.GetWebhookRequest(id=mine.webhook.id), metadata=theirs))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_only_committed_events_are_sent_and_the_secret_is_stored_sealed(harness: Harness) -> None:
    server = await harness.start(**LOCAL)
    with receiver() as hook:
        made = await _hook(harness, hook.url)
        owner = made.webhook.owner_user_id

        async def rolled_back() -> None:
            async with server.sessions.begin() as session:
                await webhooks.enqueue_event(
                    session,
                    "download.succeeded",
                    owner,
                    "downloads/a",
                    {"data": {"id": "rolled-back"}},
                    utcnow(),
                )
                raise RuntimeError("the change fails after the event was written")

        with pytest.raises(RuntimeError):
            await rolled_back()
        async with server.sessions.begin() as session:
            await webhooks.enqueue_event(
                session, "download.succeeded", owner, "downloads/b", {"data": {"id": "committed"}}, utcnow()
            )
            # Events of types the endpoint does not take, or of other users' resources, make no row.
            assert not await webhooks.enqueue_event(
                session, "batch.finished", owner, "batches/c", {"data": {}}, utcnow()
            )
        [arrived] = await hook.wait_for(1)
        assert arrived.verified(made.secret)["data"] == {"id": "committed"}
        await asyncio.sleep(1)
        assert len(hook.received) == 1
        async with server.sessions() as session:
            row = await session.get(Webhook, made.webhook.id)
            assert row is not None
            key = made.secret.removeprefix("whsec_").encode()
            assert made.secret.encode() not in row.secret_ciphertext
            assert key not in row.secret_ciphertext


async def test_finished_deliveries_are_deleted_after_their_retention_and_pending_ones_kept(
    harness: Harness,
) -> None:
    server = await harness.start(
        **{
            **LOCAL,
            "webhook_delivery_retention_days": 1 / 86400,
            "retention_interval_seconds": 0.2,
            "webhook_retry_schedule_seconds": [600],
        }
    )
    with receiver(script=[410], then=503) as hook:
        made = await _hook(harness, hook.url)
        for number in range(2):  # the first is refused for good, the second keeps being retried
            async with server.sessions.begin() as session:
                await webhooks.enqueue_event(
                    session,
                    "download.succeeded",
                    made.webhook.owner_user_id,
                    f"downloads/{number}",
                    {"data": {"n": number}},
                    utcnow(),
                )
        await hook.wait_for(2)
        for _ in range(100):
            left = await _deliveries(harness, made.webhook.id)
            if len(left) == 1:
                break
            await asyncio.sleep(0.1)
        assert [delivery.state for delivery in left] == [W.WEBHOOK_DELIVERY_STATE_PENDING]
        assert left[0].resource == "downloads/1"


async def test_a_host_name_is_resolved_checked_and_the_request_sent_to_the_checked_address(
    harness: Harness,
) -> None:
    """localhost resolves to loopback addresses: refused until an admin allows them; then the request
    goes to the address that was checked, with the name in the Host header."""
    await harness.start(webhook_http_hosts=["localhost"])
    refused = await rpc_error(_hook(harness, "http://localhost/hook"))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused).reason == "WEBHOOK_ADDRESS_REFUSED"
    server = await harness.start(
        **{
            **LOCAL,
            "webhook_http_hosts": ["localhost"],
            "webhook_allowed_networks": ["127.0.0.0/8", "::1/128"],
        }
    )
    with receiver() as hook:
        made = await _hook(harness, f"http://localhost:{hook.port}/named")
        async with server.sessions.begin() as session:
            await webhooks.enqueue_event(
                session,
                "download.succeeded",
                made.webhook.owner_user_id,
                "downloads/n",
                {"data": {}},
                utcnow(),
            )
        [arrived] = await hook.wait_for(1)
        assert arrived.path == "named"
        assert arrived.headers["host"] == f"localhost:{hook.port}"
        assert arrived.verified(made.secret)["type"] == "download.succeeded"
