"""AuthService: people's login sessions (core.login_sessions) and who-am-I."""

from __future__ import annotations

from typing import Any

from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core.identity import caller_records
from wallwhale.core.login_sessions import ClientInfo, LoginSessions, Tokens
from wallwhale.errors import Unauthenticated
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.v1 import admin_pb2, auth_pb2, auth_pb2_grpc


def _tokens(tokens: Tokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        access_token_expire_time=convert.timestamp(tokens.access_expire_time),
        refresh_token=tokens.refresh_token,
        refresh_token_expire_time=convert.timestamp(tokens.refresh_expire_time),
    )


def _client() -> ClientInfo:
    call = current_call()
    return ClientInfo(user_agent=call.metadata.get("user-agent", ""), address=call.client_address)


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, logins: LoginSessions, sessions: async_sessionmaker[AsyncSession]):
        self._logins = logins
        self._sessions = sessions

    async def Login(
        self, request: auth_pb2.LoginRequest, context: aio.ServicerContext[Any, Any]
    ) -> auth_pb2.LoginResponse:
        current_call().audit_details["email"] = request.email[:320]
        tokens, user = await self._logins.login(request.email, request.password, _client())
        current_call().audit_resource = f"users/{user.id}"
        return auth_pb2.LoginResponse(tokens=_tokens(tokens), user=convert.user(user))

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: aio.ServicerContext[Any, Any]
    ) -> auth_pb2.RefreshResponse:
        return auth_pb2.RefreshResponse(
            tokens=_tokens(await self._logins.refresh(request.refresh_token, _client()))
        )

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: aio.ServicerContext[Any, Any]
    ) -> auth_pb2.LogoutResponse:
        await self._logins.logout(request.refresh_token, request.all_sessions)
        return auth_pb2.LogoutResponse()

    async def GetCaller(
        self, request: auth_pb2.GetCallerRequest, context: aio.ServicerContext[Any, Any]
    ) -> auth_pb2.GetCallerResponse:
        principal = current_call().principal
        if principal is None:  # the access rule requires credentials; this is a safety net
            raise Unauthenticated("credentials are missing", reason="CREDENTIALS_MISSING")
        async with self._sessions() as session:
            user, key = await caller_records(session, principal)
        kind = admin_pb2.ACTOR_KIND_API_KEY if principal.api_key_id else admin_pb2.ACTOR_KIND_USER
        return auth_pb2.GetCallerResponse(
            actor=admin_pb2.Actor(
                kind=kind, id=principal.api_key_id or principal.user_id, display=principal.display
            ),
            user=convert.user(user) if user else None,
            api_key=convert.api_key(key) if key else None,
            scopes=sorted(principal.scopes),
        )

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: aio.ServicerContext[Any, Any]
    ) -> auth_pb2.ChangePasswordResponse:
        principal = current_call().principal
        if principal is None:
            raise Unauthenticated("credentials are missing", reason="CREDENTIALS_MISSING")
        await self._logins.change_password(principal, request.current_password, request.new_password)
        return auth_pb2.ChangePasswordResponse()
