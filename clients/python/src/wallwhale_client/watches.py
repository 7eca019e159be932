"""Watches: a Workshop item or collection the server checks at an interval, downloading each new
version by itself (AsyncClient's watch methods)."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from google.protobuf import duration_pb2, field_mask_pb2

from wallwhale_client.transport import Transport, Unary
from wallwhale_client.v1 import watch_pb2, watch_pb2_grpc


class _WatchRpcs(Protocol):
    CreateWatch: Unary[watch_pb2.CreateWatchRequest, watch_pb2.CreateWatchResponse]
    GetWatch: Unary[watch_pb2.GetWatchRequest, watch_pb2.GetWatchResponse]
    ListWatches: Unary[watch_pb2.ListWatchesRequest, watch_pb2.ListWatchesResponse]
    UpdateWatch: Unary[watch_pb2.UpdateWatchRequest, watch_pb2.UpdateWatchResponse]
    DeleteWatch: Unary[watch_pb2.DeleteWatchRequest, watch_pb2.DeleteWatchResponse]
    ListWatchVersions: Unary[watch_pb2.ListWatchVersionsRequest, watch_pb2.ListWatchVersionsResponse]


def duration(value: timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


class WatchesApi:
    """AsyncClient's calls for watches (the raw stub stays `client.watches`)."""

    _transport: Transport
    watches: watch_pb2_grpc.WatchServiceStub

    @property
    def _watch_rpcs(self) -> _WatchRpcs:
        return self.watches

    async def create_watch(
        self,
        url_or_id: str,
        *,
        interval: timedelta | None = None,
        delete_removed_downloads: bool = False,
    ) -> watch_pb2.Watch:
        """Starts watching an item or a collection (the server asks Steam which it is); its current
        version is downloaded at once. `interval`: how often it is checked (None: the server's
        default; below the server's floor: InvalidArgument). `delete_removed_downloads`: for a
        collection, delete the downloads of an item that leaves it."""
        request = watch_pb2.CreateWatchRequest(
            url_or_id=url_or_id,
            interval=duration(interval) if interval is not None else None,
            delete_removed_downloads=delete_removed_downloads,
        )
        response = await self._transport.unary(self._watch_rpcs.CreateWatch, request)
        return response.watch

    async def get_watch(self, watch_id: str) -> watch_pb2.Watch:
        """The watch with its items."""
        request = watch_pb2.GetWatchRequest(id=watch_id)
        response = await self._transport.unary(self._watch_rpcs.GetWatch, request)
        return response.watch

    async def list_watches(self, *, limit: int = 50) -> list[watch_pb2.Watch]:
        """Up to `limit` watches, newest first, without their items (the caller's own; every one for
        admins)."""
        found: list[watch_pb2.Watch] = []
        token = ""
        while len(found) < limit:
            request = watch_pb2.ListWatchesRequest(page_size=min(500, limit - len(found)), page_token=token)
            page = await self._transport.unary(self._watch_rpcs.ListWatches, request)
            found += page.watches
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    async def update_watch(
        self,
        watch_id: str,
        *,
        paused: bool | None = None,
        interval: timedelta | None = None,
        delete_removed_downloads: bool | None = None,
    ) -> watch_pb2.Watch:
        """Changes the fields given (None: left as they are)."""
        watch = watch_pb2.Watch(id=watch_id)
        paths = []
        if paused is not None:
            watch.paused = paused
            paths.append("paused")
        if interval is not None:
            watch.interval.CopyFrom(duration(interval))
            paths.append("interval")
        if delete_removed_downloads is not None:
            watch.delete_removed_downloads = delete_removed_downloads
            paths.append("delete_removed_downloads")
        if not paths:
            raise ValueError("update_watch: give at least one of paused, interval, delete_removed_downloads")
        request = watch_pb2.UpdateWatchRequest(watch=watch, update_mask=field_mask_pb2.FieldMask(paths=paths))
        response = await self._transport.unary(self._watch_rpcs.UpdateWatch, request)
        return response.watch

    async def pause_watch(self, watch_id: str) -> watch_pb2.Watch:
        """Not checked until resumed."""
        return await self.update_watch(watch_id, paused=True)

    async def resume_watch(self, watch_id: str) -> watch_pb2.Watch:
        return await self.update_watch(watch_id, paused=False)

    async def set_watch_interval(self, watch_id: str, interval: timedelta) -> watch_pb2.Watch:
        return await self.update_watch(watch_id, interval=interval)

    async def delete_watch(self, watch_id: str) -> None:
        """Stops watching; the downloads the watch made stay."""
        request = watch_pb2.DeleteWatchRequest(id=watch_id)
        await self._transport.unary(self._watch_rpcs.DeleteWatch, request)

    async def list_watch_versions(self, watch_id: str, *, limit: int = 50) -> list[watch_pb2.WatchVersion]:
        """Up to `limit` of what the watch saw change (first version, updates, items added, removed,
        unavailable, back), newest first."""
        found: list[watch_pb2.WatchVersion] = []
        token = ""
        while len(found) < limit:
            request = watch_pb2.ListWatchVersionsRequest(
                watch_id=watch_id, page_size=min(500, limit - len(found)), page_token=token
            )
            page = await self._transport.unary(self._watch_rpcs.ListWatchVersions, request)
            found += page.versions
            token = page.next_page_token
            if not token:
                break
        return found[:limit]
