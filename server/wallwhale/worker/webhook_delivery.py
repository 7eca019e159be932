"""Sends webhook deliveries: claims them through the database (core.webhook_outbox), signs them per
Standard Webhooks and POSTs them, one at a time per endpoint, up to `concurrency` endpoints at once.

Each attempt resolves the endpoint's host, refuses it unless every address is allowed
(core.webhooks.resolve), and connects to the address it checked: the URL is rewritten to that
address, with the Host header and the TLS server name (certificate checked against it) kept as the
host name, so a second DNS answer cannot send the request elsewhere. Redirects are not followed;
proxies from the environment are not used; one attempt is bounded by `timeout` in all (connect,
send, answer); at most 4 KiB of the answer is read. Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.config import Settings
from wallwhale.core import webhook_outbox, webhooks
from wallwhale.core.secretbox import Keyring, KeyringError
from wallwhale.core.webhook_outbox import Claim, Outcome, Policy
from wallwhale.errors import InvalidArgument
from wallwhale.log import get_logger
from wallwhale.network import parse_networks
from wallwhale.worker.journal import first_line

_log = get_logger("wallwhale.webhooks")

MAX_ANSWER_BYTES = 4096
USER_AGENT = "WallWhale-Webhooks/1"

Render = Callable[[str, datetime, dict[str, Any]], bytes]


@dataclass(frozen=True)
class SenderSettings:
    instance_id: str
    rules: webhooks.TargetRules
    policy: Policy
    timeout: float
    concurrency: int
    poll_interval: float
    keep_finished: timedelta | None = None  # finished deliveries older than this are deleted
    prune_interval: float = 300.0

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.timeout) + webhook_outbox.LEASE_MARGIN


def sign(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: "v1,<base64 HMAC-SHA256 of id.timestamp.body>" per secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1,"
        + base64.b64encode(hmac.new(webhooks.secret_key(secret), signed, hashlib.sha256).digest()).decode()
        for secret in secrets
    )


def pinned_url(url: str, address: str) -> str:
    """The URL with its host replaced by the checked address (the port and path kept)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


