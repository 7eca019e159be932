"""Webhook endpoints, and the one way events reach them: `enqueue_event`.

An endpoint belongs to a user; admins see and change everybody's. It is told the events its owner's
resources go through (download.succeeded for the owner's downloads, ...), for the event types it
names. Its signing secret (Standard Webhooks: "whsec_" and base64 of 32 random bytes) is sealed with
the keyring, bound to the row's id, and shown once, when made or rotated.

`enqueue_event` writes one delivery row (core.webhook_outbox) per matching active endpoint in the
caller's transaction: the event and its deliveries commit together or not at all. It is called where
state moves happen (core.downloads.transition, core.batch_state), never after the commit.

Addresses: an endpoint's URL must be https (http only for hosts an admin listed) and its host must
not be, or resolve to, a loopback, private, link-local or other non-public address unless an admin
allowed the network (`wallwhale.network.outbound_address_allowed`). The sender checks again at every
attempt, after resolving, and connects to the address it checked.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from wallwhale.core import ownership, paging
from wallwhale.core.after_commit import after_commit
from wallwhale.core.identity import Principal
from wallwhale.core.secretbox import Keyring, Sealed
from wallwhale.core.text import display_text_violations
from wallwhale.db.webhook_models import Webhook, WebhookDelivery, WebhookDeliveryState
from wallwhale.errors import FieldViolation, InvalidArgument
from wallwhale.ids import new_id
from wallwhale.network import Network, outbound_address_allowed

DOWNLOAD_SUCCEEDED = "download.succeeded"
DOWNLOAD_FAILED = "download.failed"
BATCH_FINISHED = "batch.finished"
WATCH_ITEM_UPDATED = "watch.item_updated"
WATCH_ITEM_UNAVAILABLE = "watch.item_unavailable"
EVENT_TYPES = (
    DOWNLOAD_SUCCEEDED,
    DOWNLOAD_FAILED,
    BATCH_FINISHED,
    WATCH_ITEM_UPDATED,
    WATCH_ITEM_UNAVAILABLE,
)

SECRET_PREFIX = "whsec_"  # noqa: S105  (the prefix Standard Webhooks gives secrets, not one)
_SECRET_BYTES = 32
UPDATABLE = frozenset({"url", "events", "description", "active"})
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE = timedelta(days=7)
_MAX_URL = 2048
_MAX_DESCRIPTION = 500
_RESOLVE_SECONDS = 5.0  # a name that does not resolve in time is checked at each attempt instead


@dataclass(frozen=True)
class TargetRules:
    """What an admin allows beyond public https endpoints."""

    http_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()

    def address_allowed(self, address: str) -> bool:
        return outbound_address_allowed(ipaddress.ip_address(address), self.allowed_networks)


@dataclass(frozen=True)
class WebhookInput:
    url: str
    events: Sequence[str]
    description: str
    active: bool


@dataclass(frozen=True)
class WithSecret:
    webhook: Webhook
    secret: str  # shown once


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a whsec_ secret stands for."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def open_secrets(keyring: Keyring, webhook: Webhook, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one and, during the grace period, the previous."""
    found = [keyring.open(Sealed(webhook.secret_ciphertext, webhook.secret_key_id), webhook.id)]
    expires = webhook.previous_secret_expire_time
    if webhook.previous_secret_ciphertext and expires is not None and expires > now:
        sealed = Sealed(webhook.previous_secret_ciphertext, webhook.previous_secret_key_id)
        found.append(keyring.open(sealed, webhook.id))
    return found


# --- addresses ---------------------------------------------------------------------------------


