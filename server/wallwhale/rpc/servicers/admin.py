"""AdminService: users and API keys (core.users, core.api_keys), the audit trail and statistics
(core.reports), Steam accounts (core.steam_accounts), Steam Guard answers (worker.steam_guard) and QR
logins (worker.qr_login, run by the worker's dispatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from google.protobuf import field_mask_pb2
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wallwhale.core import api_keys, idempotency, limits, reports, steam_accounts, users
from wallwhale.core.paging import page
from wallwhale.core.secretbox import Keyring
from wallwhale.db.models import User, UserRole
from wallwhale.errors import InvalidArgument
from wallwhale.rpc import convert
from wallwhale.rpc.calls import current_call
from wallwhale.steam.runner import StopReason
from wallwhale.v1 import admin_pb2, admin_pb2_grpc, download_pb2
from wallwhale.worker import steam_guard
from wallwhale.worker.dispatcher import Dispatcher
from wallwhale.worker.qr_login import QrCode, QrEvent, QrSucceeded

_ROLES = {admin_pb2.USER_ROLE_ADMIN: UserRole.ADMIN, admin_pb2.USER_ROLE_USER: UserRole.USER}


def _request_key(request_id: str) -> idempotency.RequestKey:
    return idempotency.RequestKey(current_call().caller().request_scope, request_id)


def _mask(mask: field_mask_pb2.FieldMask, allowed: frozenset[str]) -> set[str]:
    # AIP-134: no mask means "every field that can be changed".
    return set(mask.paths) if mask.paths else set(allowed)


def _user_input(user: admin_pb2.User) -> users.UserInput:
    return users.UserInput(
        email=user.email,
        display_name=user.display_name,
        role=_ROLES.get(user.role),
        disabled=user.disabled,
        limits=_limits(user.limits),
    )


def _limits(given: admin_pb2.ApiKeyLimits) -> limits.Limits:
    def optional(name: str) -> int | None:
        return int(getattr(given, name)) if given.HasField(name) else None  # type: ignore[arg-type]

    return limits.Limits(
        requests_per_minute=optional("requests_per_minute"),
        burst=optional("burst"),
        daily_download_quota=optional("daily_download_quota"),
        monthly_download_quota=optional("monthly_download_quota"),
        max_concurrent_downloads=optional("max_concurrent_downloads"),
        max_runtime_seconds=given.max_runtime.seconds if given.HasField("max_runtime") else None,
    )


def _account_input(account: admin_pb2.SteamAccount) -> steam_accounts.AccountInput:
    return steam_accounts.AccountInput(
        username=account.username,
        display_name=account.display_name,
        disabled=account.disabled,
        owned_app_ids=tuple(account.owned_app_ids),
    )


_ACCOUNT_STATUSES = {v: k for k, v in convert.ACCOUNT_STATUSES.items()}


def _caller_scopes() -> frozenset[str]:
    principal = current_call().principal
    return principal.scopes if principal is not None else frozenset()


def _key_input(key: admin_pb2.ApiKey, owner: str) -> api_keys.KeyInput:
    return api_keys.KeyInput(
        name=key.name,
        owner_user_id=owner,
        scopes=tuple(key.scopes),
        limits=_limits(key.limits),
        expire_time=convert.requested_time(key, "expire_time", "api_key.expire_time"),
        disabled=key.disabled,
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        keyring: Keyring,
        worker: Dispatcher,
        heartbeat_seconds: float = 15.0,
        user_defaults: limits.Limits = limits.NO_LIMITS,
    ):
        # Every user's limits where an admin set none of their own (WALLWHALE_USER_*).
        self._user_defaults = user_defaults
        self._sessions = sessions
        self._clock = clock
        self._keyring = keyring
        self._worker = worker
        self._heartbeat_seconds = heartbeat_seconds

    def _meter(self, user: User) -> limits.Meter:
        return limits.Meter.of_user(user.id, limits.Limits.of(user).over(self._user_defaults))

    async def _user(self, session: AsyncSession, user: User) -> admin_pb2.User:
        """The user with the limits that bind them now and their downloads this day and month."""
        usage = await limits.quota_usage(session, self._meter(user), self._clock())
        return convert.user(user, self._user_defaults, usage)

    async def CreateUser(
        self, request: admin_pb2.CreateUserRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.CreateUserResponse:
        async with self._sessions.begin() as session:
            created = await users.create_user(
                session,
                _user_input(request.user),
                request.password,
                self._clock(),
                _request_key(request.request_id),
            )
            shown = await self._user(session, created.user)
        _audit_created(f"users/{created.user.id}", created.repeated)
        return admin_pb2.CreateUserResponse(user=shown)

    async def GetUser(
        self, request: admin_pb2.GetUserRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetUserResponse:
        async with self._sessions() as session:
            return admin_pb2.GetUserResponse(
                user=await self._user(session, await users.get_user(session, request.id))
            )

    async def ListUsers(
        self, request: admin_pb2.ListUsersRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListUsersResponse:
        role = _ROLES.get(request.role)
        current = page(request.page_size, request.page_token, email=request.email_contains, role=role)
        async with self._sessions() as session:
            rows, total = await users.list_users(session, current, request.email_contains, role)
            usage = await limits.download_usage(session, [self._meter(row) for row in rows], self._clock())
        return admin_pb2.ListUsersResponse(
            users=[convert.user(row, self._user_defaults, usage[row.id]) for row in rows],
            next_page_token=current.next_token(total),
            total_size=total,
        )

    async def UpdateUser(
        self, request: admin_pb2.UpdateUserRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.UpdateUserResponse:
        fields = _mask(request.update_mask, users.UPDATABLE)
        async with self._sessions.begin() as session:
            user = await users.update_user(
                session, request.user.id, _user_input(request.user), fields, request.password
            )
            shown = await self._user(session, user)
        return admin_pb2.UpdateUserResponse(user=shown)

    async def DeleteUser(
        self, request: admin_pb2.DeleteUserRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.DeleteUserResponse:
        principal = current_call().principal
        async with self._sessions.begin() as session:
            await users.delete_user(session, request.id, principal.user_id if principal else "")
        return admin_pb2.DeleteUserResponse()

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.CreateApiKeyResponse:
        principal = current_call().principal
        owner = request.api_key.owner_user_id or (principal.user_id if principal else "")
        async with self._sessions.begin() as session:
            created = await api_keys.create_api_key(
                session,
                _key_input(request.api_key, owner),
                self._clock(),
                _caller_scopes(),
                _request_key(request.request_id),
                self._user_defaults,
            )
        row = created.row
        _audit_created(f"api-keys/{row.id}", created.repeated)
        current_call().audit_details.update(prefix=row.prefix, scopes=row.scopes, owner_user_id=owner)
        return admin_pb2.CreateApiKeyResponse(
            api_key=convert.api_key(row),
            plaintext_key=created.plaintext or "",
            repeated_request=created.repeated,
        )

    async def GetApiKey(
        self, request: admin_pb2.GetApiKeyRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetApiKeyResponse:
        async with self._sessions() as session:
            row = await api_keys.get_api_key(session, request.id)
            usage = await limits.quota_usage(session, limits.Meter.of_key(row), self._clock())
        return admin_pb2.GetApiKeyResponse(api_key=convert.api_key(row, usage))

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListApiKeysResponse:
        current = page(
            request.page_size,
            request.page_token,
            owner=request.owner_user_id,
            revoked=request.include_revoked,
        )
        async with self._sessions() as session:
            rows, total = await api_keys.list_api_keys(
                session, current, request.owner_user_id, request.include_revoked
            )
            usage = await limits.download_usage(
                session, [limits.Meter.of_key(row) for row in rows], self._clock()
            )
        return admin_pb2.ListApiKeysResponse(
            api_keys=[convert.api_key(row, usage[row.id]) for row in rows],
            next_page_token=current.next_token(total),
            total_size=total,
        )

    async def UpdateApiKey(
        self, request: admin_pb2.UpdateApiKeyRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.UpdateApiKeyResponse:
        if not request.api_key.id:
            raise InvalidArgument.field("api_key.id", "is required")
        fields = _mask(request.update_mask, api_keys.UPDATABLE)
        async with self._sessions.begin() as session:
            row = await api_keys.update_api_key(
                session,
                request.api_key.id,
                _key_input(request.api_key, ""),
                fields,
                self._clock(),
                _caller_scopes(),
                self._user_defaults,
            )
        return admin_pb2.UpdateApiKeyResponse(api_key=convert.api_key(row))

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.RevokeApiKeyResponse:
        async with self._sessions.begin() as session:
            row = await api_keys.revoke_api_key(session, request.id, self._clock())
        return admin_pb2.RevokeApiKeyResponse(api_key=convert.api_key(row))

    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListAuditEventsResponse:
        outcome = {v: k for k, v in convert.OUTCOMES.items()}.get(request.outcome, "")
        where = reports.AuditFilter(
            actor_id=request.actor_id,
            action=request.action,
            resource=request.resource,
            outcome=outcome,
            start_time=convert.requested_time(request, "start_time"),
            end_time=convert.requested_time(request, "end_time"),
        )
        current = page(request.page_size, request.page_token, filter=where)
        async with self._sessions() as session:
            rows, total = await reports.list_audit_events(session, current, where)
        return admin_pb2.ListAuditEventsResponse(
            audit_events=[convert.audit_event(row) for row in rows],
            next_page_token=current.next_token(total),
            total_size=total,
        )

    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetStatsResponse:
        async with self._sessions() as session:
            stats = await reports.stats(session, self._clock())
        return admin_pb2.GetStatsResponse(
            downloads_by_state=[
                admin_pb2.DownloadStateCount(
                    state=download_pb2.DownloadState.Value(f"DOWNLOAD_STATE_{state.name}"), count=n
                )
                for state, n in sorted(stats.downloads_by_state.items())
            ],
            downloads_total=sum(stats.downloads_by_state.values()),
            cache_hits=stats.cache_hits,
            users=stats.users,
            api_keys_active=stats.api_keys_active,
            steam_accounts_active=stats.steam_accounts_active,
            steam_accounts_total=stats.steam_accounts_total,
            archives=stats.archives,
            storage_used_bytes=stats.storage_used_bytes,
            bytes_downloaded_total=stats.bytes_downloaded_total,
        )

    async def CreateSteamAccount(
        self, request: admin_pb2.CreateSteamAccountRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.CreateSteamAccountResponse:
        async with self._sessions.begin() as session:
            created = await steam_accounts.create_account(
                session,
                _account_input(request.steam_account),
                request.password,
                self._keyring,
                self._clock(),
                _request_key(request.request_id),
            )
        account = created.account
        _audit_created(f"steam-accounts/{account.id}", created.repeated)
        current_call().audit_details["username"] = account.username
        return admin_pb2.CreateSteamAccountResponse(steam_account=convert.steam_account(account))

    async def GetSteamAccount(
        self, request: admin_pb2.GetSteamAccountRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetSteamAccountResponse:
        async with self._sessions() as session:
            account = await steam_accounts.get_account(session, request.id)
        return admin_pb2.GetSteamAccountResponse(steam_account=convert.steam_account(account))

    async def ListSteamAccounts(
        self, request: admin_pb2.ListSteamAccountsRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListSteamAccountsResponse:
        statuses = tuple(_ACCOUNT_STATUSES[s] for s in request.statuses if s in _ACCOUNT_STATUSES)
        current = page(request.page_size, request.page_token, statuses=sorted(statuses))
        async with self._sessions() as session:
            rows, total = await steam_accounts.list_accounts(session, current, statuses)
        return admin_pb2.ListSteamAccountsResponse(
            steam_accounts=[convert.steam_account(row) for row in rows],
            next_page_token=current.next_token(total),
            total_size=total,
        )

    async def UpdateSteamAccount(
        self, request: admin_pb2.UpdateSteamAccountRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.UpdateSteamAccountResponse:
        fields = _mask(request.update_mask, steam_accounts.UPDATABLE)
        async with self._sessions.begin() as session:
            account = await steam_accounts.update_account(
                session,
                request.steam_account.id,
                _account_input(request.steam_account),
                fields,
                request.password,
                self._keyring,
            )
        if request.password:
            current_call().audit_details["password_changed"] = True
        return admin_pb2.UpdateSteamAccountResponse(steam_account=convert.steam_account(account))

    async def SubmitSteamGuardCode(
        self, request: admin_pb2.SubmitSteamGuardCodeRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SubmitSteamGuardCodeResponse:
        code = steam_guard.check_code(request.code)
        async with self._sessions() as session:
            account = await steam_accounts.get_account(session, request.id)
            waiting = await steam_guard.waiting_download(session, account.id)
        current_call().audit_details.update(download_id=waiting.id)  # never the code
        await self._worker.submit_guard_code(account.id, code)
        return admin_pb2.SubmitSteamGuardCodeResponse(steam_account=convert.steam_account(account))

    async def StartQrLogin(
        self, request: admin_pb2.StartQrLoginRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[admin_pb2.StartQrLoginResponse]:
        # Refusals (NOT_FOUND, STEAM_ACCOUNT_BUSY, SHUTTING_DOWN) come before the first message.
        login = await self._worker.start_qr_login(request.id)
        current_call().audit_details["username"] = login.username
        try:
            while True:
                try:
                    event = await asyncio.wait_for(login.events.get(), self._heartbeat_seconds)
                except TimeoutError:
                    yield admin_pb2.StartQrLoginResponse(heartbeat=download_pb2.HeartbeatEvent())
                    continue
                yield _qr_response(event)
                if not isinstance(event, QrCode):
                    current_call().audit_details["outcome"] = (
                        "succeeded" if isinstance(event, QrSucceeded) else "failed"
                    )
                    return
        finally:
            # The caller went away (or the login ended): DepotDownloader is stopped, the lease freed.
            if not login.done.is_set():
                login.stop(StopReason.CANCELLED)

    async def DeleteSteamAccount(
        self, request: admin_pb2.DeleteSteamAccountRequest, context: aio.ServicerContext[Any, Any]
    ) -> admin_pb2.DeleteSteamAccountResponse:
        async with self._sessions.begin() as session:
            await steam_accounts.delete_account(session, request.id)
        return admin_pb2.DeleteSteamAccountResponse()


def _audit_created(resource: str, repeated: bool) -> None:
    current_call().audit_resource = resource
    if repeated:  # the request_id was seen before: nothing new was made
        current_call().audit_details["repeated_request"] = True


def _qr_response(event: QrEvent) -> admin_pb2.StartQrLoginResponse:
    if isinstance(event, QrCode):
        matrix = event.matrix
        return admin_pb2.StartQrLoginResponse(
            qr_code=admin_pb2.QrCode(rows=list(matrix.rows), svg=matrix.svg(), png=matrix.png())
        )
    if isinstance(event, QrSucceeded):
        return admin_pb2.StartQrLoginResponse(succeeded=convert.steam_account(event.account))
    return admin_pb2.StartQrLoginResponse(failed=event.message)
