"""Rate limits (through the real server, on a moved clock) and download quotas (core.limits, against
the database directly), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.support.database import add_key, wait_for_audit_events
from tests.support.server import Metadata, make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.core import api_keys, limits
from wallwhale.core.bootstrap import BootstrapResult
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import ApiKey
from wallwhale.db.types import utcnow
from wallwhale.errors import QuotaExceeded, QuotaViolation
from wallwhale.rpc import errors
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc

M = TypeVar("M", bound=Message)


class Clock:
    """The servers' time, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _start(database_url: str, directory: Path, clock: Clock, **settings: object) -> WallWhaleServer:
    server = WallWhaleServer(make_settings(database_url, directory, **settings), clock=clock)
    await server.start()
    return server


@pytest.fixture
async def limited(migrated_database_url: str, tmp_path: Path, clock: Clock) -> AsyncIterator[aio.Channel]:
    """A channel to a server that runs on `clock`."""
    server = await _start(migrated_database_url, tmp_path, clock)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.stop(grace=0)


async def _key_id(database_url: str, key: str) -> str:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            key_id = await session.scalar(select(ApiKey.id).where(ApiKey.key_hash == api_keys.hash_key(key)))
    finally:
        await engine.dispose()
    assert key_id is not None
    return key_id


@dataclass
class Answer:
    code: grpc.StatusCode
    headers: dict[str, str]  # initial metadata on success, trailers on error
    details: list[any_pb2.Any]


async def _get_caller(channel: aio.Channel, metadata: Metadata) -> Answer:
    call = auth_pb2_grpc.AuthServiceStub(channel).GetCaller(auth_pb2.GetCallerRequest(), metadata=metadata)
    try:
        await call
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None
        trailers = {k: v for k, v in (error.trailing_metadata() or ()) if isinstance(v, str)}
        return Answer(error.code(), trailers, list(status.details))
    return Answer(grpc.StatusCode.OK, dict(await call.initial_metadata() or ()), [])  # type: ignore[arg-type]


def _detail(answer: Answer, kind: type[M]) -> M:
    for detail in answer.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    raise AssertionError(f"no {kind.__name__} in the status details")


def _budget(answer: Answer) -> tuple[str, str, str]:
    return tuple(answer.headers.get(f"x-ratelimit-{h}", "") for h in ("limit", "remaining", "reset"))  # type: ignore[return-value]


# Rate limits ---------------------------------------------------------------------------------


