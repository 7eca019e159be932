"""How one call is made: the channel, the caller's credentials, the deadline, retries and renewal.

grpcio ships no type information, so the generated stubs' methods are untyped to mypy. `Unary` and
`Streaming` give them back their message types: each service area declares the RPCs it calls with
them (see downloads.py), and `Transport.unary` is generic over the request and response it is given.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from grpc import aio

from wallwhale_client._version import __version__
from wallwhale_client.errors import Unavailable, WallWhaleError, from_rpc_error
from wallwhale_client.retry import RetryPolicy

Metadata = tuple[tuple[str, str], ...]
"""The credentials sent with one call, as gRPC metadata."""

Request = TypeVar("Request")
Response = TypeVar("Response")
Request_contra = TypeVar("Request_contra", contravariant=True)
Response_co = TypeVar("Response_co", covariant=True)


class Unary(Protocol[Request_contra, Response_co]):
    """A unary method of a generated stub (a grpc.aio UnaryUnaryMultiCallable)."""

    def __call__(
        self, request: Request_contra, /, *, metadata: Metadata, timeout: float | None
    ) -> Awaitable[Response_co]: ...


class StreamCall(Protocol[Response_co]):
    """The part of a grpc.aio UnaryStreamCall the client uses."""

    def __aiter__(self) -> AsyncIterator[Response_co]: ...

    def initial_metadata(self) -> Awaitable[Iterable[tuple[str, str | bytes]] | None]: ...

    def cancel(self) -> bool: ...


class Streaming(Protocol[Request_contra, Response_co]):
    """A server-streaming method of a generated stub (a grpc.aio UnaryStreamMultiCallable)."""

    def __call__(self, request: Request_contra, /, *, metadata: Metadata) -> StreamCall[Response_co]: ...


class Credentials(Protocol):
    """Who the caller is, as metadata for each call."""

    async def metadata(self) -> Metadata: ...

    async def renew(self, error: WallWhaleError, used: Metadata) -> bool:
        """True when `error` says the credentials in `used` expired and new ones are now there
        (the call is tried again at once, not counted as a failure)."""
        ...


class Anonymous:
    """No credentials (a server that lets anyone in, or the calls that log in)."""

    async def metadata(self) -> Metadata:
        return ()

    async def renew(self, error: WallWhaleError, used: Metadata) -> bool:
        return False


class ApiKeyCredentials:
    """An API key, sent as x-api-key with every call; it does not expire."""

    def __init__(self, api_key: str):
        self._metadata: Metadata = (("x-api-key", api_key),)

    async def metadata(self) -> Metadata:
        return self._metadata

    async def renew(self, error: WallWhaleError, used: Metadata) -> bool:
        return False


@dataclass(frozen=True)
class Tls:
    """TLS for the channel. Without root_certificates or ca_cert the system's trust store is used;
    a client certificate (certificate_chain + private_key, PEM) is for servers that ask for one.

        Tls(ca_cert="certs/ca.pem")   # trust the CA of `wallwhale certs dev` (or a private CA)
    """

    root_certificates: bytes | None = None
    # A PEM file of the CA(s) to trust, read when the channel opens (instead of root_certificates).
    ca_cert: str | os.PathLike[str] | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    # Check the server's certificate against this name instead of the address's host.
    server_name: str | None = None


def open_channel(
    address: str,
    tls: Tls | bool,
    interceptors: Sequence[aio.ClientInterceptor],
    channel_options: Sequence[tuple[str, Any]],
) -> aio.Channel:
    options = [("grpc.primary_user_agent", f"wallwhale-client-python/{__version__}"), *channel_options]
    if not tls:
        return aio.insecure_channel(address, options, interceptors=interceptors)
    settings = tls if isinstance(tls, Tls) else Tls()
    if settings.server_name:
        options.append(("grpc.ssl_target_name_override", settings.server_name))
    roots = settings.root_certificates
    if settings.ca_cert is not None:
        try:
            roots = Path(settings.ca_cert).read_bytes()
        except OSError as error:
            raise WallWhaleError(
                f"cannot read the CA certificate {settings.ca_cert}: {error.strerror}"
            ) from None
    credentials = grpc.ssl_channel_credentials(roots, settings.private_key, settings.certificate_chain)
    return aio.secure_channel(address, credentials, options, interceptors=interceptors)


def new_request_id() -> str:
    """An id for a creation, made up when the caller gives none: its retries then find the first result."""
    return uuid.uuid4().hex


def stream_cut(what: str) -> WallWhaleError:
    """A stream that ended before it was complete: a proxy or a stopping server cut it."""
    return Unavailable(f"the stream of {what} ended early", code=grpc.StatusCode.UNAVAILABLE)


class Transport:
    """Makes the calls of one AsyncClient: credentials, `timeout` as each unary call's deadline
    (streams run as long as their job), typed errors, and retries with `retry`."""

    def __init__(self, channel: aio.Channel, *, timeout: float | None, retry: RetryPolicy):
        self.channel = channel
        self.timeout = timeout
        self.retry = retry
        # Set once by the client: the login that gives tokens calls through this transport itself.
        self.credentials: Credentials = Anonymous()

    async def metadata(self) -> Metadata:
        return await self.credentials.metadata()

    async def unary(
        self, method: Unary[Request, Response], request: Request, *, anonymous: bool = False
    ) -> Response:
        """One unary call with credentials, deadline, error mapping and retries. A creation's
        request carries a request_id, so a call retried after a lost answer is not done twice."""
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            metadata = () if anonymous else await self.metadata()
            try:
                return await method(request, metadata=metadata, timeout=self.timeout)
            except grpc.RpcError as raw:
                error = from_rpc_error(raw)
            if not renewed and await self.credentials.renew(error, metadata):
                renewed = True
                continue
            delay = self.retry.delay(error, attempt)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def recover_stream(self, error: WallWhaleError, used: Metadata, failures: int) -> int:
        """After a broken stream: renew expired credentials (not counted as a failure), or wait the
        back-off for this failure, or raise when no more attempts are allowed. Returns the count."""
        if await self.credentials.renew(error, used):
            return failures
        failures += 1
        delay = self.retry.delay(error, failures, stream=True)
        if delay is None:
            raise error
        await asyncio.sleep(delay)
        return failures