def check_url(url: str, rules: TargetRules, field: str = "webhook.url") -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL; INVALID_ARGUMENT naming `field` otherwise."""
    if not url:
        raise InvalidArgument.field(field, "is required")
    if len(url) > _MAX_URL:
        raise InvalidArgument.field(field, f"must be at most {_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument.field(field, f"is not a URL: {exc}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidArgument.field(field, "must be an https:// URL with a host")
    if display_text_violations(url, field) or any(char.isspace() for char in url) or not _encodable(host):
        raise InvalidArgument.field(
            field, "has characters a URL cannot have, or a host name that cannot be used"
        )
    if parts.username or parts.password:
        raise InvalidArgument.field(field, "must not carry a user name or password")
    if parts.fragment:
        raise InvalidArgument.field(field, "must not have a #fragment")
    if parts.scheme == "http" and host not in rules.http_hosts:
        raise InvalidArgument.field(
            field, f"must use https (an admin may allow http for {host} with WALLWHALE_WEBHOOK_HTTP_HOSTS)"
        )
    if _is_address(host) and not rules.address_allowed(host):
        raise InvalidArgument.field(field, _refused(host), reason="WEBHOOK_ADDRESS_REFUSED")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def _refused(address: str) -> str:
    return (
        f"points at {address}, a loopback, private, link-local or otherwise non-public address"
        " (an admin may allow its network with WALLWHALE_WEBHOOK_ALLOWED_NETWORKS)"
    )


def _encodable(host: str) -> bool:
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(host: str, port: int, rules: TargetRules) -> list[str]:
    """The addresses to connect to for `host`, in the resolver's order: every address it resolves
    to must be allowed (a name with one public and one private address is refused). Raises
    PermissionError (refused) or OSError (unresolvable)."""
    if _is_address(host):
        addresses = [host]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError(f"{host} has no address")
    for address in addresses:
        if not rules.address_allowed(address):
            raise PermissionError(_refused(address))
    return addresses


async def check_target(url: str, rules: TargetRules, field: str = "webhook.url") -> None:
    """check_url, and a host name that resolves now must resolve to allowed addresses (a name that
    does not resolve yet is accepted: every attempt checks again)."""
    _, host, port = check_url(url, rules, field)
    try:
        async with asyncio.timeout(_RESOLVE_SECONDS):
            await resolve(host, port, rules)
    except PermissionError as exc:
        raise InvalidArgument.field(field, str(exc), reason="WEBHOOK_ADDRESS_REFUSED") from None
    except (OSError, ValueError, TimeoutError):
        pass


# --- endpoints ---------------------------------------------------------------------------------


def _checked_fields(values: WebhookInput, names: Iterable[str]) -> None:
    violations: list[FieldViolation] = []
    if "events" in names:
        if not values.events:
            violations.append(
                FieldViolation("webhook.events", f"name at least one of {', '.join(EVENT_TYPES)}")
            )
        unknown = sorted(set(values.events) - set(EVENT_TYPES))
        if unknown:
            violations.append(
                FieldViolation(
                    "webhook.events", f"unknown {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
                )
            )
    if "description" in names:
        if len(values.description) > _MAX_DESCRIPTION:
            violations.append(
                FieldViolation("webhook.description", f"must be at most {_MAX_DESCRIPTION} characters")
            )
        violations += display_text_violations(values.description, "webhook.description")
    if violations:
        raise InvalidArgument(violations)


def _seal(webhook: Webhook, keyring: Keyring, secret: str) -> None:
    sealed = keyring.seal(secret, webhook.id)
    webhook.secret_ciphertext, webhook.secret_key_id = sealed.ciphertext, sealed.key_id


async def create(
    session: AsyncSession, principal: Principal, values: WebhookInput, keyring: Keyring, rules: TargetRules
) -> WithSecret:
    check_url(values.url, rules)
    _checked_fields(values, UPDATABLE)
    webhook = Webhook(
        id=new_id(),
        owner_user_id=principal.user_id,
        url=values.url,
        events=sorted(set(values.events)),
        description=values.description,
        active=values.active,
    )
    secret = new_secret()
    _seal(webhook, keyring, secret)
    session.add(webhook)
    await session.flush()
    return WithSecret(webhook, secret)


async def get_visible(
    session: AsyncSession, principal: Principal, webhook_id: str, *, lock: bool = False
) -> Webhook:
    missing = ownership.checked_id("webhook", webhook_id)
    webhook = await session.get(Webhook, webhook_id, with_for_update=lock or None)
    if webhook is None or not (principal.is_admin or webhook.owner_user_id == principal.user_id):
        raise missing
    return webhook


def _visible(principal: Principal) -> Select[Any]:
    query = select(Webhook)
    return query if principal.is_admin else query.where(Webhook.owner_user_id == principal.user_id)


async def list_visible(
    session: AsyncSession, principal: Principal, page_size: int, page_token: str
) -> tuple[list[Webhook], str, int]:
    page = paging.page(page_size, page_token)
    rows, total = await paging.fetch(
        session, _visible(principal), page, Webhook.create_time.desc(), Webhook.id.desc()
    )
    return rows, page.next_token(total), total


async def update(
    session: AsyncSession,
    principal: Principal,
    webhook_id: str,
    values: WebhookInput,
    fields: set[str],
    rules: TargetRules,
    now: datetime,
) -> Webhook:
    unknown = fields - UPDATABLE
    if unknown:
        raise InvalidArgument.field("update_mask", f"cannot change {', '.join(sorted(unknown))}")
    if "url" in fields:
        check_url(values.url, rules)
    _checked_fields(values, fields)
    webhook = await get_visible(session, principal, webhook_id, lock=True)
    if "url" in fields:
        webhook.url = values.url
    if "events" in fields:
        webhook.events = sorted(set(values.events))
    if "description" in fields:
        webhook.description = values.description
    if "active" in fields:
        if values.active and not webhook.active:  # enabled again: the failures are forgotten
            webhook.disabled_reason, webhook.disable_time = "", None
            webhook.consecutive_failures, webhook.failing_since = 0, None
        webhook.active = values.active
    webhook.update_time = now
    return webhook


async def delete(session: AsyncSession, principal: Principal, webhook_id: str) -> None:
    webhook = await get_visible(session, principal, webhook_id, lock=True)
    await session.delete(webhook)  # its deliveries go with it (ON DELETE CASCADE)


async def rotate_secret(
    session: AsyncSession,
    principal: Principal,
    webhook_id: str,
    grace: timedelta | None,
    keyring: Keyring,
    now: datetime,
) -> WithSecret:
    grace = DEFAULT_GRACE if grace is None else grace
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidArgument.field("grace_period", f"must be between 0 and {MAX_GRACE.days} days")
    webhook = await get_visible(session, principal, webhook_id, lock=True)
    if grace:
        webhook.previous_secret_ciphertext = webhook.secret_ciphertext
        webhook.previous_secret_key_id = webhook.secret_key_id
        webhook.previous_secret_expire_time = now + grace
    else:
        webhook.previous_secret_ciphertext, webhook.previous_secret_key_id = None, ""
        webhook.previous_secret_expire_time = None
    secret = new_secret()
    _seal(webhook, keyring, secret)
    webhook.update_time = now
    return WithSecret(webhook, secret)


# --- events ------------------------------------------------------------------------------------


def enqueue_event_sync(
    session: Session,
    event_type: str,
    owner_user_id: str | None,
    resource: str,
    payload: dict[str, Any],
    now: datetime,
) -> int:
    """Writes a pending delivery for every active endpoint of `owner_user_id` that wants `event_type`,
    in the session's transaction; returns how many. `payload` is what the resource is at the event,
    as core.webhook_outbox renders it: {"download": DownloadSnapshot JSON}, {"batch": ...} or, for
    events whose resource the caller already encodes, {"data": <the REST JSON>}."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type}")
    if not owner_user_id:
        return 0
    endpoints = session.scalars(
        select(Webhook).where(Webhook.owner_user_id == owner_user_id, Webhook.active.is_(True))
    ).all()
    wanted = [endpoint for endpoint in endpoints if event_type in endpoint.events]
    message_id = f"msg_{new_id()}"
    for endpoint in wanted:
        session.add(
            WebhookDelivery(
                id=new_id(),
                webhook_id=endpoint.id,
                message_id=message_id,
                event_type=event_type,
                resource=resource,
                payload=payload,
                event_time=now,
                state=WebhookDeliveryState.PENDING,
                next_attempt_time=now,
                create_time=now,
            )
        )
    if wanted:
        after_commit(session).wake_webhooks()
    return len(wanted)


async def enqueue_event(
    session: AsyncSession,
    event_type: str,
    owner_user_id: str | None,
    resource: str,
    payload: dict[str, Any],
    now: datetime,
) -> int:
    """enqueue_event_sync from async code, in the same transaction."""
    return await session.run_sync(enqueue_event_sync, event_type, owner_user_id, resource, payload, now)