async def test_a_burst_passes_then_the_key_is_refused_until_the_clock_moves(
    limited: aio.Channel, migrated_database_url: str, clock: Clock
) -> None:
    key = await add_key(migrated_database_url, ["download:read"], requests_per_minute=60, burst=3)
    metadata = (("x-api-key", key),)
    answers = [await _get_caller(limited, metadata) for _ in range(3)]
    assert [a.code for a in answers] == [grpc.StatusCode.OK] * 3
    # Limit = the burst; remaining counts down; reset = seconds until the whole burst is back.
    assert [_budget(a) for a in answers] == [("3", "2", "1"), ("3", "1", "2"), ("3", "0", "3")]

    refused = await _get_caller(limited, metadata)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _budget(refused) == ("3", "0", "3")
    info = _detail(refused, error_details_pb2.ErrorInfo)
    assert (info.domain, info.reason) == ("wallwhale", "RATE_LIMITED")
    failure = _detail(refused, error_details_pb2.QuotaFailure)
    [violation] = failure.violations
    assert violation.subject == f"api-keys/{await _key_id(migrated_database_url, key)}"
    assert "60 requests per minute" in violation.description
    retry = _detail(refused, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 1000

    clock.advance(0.999)
    assert (await _get_caller(limited, metadata)).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.advance(0.001)  # exactly when RetryInfo said
    assert _budget(await _get_caller(limited, metadata)) == ("3", "0", "3")
    clock.advance(3)
    answers = [await _get_caller(limited, metadata) for _ in range(4)]
    assert [a.code for a in answers] == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_the_budget_refills_at_the_rate_across_minutes(
    limited: aio.Channel, migrated_database_url: str, clock: Clock
) -> None:
    # Two a minute, no burst given: a minute's worth (two) at once, then one every 30 seconds.
    key = await add_key(migrated_database_url, ["download:read"], requests_per_minute=2)
    metadata = (("x-api-key", key),)
    codes = [(await _get_caller(limited, metadata)).code for _ in range(3)]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
    refused = await _get_caller(limited, metadata)
    assert _detail(refused, error_details_pb2.RetryInfo).retry_delay.seconds == 30
    assert _budget(refused) == ("2", "0", "60")
    clock.advance(30)
    assert _budget(await _get_caller(limited, metadata)) == ("2", "0", "60")
    assert (await _get_caller(limited, metadata)).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.advance(120)  # past the next minute: the whole budget, no more
    codes = [(await _get_caller(limited, metadata)).code for _ in range(3)]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_two_instances_share_one_keys_budget(
    migrated_database_url: str, tmp_path: Path, clock: Clock
) -> None:
    key = await add_key(migrated_database_url, ["download:read"], requests_per_minute=60, burst=4)
    metadata = (("x-api-key", key),)
    first = await _start(migrated_database_url, tmp_path, clock)
    second = await _start(migrated_database_url, tmp_path, clock)
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{first.port}") as a,
            aio.insecure_channel(f"127.0.0.1:{second.port}") as b,
        ):
            answers = [await _get_caller(channel, metadata) for channel in (a, b, a, b, a, b)]
    finally:
        await first.stop(grace=0)
        await second.stop(grace=0)
    assert [a.code for a in answers] == [grpc.StatusCode.OK] * 4 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert [_budget(a)[1] for a in answers] == ["3", "2", "1", "0", "0", "0"]


async def test_a_key_without_limits_is_never_limited(
    limited: aio.Channel, migrated_database_url: str
) -> None:
    metadata = (("x-api-key", await add_key(migrated_database_url, ["download:read"])),)
    answers = await asyncio.gather(*(_get_caller(limited, metadata) for _ in range(100)))
    assert {a.code for a in answers} == {grpc.StatusCode.OK}
    assert not any(name.startswith("x-ratelimit") for a in answers for name in a.headers)


async def test_a_limit_of_zero_refuses_every_call(limited: aio.Channel, migrated_database_url: str) -> None:
    key = await add_key(migrated_database_url, ["download:read"], requests_per_minute=0, burst=5)
    refused = await _get_caller(limited, (("x-api-key", key),))
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _budget(refused) == ("0", "0", "60")


async def test_health_and_reflection_are_not_counted(
    limited: aio.Channel, migrated_database_url: str
) -> None:
    key = await add_key(migrated_database_url, ["download:read"], requests_per_minute=1, burst=1)
    metadata = (("x-api-key", key),)
    health = health_pb2_grpc.HealthStub(limited)
    for _ in range(5):
        call = health.Check(health_pb2.HealthCheckRequest(), metadata=metadata)
        assert (await call).status == health_pb2.HealthCheckResponse.SERVING
        assert "x-ratelimit-limit" not in dict(await call.initial_metadata() or ())  # type: ignore[arg-type]
    reflection = reflection_pb2_grpc.ServerReflectionStub(limited)
    for _ in range(3):
        stream = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
        )
        async for response in stream:
            assert response.list_services_response.service
    # The key's single request is still there.
    assert _budget(await _get_caller(limited, metadata)) == ("1", "0", "60")
    assert (await _get_caller(limited, metadata)).code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_people_follow_the_per_user_setting_and_anonymous_calls_do_not_count(
    migrated_database_url: str, tmp_path: Path, clock: Clock, admin: Metadata, first_admin: BootstrapResult
) -> None:
    server = await _start(migrated_database_url, tmp_path, clock, user_requests_per_minute=30, user_burst=2)
    email = f"limited-{id(clock)}@example.test"
    try:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            created = await admin_pb2_grpc.AdminServiceStub(channel).CreateUser(
                admin_pb2.CreateUserRequest(user=admin_pb2.User(email=email), password="a long password 1"),
                metadata=admin,
            )
            # The admin's API key has no limits of its own, but its owner has the per-user setting.
            keys = [await _get_caller(channel, admin) for _ in range(2)]
            assert [a.code for a in keys] == [grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
            refused_key = _detail(keys[1], error_details_pb2.QuotaFailure)
            assert refused_key.violations[0].subject == f"users/{first_admin.user_id}"
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            login = await auth.Login(auth_pb2.LoginRequest(email=email, password="a long password 1"))
            tokens = (
                await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=login.tokens.refresh_token))
            ).tokens
            bearer = (("authorization", f"Bearer {tokens.access_token}"),)
            answers = [await _get_caller(channel, bearer) for _ in range(3)]
    finally:
        await server.stop(grace=0)
    assert [a.code for a in answers] == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert _budget(answers[0]) == ("2", "1", "2")
    failure = _detail(answers[2], error_details_pb2.QuotaFailure)
    assert failure.violations[0].subject == f"users/{created.user.id}"


