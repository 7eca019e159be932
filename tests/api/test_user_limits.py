"""Limits bind people, not only keys (issue 15, item 10): a user's quota, concurrency, runtime and
request rate hold over all their API keys and their logins together, as the server's defaults or
an admin's override, and no key of theirs is looser. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets

import grpc
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.harness import Harness, rpc_error, seconds
from tests.support.server import Metadata, error_info
from wallwhale.v1 import admin_pb2, auth_pb2, auth_pb2_grpc
from wallwhale.v1 import download_pb2 as D

ITEM = 2831300001
PASSWORD = "a-long-enough-password"


async def _person(harness: Harness, **limits: object) -> tuple[admin_pb2.User, Metadata, Metadata]:
    """A USER with `limits` of their own, two API keys of theirs (no limits of their own), and
    the metadata of each key."""
    api = harness.admin_api
    user = (
        await api.CreateUser(
            admin_pb2.CreateUserRequest(
                user=admin_pb2.User(
                    email=f"p{secrets.token_hex(4)}@example.test",
                    role=admin_pb2.USER_ROLE_USER,
                    limits=admin_pb2.ApiKeyLimits(**limits),  # type: ignore[arg-type]
                ),
                password=PASSWORD,
            ),
            metadata=harness.admin,
        )
    ).user
    keys = []
    for name in ("first", "second"):
        created = await api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(name=name, owner_user_id=user.id, scopes=["download:*"])
            ),
            metadata=harness.admin,
        )
        keys.append((("x-api-key", created.plaintext_key),))
    return user, keys[0], keys[1]


async def _login(harness: Harness, user: admin_pb2.User) -> Metadata:
    login = await auth_pb2_grpc.AuthServiceStub(harness.channel).Login(
        auth_pb2.LoginRequest(email=user.email, password=PASSWORD)
    )
    return (("authorization", f"Bearer {login.tokens.access_token}"),)


def _quota_subject(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            return failure.violations[0].subject
    raise AssertionError("no QuotaFailure in the status details")


def _bad_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [violation.field for violation in bad.field_violations]
    raise AssertionError("no BadRequest in the status details")


async def test_a_users_daily_quota_holds_over_all_their_keys_and_their_login(harness: Harness) -> None:
    await harness.start(max_concurrent_downloads=0, user_daily_download_quota=2)  # nothing runs
    user, first, second = await _person(harness)
    await harness.create(str(ITEM), first)
    await harness.create(str(ITEM + 1), second)
    login = await _login(harness, user)
    for call in (
        harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=str(ITEM + 2)), metadata=first),
        harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=str(ITEM + 2)), metadata=login),
        harness.downloads.CreateBatch(D.CreateBatchRequest(urls_or_ids=[str(ITEM + 2)]), metadata=second),
    ):
        refused = await rpc_error(call)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(refused).reason == "DAILY_QUOTA_EXCEEDED"
        assert _quota_subject(refused) == f"users/{user.id}"

    # An admin's override for this user replaces the default: one more, from any of theirs.
    await harness.admin_api.UpdateUser(
        admin_pb2.UpdateUserRequest(
            user=admin_pb2.User(id=user.id, limits=admin_pb2.ApiKeyLimits(daily_download_quota=3)),
            update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
        ),
        metadata=harness.admin,
    )
    await harness.create(str(ITEM + 2), login)
    refused = await rpc_error(
        harness.downloads.CreateDownload(D.CreateDownloadRequest(url_or_id=str(ITEM + 3)), metadata=second)
    )
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    shown = (
        await harness.admin_api.GetUser(admin_pb2.GetUserRequest(id=user.id), metadata=harness.admin)
    ).user
    assert shown.limits.daily_download_quota == 3
    assert shown.effective_limits.daily_download_quota == 3
    assert shown.usage.daily_downloads == 3


async def test_a_users_concurrency_holds_over_all_their_keys_and_their_login(harness: Harness) -> None:
    await harness.start()  # four downloads at once on this instance
    await harness.add_account("jane_we", "pw-jane")
    await harness.add_account("kurt_we", "pw-kurt")
    for number in range(3):
        harness.steam.add_item(
            ITEM + number, files={f"f{i}.bin": 100 for i in range(4)}, behaviour={"file_delay": seconds(0.2)}
        )
    user, first, second = await _person(harness, max_concurrent_downloads=1)
    login = await _login(harness, user)
    jobs = [
        await harness.create(str(ITEM + number), metadata, skip_cache=True)
        for number, metadata in enumerate((first, second, login))
    ]
    await asyncio.sleep(0.5)
    states = [(await harness.get(job.id)).state for job in jobs]
    assert states.count(D.DOWNLOAD_STATE_QUEUED) >= 2, states  # waiting, not failed
    for job in jobs:
        assert (await harness.wait_for(job.id)).state == D.DOWNLOAD_STATE_SUCCEEDED
    assert harness.steam.max_overlap() == 1  # two accounts were free all along


async def test_a_users_runtime_bounds_the_jobs_of_a_key_without_one(harness: Harness) -> None:
    await harness.start(max_attempts=1, user_max_runtime_seconds=1)
    await harness.add_account("lena_we", "pw-lena")
    harness.steam.add_item(
        ITEM, files={f"f{i}.bin": 100 for i in range(40)}, behaviour={"file_delay": seconds(0.2)}
    )
    _, first, _ = await _person(harness)  # keys without a runtime limit of their own
    done = await harness.wait_for((await harness.create(str(ITEM), first, skip_cache=True)).id)
    assert D.FailureReason.Name(done.failure.reason) == "FAILURE_REASON_TIMEOUT"


async def test_a_key_cannot_be_looser_than_its_owner(harness: Harness) -> None:
    await harness.start(max_concurrent_downloads=0, user_max_concurrent_downloads=2)
    user, _, _ = await _person(harness, daily_download_quota=5, requests_per_minute=60)
    api = harness.admin_api

    async def create(**limits: object) -> admin_pb2.CreateApiKeyResponse:
        return await api.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                api_key=admin_pb2.ApiKey(
                    name="k",
                    owner_user_id=user.id,
                    scopes=["download:*"],
                    limits=admin_pb2.ApiKeyLimits(**limits),  # type: ignore[arg-type]
                )
            ),
            metadata=harness.admin,
        )

    refused = await rpc_error(
        create(daily_download_quota=6, max_concurrent_downloads=3, requests_per_minute=61)
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(_bad_fields(refused)) == [
        "api_key.limits.daily_download_quota",  # the user's own
        "api_key.limits.max_concurrent_downloads",  # the server's default for users
        "api_key.limits.requests_per_minute",
    ]
    within = await create(
        daily_download_quota=5, max_concurrent_downloads=2, max_runtime=duration_pb2.Duration(seconds=9)
    )
    await create()  # unset: bound by the owner's limits at every call
    widened = await rpc_error(
        api.UpdateApiKey(
            admin_pb2.UpdateApiKeyRequest(
                api_key=admin_pb2.ApiKey(
                    id=within.api_key.id, limits=admin_pb2.ApiKeyLimits(daily_download_quota=7)
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
            ),
            metadata=harness.admin,
        )
    )
    assert widened.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_fields(widened) == ["api_key.limits.daily_download_quota"]
    # Lowering the user below their keys is allowed: every call takes the tighter of the two.
    await api.UpdateUser(
        admin_pb2.UpdateUserRequest(
            user=admin_pb2.User(id=user.id, limits=admin_pb2.ApiKeyLimits(daily_download_quota=1)),
            update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
        ),
        metadata=harness.admin,
    )
    negative = await rpc_error(
        api.UpdateUser(
            admin_pb2.UpdateUserRequest(
                user=admin_pb2.User(id=user.id, limits=admin_pb2.ApiKeyLimits(burst=-1)),
                update_mask=field_mask_pb2.FieldMask(paths=["limits"]),
            ),
            metadata=harness.admin,
        )
    )
    assert _bad_fields(negative) == ["user.limits.burst"]


async def test_a_users_request_rate_is_one_budget_over_keys_and_sessions(harness: Harness) -> None:
    await harness.start(max_concurrent_downloads=0)
    user, first, second = await _person(harness, requests_per_minute=1, burst=3)
    login = await _login(harness, user)  # logging in is not counted
    auth = auth_pb2_grpc.AuthServiceStub(harness.channel)
    for metadata in (first, second, login):
        await auth.GetCaller(auth_pb2.GetCallerRequest(), metadata=metadata)
    for metadata in (first, second, login):
        refused = await rpc_error(auth.GetCaller(auth_pb2.GetCallerRequest(), metadata=metadata))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(refused).reason == "RATE_LIMITED"
        assert _quota_subject(refused) == f"users/{user.id}"
