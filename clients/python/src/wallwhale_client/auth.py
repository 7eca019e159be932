"""Who the caller is: a person's login (tokens kept and refreshed), and GetCaller."""

from __future__ import annotations

import asyncio
from typing import Protocol

from wallwhale_client.errors import Unauthenticated, WallWhaleError
from wallwhale_client.transport import Metadata, Transport, Unary
from wallwhale_client.v1 import auth_pb2, auth_pb2_grpc


class _AuthRpcs(Protocol):
    Login: Unary[auth_pb2.LoginRequest, auth_pb2.LoginResponse]
    Refresh: Unary[auth_pb2.RefreshRequest, auth_pb2.RefreshResponse]
    GetCaller: Unary[auth_pb2.GetCallerRequest, auth_pb2.GetCallerResponse]


class PasswordLogin:
    """A person's e-mail and password: logged in on the first call, the access token refreshed when
    the server says it expired (or a fresh login when the refresh token is no good either)."""

    def __init__(self, transport: Transport, stub: auth_pb2_grpc.AuthServiceStub, email: str, password: str):
        self._transport = transport
        self._rpcs: _AuthRpcs = stub
        self._email = email
        self._password = password
        self._tokens: auth_pb2.TokenPair | None = None
        self._lock = asyncio.Lock()

    def _bearer(self, tokens: auth_pb2.TokenPair) -> Metadata:
        return (("authorization", f"Bearer {tokens.access_token}"),)

    async def metadata(self) -> Metadata:
        async with self._lock:
            if self._tokens is None:
                request = auth_pb2.LoginRequest(email=self._email, password=self._password)
                response = await self._transport.unary(self._rpcs.Login, request, anonymous=True)
                self._tokens = response.tokens
            return self._bearer(self._tokens)

    async def renew(self, error: WallWhaleError, used: Metadata) -> bool:
        if not (isinstance(error, Unauthenticated) and error.reason == "TOKEN_EXPIRED" and used):
            return False
        async with self._lock:  # concurrent callers renew once
            if self._tokens is None or self._bearer(self._tokens) != used:
                return True  # another call renewed them already
            try:
                request = auth_pb2.RefreshRequest(refresh_token=self._tokens.refresh_token)
                refreshed = await self._transport.unary(self._rpcs.Refresh, request, anonymous=True)
                self._tokens = refreshed.tokens
            except Unauthenticated:
                self._tokens = None  # metadata() logs in again
        return True


class AuthApi:
    """AsyncClient's identity call."""

    _transport: Transport
    auth: auth_pb2_grpc.AuthServiceStub

    @property
    def _auth_rpcs(self) -> _AuthRpcs:
        return self.auth

    async def get_caller(self) -> auth_pb2.GetCallerResponse:
        return await self._transport.unary(self._auth_rpcs.GetCaller, auth_pb2.GetCallerRequest())