async def test_refusals_are_audited_as_denied(
    limited: aio.Channel, migrated_database_url: str, admin: Metadata
) -> None:
    key = await add_key(migrated_database_url, ["download:read"], requests_per_minute=10, burst=1)
    key_id = await _key_id(migrated_database_url, key)
    await _get_caller(limited, (("x-api-key", key),))
    refused = await _get_caller(limited, (("x-api-key", key), ("x-request-id", f"limited-{key_id}")))
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    [event] = await wait_for_audit_events(migrated_database_url, f"limited-{key_id}")
    assert (event.action, event.outcome, event.status_code) == ("caller.get", "denied", "RESOURCE_EXHAUSTED")
    assert (event.actor_kind, event.actor_id) == ("api_key", key_id)
    assert event.details == {"reason": "RATE_LIMITED"}
    assert key not in repr(event.__dict__)

    listed = await admin_pb2_grpc.AdminServiceStub(limited).ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(actor_id=key_id, outcome=admin_pb2.AUDIT_OUTCOME_DENIED),
        metadata=admin,
    )
    [shown] = listed.audit_events
    assert shown.status_code == "RESOURCE_EXHAUSTED"
    assert shown.details["reason"] == "RATE_LIMITED"


# Download quotas -----------------------------------------------------------------------------


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database_url)
    yield engine
    await engine.dispose()


async def _quota_key(engine: AsyncEngine, database_url: str, **quotas: int | None) -> ApiKey:
    key = await add_key(database_url, ["download:*"], **quotas)
    async with session_factory(engine)() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == api_keys.hash_key(key)))
    assert row is not None
    return row


async def _reserve(
    sessions: async_sessionmaker[AsyncSession], key: ApiKey, now: datetime, count: int = 1
) -> limits.QuotaUsage:
    async with sessions.begin() as session:
        return await limits.reserve_downloads(session, limits.Meter.of_key(key), count, now)


async def _usage(sessions: async_sessionmaker[AsyncSession], key: ApiKey, now: datetime) -> tuple[int, int]:
    async with sessions() as session:
        usage = await limits.quota_usage(session, limits.Meter.of_key(key), now)
    return usage.day.used, usage.month.used


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


