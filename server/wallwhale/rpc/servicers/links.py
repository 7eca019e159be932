"""Share links (core.archive_links), mixed into DownloadService: CreateArchiveLink, ListArchiveLinks,
RevokeArchiveLink, and FetchArchiveLink, which needs no credentials.

FetchArchiveLink finds everything that can go wrong before the first byte (as FetchArchive does),
then counts the use, then sends the same bytes and headers as FetchArchive / FetchBatchArchive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.api import httpbody_pb2
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import archive_links, archives, batches
from wallwhale.core.archive_links import Target
from wallwhale.core.limits import RateLimit, RateLimiter, rate_limited
from wallwhale.errors import NotFound
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.rpc.servicers.streams import check_range, range_end, send_archive, send_batch_archive
from wallwhale.storage.archives import Storage
from wallwhale.v1 import download_pb2

# A response header Envoy turns into the REST reply's status (envoy.template.yaml, envoy_on_response)
# for what a gRPC code cannot say; removed there, so REST clients never see it.
HTTP_STATUS_HEADER = "x-http-status"


@dataclass(frozen=True)
class LinkOptions:
    max_ttl: timedelta
    # Every link's own budget of fetches (None: not limited).
    rate_limit: RateLimit | None
    limiter: RateLimiter
    # The longest life of the presigned URL a link redirects to (never beyond the link's own).
    url_seconds: int = 300


# Envoy asks for a redirect on REST fetches of a link (envoy/envoy.template.yaml) and turns the
# answer's LOCATION_HEADER into a 302: a browser or curl then fetches straight from the object store.
REDIRECT_HEADER = "x-wallwhale-link-redirect"
LOCATION_HEADER = "x-wallwhale-location"


def _audit_link(link_id: str, **details: Any) -> None:
    call = current_call()
    call.audit_resource = f"archive-links/{link_id}"
    call.audit_details.update(details)


class LinkMethods:
    _sessions: async_sessionmaker[AsyncSession]
    _readers: async_sessionmaker[AsyncSession]
    _clock: Callable[[], datetime]
    _storage: Storage
    _links: LinkOptions

    async def CreateArchiveLink(
        self, request: download_pb2.CreateArchiveLinkRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.CreateArchiveLinkResponse:
        ttl = None
        if request.HasField("ttl"):
            ttl = request.ttl.ToTimedelta()
        target = Target(request.download_id, request.batch_id)
        async with self._sessions.begin() as session:
            created = await archive_links.create(
                session,
                current_call().caller(),
                target,
                ttl,
                request.single_use,
                self._links.max_ttl,
                self._clock(),
            )
            message = convert.archive_link(created.link)
        _audit_link(
            created.link.id,
            download_id=target.download_id,
            batch_id=target.batch_id,
            expire_time=message.expire_time.ToJsonString(),
            single_use=request.single_use,
        )
        return download_pb2.CreateArchiveLinkResponse(link=message, url_path=created.url_path)

    async def ListArchiveLinks(
        self, request: download_pb2.ListArchiveLinksRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.ListArchiveLinksResponse:
        async with self._readers() as session:
            rows = await archive_links.list_for(
                session, current_call().caller(), Target(request.download_id, request.batch_id)
            )
            return download_pb2.ListArchiveLinksResponse(links=[convert.archive_link(row) for row in rows])

    async def RevokeArchiveLink(
        self, request: download_pb2.RevokeArchiveLinkRequest, context: aio.ServicerContext[Any, Any]
    ) -> download_pb2.RevokeArchiveLinkResponse:
        _audit_link(request.id)
        async with self._sessions.begin() as session:
            link = await archive_links.revoke(session, current_call().caller(), request.id, self._clock())
            return download_pb2.RevokeArchiveLinkResponse(link=convert.archive_link(link))

    async def FetchArchiveLink(
        self, request: download_pb2.FetchArchiveLinkRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        check_range(request.offset, request.length)
        async with self._readers() as session:
            try:
                link = await archive_links.resolve(session, request.token, self._clock())
            except NotFound as refused:
                if refused.resource_name:  # a link that ended: its refusals are in its audit trail
                    _audit_link(refused.resource_name, offset=request.offset)
                    # Over REST it existed and is gone for good: Envoy answers 410 (unknown: 404).
                    current_call().add_header(HTTP_STATUS_HEADER, "410")
                raise
            download = None if link.batch_id else await archive_links.download_of(session, link)
        _audit_link(link.id, offset=request.offset)
        await self._within_rate(link.id)
        if link.batch_id:
            plan = await batches.plan_linked_archive(self._readers, link.batch_id, self._storage)
            end = range_end(request.offset, request.length, plan.bundle.size)
            await self._count_use(link.id)
            async for body in send_batch_archive(plan, link.batch_id, request.offset, end):
                yield body
            return
        assert download is not None
        if current_call().metadata.get(REDIRECT_HEADER) and self._storage.objects is not None:
            left = int((link.expire_time - self._clock()).total_seconds())
            seconds = max(1, min(self._links.url_seconds, left))
            url = await asyncio.to_thread(archives.direct_url, download, self._storage, seconds)
            await self._count_use(link.id)
            current_call().add_header(LOCATION_HEADER, url)
            yield httpbody_pb2.HttpBody(content_type="application/zip")
            return
        opened = await asyncio.to_thread(archives.open_for_fetch, download, self._storage)
        try:
            end = range_end(request.offset, request.length, opened.size)
            await self._count_use(link.id)
        except BaseException:
            opened.file.close()
            raise
        async for body in send_archive(opened, request.offset, end):
            yield body

    async def _count_use(self, link_id: str) -> None:
        try:
            async with self._sessions.begin() as session:
                await archive_links.record_use(session, link_id, self._clock())
        except NotFound:  # used up or revoked since it was resolved
            current_call().add_header(HTTP_STATUS_HEADER, "410")
            raise

    async def _within_rate(self, link_id: str) -> None:
        """The link's own budget: one link passed around cannot flood the server (the limiter's
        row is the link's id, never the token)."""
        limit = self._links.rate_limit
        if limit is None:
            return
        subject = f"archive-links/{link_id}"
        decision = await self._links.limiter.acquire(subject, limit)
        for name, value in decision.headers():
            current_call().add_header(name, value)
        if not decision.allowed:
            raise rate_limited(subject, limit, decision)
