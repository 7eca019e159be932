"""Share links to archives (AsyncClient's link methods): a URL path that fetches a download's or a
batch's zip with no credentials until it expires, is revoked or, single use, has served once."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from google.protobuf import duration_pb2

from wallwhale_client.transport import Transport, Unary
from wallwhale_client.v1 import download_pb2, download_pb2_grpc


class _LinkRpcs(Protocol):
    CreateArchiveLink: Unary[download_pb2.CreateArchiveLinkRequest, download_pb2.CreateArchiveLinkResponse]
    ListArchiveLinks: Unary[download_pb2.ListArchiveLinksRequest, download_pb2.ListArchiveLinksResponse]
    RevokeArchiveLink: Unary[download_pb2.RevokeArchiveLinkRequest, download_pb2.RevokeArchiveLinkResponse]


class LinksApi:
    """AsyncClient's calls for share links."""

    _transport: Transport
    downloads: download_pb2_grpc.DownloadServiceStub

    @property
    def _link_rpcs(self) -> _LinkRpcs:
        return self.downloads

    async def create_archive_link(
        self,
        *,
        download_id: str = "",
        batch_id: str = "",
        expires: timedelta | None = None,
        single_use: bool = False,
    ) -> download_pb2.CreateArchiveLinkResponse:
        """A link to one download's (or one batch's) archive. `expires`: its lifetime (default and
        at most the server's maximum). The answer's url_path, appended to the server's public base
        URL, is the link; its token is shown only here."""
        ttl = None
        if expires is not None:
            ttl = duration_pb2.Duration()
            ttl.FromTimedelta(expires)
        request = download_pb2.CreateArchiveLinkRequest(
            download_id=download_id, batch_id=batch_id, ttl=ttl, single_use=single_use
        )
        return await self._transport.unary(self._link_rpcs.CreateArchiveLink, request)

    async def list_archive_links(
        self, *, download_id: str = "", batch_id: str = ""
    ) -> list[download_pb2.ArchiveLink]:
        """The links of one download or batch, newest first (ended ones too)."""
        request = download_pb2.ListArchiveLinksRequest(download_id=download_id, batch_id=batch_id)
        response = await self._transport.unary(self._link_rpcs.ListArchiveLinks, request)
        return list(response.links)

    async def revoke_archive_link(self, link_id: str) -> download_pb2.ArchiveLink:
        request = download_pb2.RevokeArchiveLinkRequest(id=link_id)
        response = await self._transport.unary(self._link_rpcs.RevokeArchiveLink, request)
        return response.link