async def test_the_daily_quota_resets_at_utc_midnight(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    sessions = session_factory(engine)
    key = await _quota_key(engine, migrated_database_url, daily_download_quota=3)
    last_second = _utc(2031, 5, 14, 23, 59, 59)
    usage = await _reserve(sessions, key, last_second, count=2)
    assert (usage.day.used, usage.day.remaining, usage.month.used, usage.month.remaining) == (2, 1, 2, None)
    assert usage.day.reset_time == _utc(2031, 5, 15)
    assert usage.day.start.isoformat() == "2031-05-14"

    with pytest.raises(QuotaExceeded) as raised:
        await _reserve(sessions, key, last_second, count=2)  # one left: two do not fit, none is taken
    error = raised.value
    assert (error.reason, error.period, error.limit, error.used, error.requested) == (
        "DAILY_QUOTA_EXCEEDED",
        "day",
        3,
        2,
        2,
    )
    assert error.reset_time == _utc(2031, 5, 15)
    assert error.retry_after_seconds == 1
    assert await _usage(sessions, key, last_second) == (2, 2)

    await _reserve(sessions, key, last_second)
    with pytest.raises(QuotaExceeded):
        await _reserve(sessions, key, last_second)
    usage = await _reserve(sessions, key, _utc(2031, 5, 15, 0, 0, 0))  # a new UTC day
    assert (usage.day.used, usage.month.used) == (1, 4)


async def test_the_monthly_quota_resets_on_the_first_of_the_month_and_refunds_the_day(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    sessions = session_factory(engine)
    key = await _quota_key(engine, migrated_database_url, daily_download_quota=10, monthly_download_quota=2)
    new_years_eve = _utc(2031, 12, 31, 23, 59, 59)
    await _reserve(sessions, key, _utc(2031, 12, 1), count=1)
    await _reserve(sessions, key, new_years_eve)
    # A caller that goes on with its transaction after a refusal (and commits) has counted nothing:
    # the day had room and was counted first, and the refusal gave that unit back.
    async with sessions.begin() as session:
        with pytest.raises(QuotaExceeded) as raised:
            await limits.reserve_downloads(session, limits.Meter.of_key(key), 1, new_years_eve)
    assert (raised.value.reason, raised.value.period) == ("MONTHLY_QUOTA_EXCEEDED", "month")
    assert raised.value.reset_time == _utc(2032, 1, 1)
    assert await _usage(sessions, key, new_years_eve) == (1, 2)

    usage = await _reserve(sessions, key, _utc(2032, 1, 1, 0, 0, 0))
    assert (usage.day.used, usage.month.used, usage.month.remaining) == (1, 1, 1)
    assert usage.month.reset_time == _utc(2032, 2, 1)


async def test_the_utc_day_is_used_whatever_the_timezone_of_now(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    sessions = session_factory(engine)
    key = await _quota_key(engine, migrated_database_url, daily_download_quota=1, monthly_download_quota=5)
    # 01:00 on 1 April at UTC+2 is 23:00 on 31 March UTC: March's day and month.
    usage = await _reserve(sessions, key, datetime(2031, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    assert (usage.day.start.isoformat(), usage.month.start.isoformat()) == ("2031-03-31", "2031-03-01")
    assert usage.day.reset_time == _utc(2031, 4, 1)
    with pytest.raises(QuotaExceeded):
        await _reserve(sessions, key, _utc(2031, 3, 31, 12))
    assert await _usage(sessions, key, _utc(2031, 4, 1)) == (0, 0)  # April has nothing yet
    with pytest.raises(ValueError, match="naive"):
        await _reserve(sessions, key, datetime(2031, 4, 1, 1, 0))


async def test_quotas_count_with_the_transaction_and_survive_a_restart(
    migrated_database_url: str,
) -> None:
    now = _utc(2031, 7, 1, 12)
    engine = create_engine(migrated_database_url)
    try:
        key = await _quota_key(engine, migrated_database_url, daily_download_quota=5)
        async with session_factory(engine)() as session:
            await limits.reserve_downloads(session, limits.Meter.of_key(key), 3, now)
            await session.rollback()  # the downloads were not created after all
        await _reserve(session_factory(engine), key, now, count=2)
    finally:
        await engine.dispose()
    engine = create_engine(migrated_database_url)  # a new process, as far as the database knows
    try:
        assert await _usage(session_factory(engine), key, now) == (2, 2)
        with pytest.raises(QuotaExceeded):
            await _reserve(session_factory(engine), key, now, count=4)
    finally:
        await engine.dispose()


async def test_racing_reservations_never_take_more_than_the_quota(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    sessions = session_factory(engine)
    key = await _quota_key(engine, migrated_database_url, daily_download_quota=5, monthly_download_quota=100)
    now = _utc(2031, 8, 8, 8)

    async def one() -> bool:
        async with sessions.begin() as session:
            try:
                await limits.reserve_downloads(session, limits.Meter.of_key(key), 1, now)
            except QuotaExceeded:
                return False
            await asyncio.sleep(0.02)  # the creation of the download, while the others wait
            return True

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert results.count(True) == 5
    assert await _usage(sessions, key, now) == (5, 5)


async def test_racing_reservations_of_one_users_keys_never_take_more_than_the_users_quota(
    engine: AsyncEngine, migrated_database_url: str
) -> None:
    sessions = session_factory(engine)
    first = await _quota_key(engine, migrated_database_url)  # no quota of its own
    owner = first.owner_user_id
    plaintext = api_keys.generate_key()
    async with sessions.begin() as session:
        second = ApiKey(
            name="second",
            owner_user_id=owner,
            prefix=api_keys.visible_prefix(plaintext),
            key_hash=api_keys.hash_key(plaintext),
            scopes=["download:*"],
        )
        session.add(second)
    keys = [first, second]
    now = _utc(2031, 9, 9, 9)
    quota = limits.Limits(daily_download_quota=4)

    async def one(key: ApiKey | None) -> str:
        async with sessions.begin() as session:
            try:
                await limits.reserve_for_caller(session, owner, quota, key, 1, now)
            except QuotaExceeded as refused:
                return refused.violations[0].subject
            await asyncio.sleep(0.02)
            return "taken"

    # Both keys and the owner's login (no key) at once.
    results = await asyncio.gather(*(one(key) for key in [*keys, None] * 5))
    assert sorted(results) == ["taken"] * 4 + [f"users/{owner}"] * 11
    async with sessions() as session:
        usage = await limits.quota_usage(session, limits.Meter.of_user(owner, quota), now)
    assert usage.day.used == 4


async def test_a_quota_refusal_is_resource_exhausted_with_its_details() -> None:
    error = QuotaExceeded(
        "used up",
        period="month",
        limit=3,
        used=3,
        requested=1,
        reset_time=_utc(2031, 2, 1),
        retry_after_seconds=90.5,
        violations=[QuotaViolation("api-keys/k1", "monthly download quota: 3 per UTC month")],
    )
    status = errors.status_for(error, "request-1")
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    answer = Answer(grpc.StatusCode.RESOURCE_EXHAUSTED, {}, list(status.details))
    info = _detail(answer, error_details_pb2.ErrorInfo)
    assert (info.domain, info.reason, info.metadata["period"]) == (
        "wallwhale",
        "MONTHLY_QUOTA_EXCEEDED",
        "month",
    )
    assert _detail(answer, error_details_pb2.QuotaFailure).violations[0].subject == "api-keys/k1"
    assert _detail(answer, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 90500


async def test_admins_see_a_keys_limits_and_usage(
    channel: aio.Channel, migrated_database_url: str, admin: Metadata, engine: AsyncEngine
) -> None:
    key = await _quota_key(
        engine,
        migrated_database_url,
        requests_per_minute=120,
        daily_download_quota=7,
        monthly_download_quota=None,
    )
    await _reserve(session_factory(engine), key, utcnow(), count=2)
    shown = (
        await admin_pb2_grpc.AdminServiceStub(channel).GetApiKey(
            admin_pb2.GetApiKeyRequest(id=key.id), metadata=admin
        )
    ).api_key
    assert (shown.limits.requests_per_minute, shown.limits.daily_download_quota) == (120, 7)
    assert not shown.limits.HasField("monthly_download_quota")  # unlimited
    assert (shown.usage.daily_downloads, shown.usage.monthly_downloads) == (2, 2)
    listed = await admin_pb2_grpc.AdminServiceStub(channel).ListApiKeys(
        admin_pb2.ListApiKeysRequest(owner_user_id=key.owner_user_id), metadata=admin
    )
    assert [k.usage.daily_downloads for k in listed.api_keys] == [2]
