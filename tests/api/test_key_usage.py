"""API keys' use is counted in memory and written in batches: "last used" and total_requests are true."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.harness import Harness
from wallwhale.db import engine as db_engine
from wallwhale.db.models import ApiKey
from wallwhale.v1 import admin_pb2, status_pb2, status_pb2_grpc


async def stored(database_url: str, prefix: str) -> ApiKey:
    engine = db_engine.create_engine(database_url)
    try:
        async with db_engine.session_factory(engine)() as session:
            rows = (await session.scalars(select(ApiKey))).all()
            return next(row for row in rows if prefix.startswith(row.prefix))
    finally:
        await engine.dispose()


def count_key_updates(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_calls_are_counted_in_one_update_per_flush_and_at_a_graceful_stop(
    harness: Harness, database_url: str
) -> None:
    server = await harness.start(api_key_usage_flush_seconds=3600)  # only the stop flushes
    updates = count_key_updates(server.engine)
    key = await harness.add_key(["download:read"])
    status = status_pb2_grpc.StatusServiceStub(harness.channel)
    for _ in range(7):
        await status.GetStatus(status_pb2.GetStatusRequest(), metadata=key)
    plaintext = key[0][1]
    before = await stored(database_url, plaintext)
    assert before.total_requests == 0  # nothing written per call
    assert before.last_used_time is None
    assert updates == []

    await server.stop(grace=1)
    after = await stored(database_url, plaintext)
    assert after.total_requests == 7
    assert after.last_used_time is not None
    # One UPDATE per key for 8 calls: this key's 7 and the admin key's CreateApiKey.
    assert len(updates) == 2


async def test_the_api_shows_last_used_and_total_requests_after_a_flush(harness: Harness) -> None:
    await harness.start(api_key_usage_flush_seconds=0.2)
    key = await harness.add_key(["download:read"])
    status = status_pb2_grpc.StatusServiceStub(harness.channel)
    for _ in range(3):
        await status.GetStatus(status_pb2.GetStatusRequest(), metadata=key)
    listed = await harness.admin_api.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=harness.admin)
    key_id = next(k.id for k in listed.api_keys if key[0][1].startswith(k.prefix))
    for _ in range(100):
        await asyncio.sleep(0.1)
        shown = (
            await harness.admin_api.GetApiKey(admin_pb2.GetApiKeyRequest(id=key_id), metadata=harness.admin)
        ).api_key
        if shown.usage.total_requests == 3:
            break
    assert shown.usage.total_requests == 3
    assert shown.HasField("last_used_time")
