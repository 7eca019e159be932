"""Administration: API keys, Steam accounts (Steam Guard codes, QR login) and statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import grpc

from wallwhale_client.errors import from_rpc_error
from wallwhale_client.transport import Streaming, Transport, Unary, new_request_id
from wallwhale_client.v1 import admin_pb2, admin_pb2_grpc


class _AdminRpcs(Protocol):
    CreateApiKey: Unary[admin_pb2.CreateApiKeyRequest, admin_pb2.CreateApiKeyResponse]
    ListApiKeys: Unary[admin_pb2.ListApiKeysRequest, admin_pb2.ListApiKeysResponse]
    RevokeApiKey: Unary[admin_pb2.RevokeApiKeyRequest, admin_pb2.RevokeApiKeyResponse]
    CreateSteamAccount: Unary[admin_pb2.CreateSteamAccountRequest, admin_pb2.CreateSteamAccountResponse]
    ListSteamAccounts: Unary[admin_pb2.ListSteamAccountsRequest, admin_pb2.ListSteamAccountsResponse]
    SubmitSteamGuardCode: Unary[admin_pb2.SubmitSteamGuardCodeRequest, admin_pb2.SubmitSteamGuardCodeResponse]
    StartQrLogin: Streaming[admin_pb2.StartQrLoginRequest, admin_pb2.StartQrLoginResponse]
    GetStats: Unary[admin_pb2.GetStatsRequest, admin_pb2.GetStatsResponse]


class AdminApi:
    """AsyncClient's administration calls (they need an admin's scopes or role)."""

    _transport: Transport
    admin: admin_pb2_grpc.AdminServiceStub

    @property
    def _admin_rpcs(self) -> _AdminRpcs:
        return self.admin

    async def create_api_key(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        owner_user_id: str = "",
        limits: admin_pb2.ApiKeyLimits | None = None,
        request_id: str | None = None,
    ) -> admin_pb2.CreateApiKeyResponse:
        """A new API key; `plaintext_key` in the response is the key itself, shown only this once.

        A retry after a lost answer (same request_id) gets the key the first attempt made, with
        `repeated_request` set and no `plaintext_key`: revoke that key and create another."""
        request = admin_pb2.CreateApiKeyRequest(
            api_key=admin_pb2.ApiKey(name=name, scopes=scopes, owner_user_id=owner_user_id, limits=limits),
            request_id=request_id or new_request_id(),
        )
        return await self._transport.unary(self._admin_rpcs.CreateApiKey, request)

    async def list_api_keys(
        self, *, include_revoked: bool = False, limit: int = 500
    ) -> list[admin_pb2.ApiKey]:
        request = admin_pb2.ListApiKeysRequest(page_size=min(limit, 500), include_revoked=include_revoked)
        response = await self._transport.unary(self._admin_rpcs.ListApiKeys, request)
        return list(response.api_keys)

    async def revoke_api_key(self, api_key_id: str) -> admin_pb2.ApiKey:
        request = admin_pb2.RevokeApiKeyRequest(id=api_key_id)
        response = await self._transport.unary(self._admin_rpcs.RevokeApiKey, request)
        return response.api_key

    async def create_steam_account(
        self,
        username: str,
        password: str = "",
        *,
        display_name: str = "",
        owned_app_ids: Iterable[int] = (),
        request_id: str | None = None,
    ) -> admin_pb2.SteamAccount:
        request = admin_pb2.CreateSteamAccountRequest(
            steam_account=admin_pb2.SteamAccount(
                username=username, display_name=display_name, owned_app_ids=owned_app_ids
            ),
            password=password,
            request_id=request_id or new_request_id(),
        )
        response = await self._transport.unary(self._admin_rpcs.CreateSteamAccount, request)
        return response.steam_account

    async def list_steam_accounts(self, *, limit: int = 500) -> list[admin_pb2.SteamAccount]:
        request = admin_pb2.ListSteamAccountsRequest(page_size=min(limit, 500))
        response = await self._transport.unary(self._admin_rpcs.ListSteamAccounts, request)
        return list(response.steam_accounts)

    async def submit_steam_guard_code(self, steam_account_id: str, code: str) -> admin_pb2.SteamAccount:
        request = admin_pb2.SubmitSteamGuardCodeRequest(id=steam_account_id, code=code)
        response = await self._transport.unary(self._admin_rpcs.SubmitSteamGuardCode, request)
        return response.steam_account

    async def start_qr_login(self, steam_account_id: str) -> AsyncIterator[admin_pb2.StartQrLoginResponse]:
        """QR codes to scan, then the outcome. Not retried: each call starts a new login."""
        request = admin_pb2.StartQrLoginRequest(id=steam_account_id)
        call = self._admin_rpcs.StartQrLogin(request, metadata=await self._transport.metadata())
        try:
            async for event in call:
                yield event
        except grpc.RpcError as raw:
            raise from_rpc_error(raw) from None
        finally:
            call.cancel()

    async def get_stats(self) -> admin_pb2.GetStatsResponse:
        return await self._transport.unary(self._admin_rpcs.GetStats, admin_pb2.GetStatsRequest())