class WebhookSender:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: Keyring,
        settings: SenderSettings,
        clock: Callable[[], datetime],
        render: Render,
    ):
        self._sessions = sessions
        self._keyring = keyring
        self._settings = settings
        self._clock = clock
        self._render = render
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=0),
        )

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="webhook-sender")
        if self._settings.keep_finished is not None:
            self._pruner = asyncio.create_task(self._prune(), name="webhook-pruner")

    def wake(self) -> None:
        """Deliveries may be due (an event was committed, an attempt ended)."""
        self._wake.set()

    async def stop(self) -> None:
        """Claims nothing more and lets attempts under way finish (each is bounded by the timeout)."""
        self._stopped.set()
        self._wake.set()
        if self._loop is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._pruner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        if self._attempts:
            await asyncio.wait(self._attempts, timeout=self._settings.timeout + 5)
        await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                while len(self._attempts) < self._settings.concurrency and not self._stopped.is_set():
                    claim = await self._claim()
                    if claim is None:
                        break
                    task = asyncio.create_task(self._attempt(claim), name=f"webhook-{claim.delivery_id}")
                    self._attempts.add(task)
                    task.add_done_callback(self._attempts.discard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away; try again at the next tick
                _log.warning("claiming webhook deliveries failed", error=first_line(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)
            self._wake.clear()

    async def _prune(self) -> None:
        assert self._settings.keep_finished is not None
        while not self._stopped.is_set():
            try:
                async with self._sessions.begin() as session:
                    removed = await webhook_outbox.prune(
                        session, self._clock() - self._settings.keep_finished
                    )
                if removed:
                    _log.info("deleted finished webhook deliveries", count=removed)
            except Exception as exc:
                _log.warning("deleting finished webhook deliveries failed", error=first_line(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._settings.prune_interval)

    async def _claim(self) -> Claim | None:
        async with self._sessions.begin() as session:
            return await webhook_outbox.claim(
                session, self._settings.instance_id, self._clock(), self._settings.lease
            )

    async def _attempt(self, first: Claim) -> None:
        """Sends the claimed delivery, then the endpoint's next ones while settle() hands them over."""
        claim: Claim | None = first
        while claim is not None:
            try:
                outcome = await self._send(claim)
            except Exception as exc:  # a bug of ours must not leave the endpoint leased until it expires
                outcome = Outcome(0, None, f"internal error: {first_line(exc)}")
            _log.info(
                "webhook attempt",
                webhook=claim.webhook.id,
                delivery=claim.delivery_id,
                event_type=claim.event_type,
                attempt=claim.attempt,
                status=outcome.status,
                error=outcome.error,
            )
            done = claim
            try:
                async with self._sessions.begin() as session:
                    claim = await webhook_outbox.settle(
                        session,
                        done,
                        self._settings.instance_id,
                        outcome,
                        self._settings.policy,
                        self._clock(),
                        self._settings.lease,
                    )
            except Exception as exc:  # the lease expires and another attempt is made
                _log.warning(
                    "recording a webhook attempt failed", delivery=done.delivery_id, error=first_line(exc)
                )
                claim = None
            if self._stopped.is_set() and claim is not None:
                async with self._sessions.begin() as session:  # counted, not sent: due again at once
                    await webhook_outbox.give_back(session, claim, self._settings.instance_id, self._clock())
                claim = None
        self._wake.set()  # the endpoint is free again, and may have more

    async def _send(self, claim: Claim) -> Outcome:
        webhook = claim.webhook
        try:
            scheme, host, port = webhooks.check_url(webhook.url, self._settings.rules, "url")
        except InvalidArgument as exc:
            return Outcome(0, None, f"refused: {exc.message}")
        try:
            addresses = await webhooks.resolve(host, port, self._settings.rules)
        except PermissionError as exc:
            return Outcome(0, None, f"refused: {exc}")
        except (OSError, ValueError) as exc:
            return Outcome(0, None, f"cannot resolve {host}: {first_line(exc)}")
        try:
            secrets = webhooks.open_secrets(self._keyring, webhook, self._clock())
        except KeyringError as exc:
            return Outcome(0, None, f"cannot open the signing secret: {exc}")
        body = self._render(claim.event_type, claim.event_time, claim.payload)
        timestamp = int(self._clock().timestamp())
        headers = {
            "host": host if port == (443 if scheme == "https" else 80) else f"{host}:{port}",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": claim.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, claim.message_id, timestamp, body),
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.timeout):
                response = await self._post(webhook.url, host, addresses, body, headers)
                try:
                    await _read_some(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(0, _since(started), f"no answer within {self._settings.timeout:g} s")
        except httpx.HTTPError as exc:
            return Outcome(0, _since(started), f"{type(exc).__name__}: {first_line(exc) or 'network error'}")
        status = response.status_code
        error = "" if 200 <= status < 300 else f"answered {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed)"
        return Outcome(status, _since(started), error)

    async def _post(
        self, url: str, host: str, addresses: list[str], body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POSTs to the first checked address that takes the connection (the others only when it
        is refused or unreachable); the TLS server name and certificate check use the host name."""
        for number, address in enumerate(addresses, 1):
            request = self._client.build_request(
                "POST",
                pinned_url(url, address),
                content=body,
                headers=headers,
                extensions={"sni_hostname": host},
            )
            try:
                return await self._client.send(request, stream=True)
            except httpx.ConnectError:
                if number == len(addresses):
                    raise
        raise AssertionError("resolve() returns at least one address")


async def _read_some(response: httpx.Response) -> None:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= MAX_ANSWER_BYTES:
            break


def _since(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)


def sender_settings(settings: Settings, instance_id: str) -> SenderSettings:
    """The sender's part of the server's settings."""
    return SenderSettings(
        instance_id=instance_id,
        rules=target_rules(settings),
        policy=Policy(
            retry_waits=[timedelta(seconds=wait) for wait in settings.webhook_retry_schedule_seconds],
            disable_after_failures=settings.webhook_disable_after_failures,
            disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
        ),
        timeout=settings.webhook_timeout_seconds,
        concurrency=settings.webhook_concurrency,
        poll_interval=settings.webhook_poll_interval_seconds,
        keep_finished=timedelta(days=settings.webhook_delivery_retention_days)
        if settings.webhook_delivery_retention_days
        else None,
        prune_interval=settings.retention_interval_seconds,
    )


def target_rules(settings: Settings) -> webhooks.TargetRules:
    """Where webhooks may be sent: the admin's allowances (WALLWHALE_WEBHOOK_*)."""
    return webhooks.TargetRules(
        http_hosts=frozenset(settings.webhook_http_hosts),
        allowed_networks=parse_networks(settings.webhook_allowed_networks),
    )
