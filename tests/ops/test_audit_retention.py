"""WALLWHALE_AUDIT_RETENTION_DAYS: the retention loop deletes audit events past their age (issue 15)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from tests.support.server import make_settings
from wallwhale.app import WallWhaleServer
from wallwhale.db.engine import create_engine, session_factory
from wallwhale.db.models import AuditEvent
from wallwhale.db.types import utcnow
from wallwhale.ids import new_id


def _event(age: timedelta) -> dict[str, object]:
    return {
        "id": new_id(),
        "event_time": utcnow() - age,
        "actor_kind": "system",
        "actor_display": "retention test",
        "action": "test.retention",
        "outcome": "success",
        "status_code": "OK",
        "client_address": "",
        "user_agent": "",
        "request_id": "",
        "details": {},
    }


async def test_audit_events_past_their_age_are_deleted(migrated_database_url: str, tmp_path: Path) -> None:
    old, recent = _event(timedelta(days=3)), _event(timedelta(hours=20))
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as session:
            await session.execute(insert(AuditEvent), [old, recent])
        server = WallWhaleServer(
            make_settings(
                migrated_database_url, tmp_path, audit_retention_days=1, retention_interval_seconds=0.1
            )
        )
        await server.start()
        try:
            for _ in range(100):
                async with sessions() as session:
                    left = set(
                        await session.scalars(
                            select(AuditEvent.id).where(AuditEvent.id.in_([old["id"], recent["id"]]))
                        )
                    )
                if old["id"] not in left:
                    break
                await asyncio.sleep(0.1)
        finally:
            await server.stop(grace=0)
    finally:
        await engine.dispose()
    assert left == {recent["id"]}
