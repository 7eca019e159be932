"""WatchService: decode, call core.watches, encode. The checks themselves run in worker.watch_checker."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import watches
from wallwhale.core.downloads import JobLimits
from wallwhale.core.identity import Principal
from wallwhale.core.watches import Changes, Rules
from wallwhale.db.types import from_signed64
from wallwhale.db.watch_models import Watch, WatchChange, WatchItem, WatchKind, WatchState, WatchVersion
from wallwhale.errors import InvalidArgument
from wallwhale.rpc.calls import current_call
from wallwhale.rpc.convert import timestamp
from wallwhale.steam.webapi import SteamWebApi
from wallwhale.v1 import watch_pb2, watch_pb2_grpc

_KINDS = {WatchKind.ITEM: watch_pb2.WATCH_KIND_ITEM, WatchKind.COLLECTION: watch_pb2.WATCH_KIND_COLLECTION}
_STATES = {
    WatchState.ACTIVE: watch_pb2.WATCH_STATE_ACTIVE,
    WatchState.PAUSED: watch_pb2.WATCH_STATE_PAUSED,
    WatchState.UNAVAILABLE: watch_pb2.WATCH_STATE_UNAVAILABLE,
}
_CHANGES = {change: watch_pb2.WatchChange.Value(f"WATCH_CHANGE_{change.value}") for change in WatchChange}


def _audit(watch_id: str) -> None:
    current_call().audit_resource = f"watches/{watch_id}"


def _interval(request_field: duration_pb2.Duration, field: str) -> float:
    if request_field.seconds < 0 or request_field.nanos < 0:
        raise InvalidArgument.field(field, "must be positive")
    return request_field.seconds + request_field.nanos / 1e9


def watch_message(row: Watch, items: list[WatchItem] | None = None, count: int = 0) -> watch_pb2.Watch:
    shown = items or []
    return watch_pb2.Watch(
        id=row.id,
        workshop_id=row.workshop_id,
        kind=_KINDS[row.kind],
        app_id=row.app_id,
        title=row.title,
        state=_STATES[row.state],
        state_message=row.state_message,
        interval=duration_pb2.Duration(seconds=row.interval_seconds),
        paused=row.state is WatchState.PAUSED,
        delete_removed_downloads=row.delete_removed,
        next_check_time=timestamp(row.next_check_time),
        last_check_time=timestamp(row.last_check_time),
        consecutive_failures=row.consecutive_failures,
        last_error=row.last_error,
        items=[_item(item) for item in shown],
        item_count=len(shown) if items is not None else count,
        owner_user_id=row.owner_user_id,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def _item(row: WatchItem) -> watch_pb2.WatchedItem:
    return watch_pb2.WatchedItem(
        workshop_id=row.workshop_id,
        title=row.title,
        available=row.available,
        unavailable_reason=row.unavailable_reason,
        content_handle=from_signed64(row.content_handle) if row.content_handle is not None else 0,
        update_time=timestamp(row.item_update_time),
        download_id=row.download_id or "",
    )


def version_message(row: WatchVersion) -> watch_pb2.WatchVersion:
    return watch_pb2.WatchVersion(
        id=row.id,
        watch_id=row.watch_id,
        workshop_id=row.workshop_id,
        change=_CHANGES[row.change],
        title=row.title,
        content_handle=from_signed64(row.content_handle) if row.content_handle is not None else 0,
        update_time=timestamp(row.item_update_time),
        download_id=row.download_id or "",
        detail=row.detail,
        create_time=timestamp(row.create_time),
    )


class WatchServicer(watch_pb2_grpc.WatchServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        readers: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        api: SteamWebApi | None,
        rules: Rules,
        limits_for: Callable[[AsyncSession, Principal], Awaitable[JobLimits]],
    ):
        self._sessions = sessions
        self._readers = readers
        self._clock = clock
        self._api = api
        self._rules = rules
        self._limits_for = limits_for
        self._rng = random.Random()  # noqa: S311  (spreading checks over time, no secret)

    async def _full(self, session: AsyncSession, row: Watch) -> watch_pb2.Watch:
        return watch_message(row, await watches.items_of(session, row.id))

    async def CreateWatch(
        self, request: watch_pb2.CreateWatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> watch_pb2.CreateWatchResponse:
        principal = current_call().caller()
        watches.check_may_create(principal)  # before Steam is asked
        interval = watches.check_interval(
            _interval(request.interval, "interval") if request.HasField("interval") else None, self._rules
        )
        target = await watches.look_up(self._api, request.url_or_id)  # Steam first, outside the transaction
        async with self._sessions.begin() as session:
            limits = await self._limits_for(session, principal)
            row = await watches.create(
                session,
                principal,
                target,
                interval,
                request.delete_removed_downloads,
                limits,
                self._rules,
                self._clock(),
                self._rng,
            )
            message = await self._full(session, row)
        _audit(row.id)
        current_call().audit_details.update(workshop_id=row.workshop_id, items=message.item_count)
        return watch_pb2.CreateWatchResponse(watch=message)

    async def GetWatch(
        self, request: watch_pb2.GetWatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> watch_pb2.GetWatchResponse:
        async with self._readers() as session:
            row, items = await watches.get_visible_with_items(session, current_call().caller(), request.id)
        return watch_pb2.GetWatchResponse(watch=watch_message(row, items))

    async def ListWatches(
        self, request: watch_pb2.ListWatchesRequest, context: aio.ServicerContext[Any, Any]
    ) -> watch_pb2.ListWatchesResponse:
        async with self._readers() as session:
            rows, total, token = await watches.list_visible(
                session, current_call().caller(), request.page_size, request.page_token
            )
            counts = await watches.item_counts(session, [row.id for row in rows])
        return watch_pb2.ListWatchesResponse(
            watches=[watch_message(row, count=counts.get(row.id, 0)) for row in rows],
            next_page_token=token,
            total_size=total,
        )

    async def UpdateWatch(
        self, request: watch_pb2.UpdateWatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> watch_pb2.UpdateWatchResponse:
        given = request.watch
        _audit(given.id)
        paths = tuple(request.update_mask.paths) or tuple(
            path for path in watches.UPDATE_PATHS if path != "interval" or given.HasField("interval")
        )
        changes = Changes(
            paths=paths,
            paused=given.paused,
            interval_seconds=_interval(given.interval, "watch.interval")
            if given.HasField("interval")
            else None,
            delete_removed=given.delete_removed_downloads,
        )
        async with self._sessions.begin() as session:
            row = await watches.update(
                session, current_call().caller(), given.id, changes, self._rules, self._clock(), self._rng
            )
            message = await self._full(session, row)
        current_call().audit_details.update(fields=sorted(paths))
        return watch_pb2.UpdateWatchResponse(watch=message)

    async def DeleteWatch(
        self, request: watch_pb2.DeleteWatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> watch_pb2.DeleteWatchResponse:
        _audit(request.id)
        async with self._sessions.begin() as session:
            await watches.delete(session, current_call().caller(), request.id)
        return watch_pb2.DeleteWatchResponse()

    async def ListWatchVersions(
        self, request: watch_pb2.ListWatchVersionsRequest, context: aio.ServicerContext[Any, Any]
    ) -> watch_pb2.ListWatchVersionsResponse:
        async with self._readers() as session:
            rows, total, token = await watches.list_versions(
                session, current_call().caller(), request.watch_id, request.page_size, request.page_token
            )
        return watch_pb2.ListWatchVersionsResponse(
            versions=[version_message(row) for row in rows], next_page_token=token, total_size=total
        )
