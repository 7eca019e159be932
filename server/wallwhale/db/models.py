"""The database schema: SQLAlchemy 2 declarative models, identical on SQLite and PostgreSQL.

Conventions:
- Ids are 26-character strings from `wallwhale.ids.new_id` (time-ordered), generated in Python.
- Timestamps are `UTCDateTime` (aware UTC) named `*_time`; defaults come from Python, not the server,
  so both databases store exactly the same values.
- State columns are StrEnums stored as their value in a VARCHAR(32); Python validates them, the database
  has no CHECK for them, so adding a state needs no migration.
- Optional free text is "" rather than NULL (as in proto3); NULL means "not set" only where a value
  would otherwise be ambiguous (times, limits, foreign keys).
- Constraint and index names come from the naming convention on `Base.metadata`, so migrations can
  refer to them by name on both databases.

Any change here needs a migration: `alembic revision --autogenerate --rev-id NNNN -m "..."`, reviewed
by hand; `tests/ops/test_migrations.py` fails when models and migrations drift.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    WriteOnlyMapped,
    mapped_column,
    relationship,
    validates,
)

from wallwhale.db.types import JSONType, UTCDateTime, utcnow
from wallwhale.ids import new_id
from wallwhale.steam.output import Phase, Reason

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The base of every model; its metadata is what Alembic compares the migrations with."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    # Every Mapped[datetime] is a UTCDateTime unless said otherwise: no naive timestamps by accident.
    # (A plain dict is what SQLAlchemy expects here; it is read once, when the models are mapped.)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012


class UserRole(StrEnum):
    ADMIN = "ADMIN"
    USER = "USER"


class SteamAccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"
    COOLING_DOWN = "COOLING_DOWN"
    WAITING_FOR_STEAM_GUARD = "WAITING_FOR_STEAM_GUARD"


class BatchState(StrEnum):
    ACTIVE = "ACTIVE"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class DownloadState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING_FOR_STEAM_GUARD = "WAITING_FOR_STEAM_GUARD"
    ARCHIVING = "ARCHIVING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ArchiveState(StrEnum):
    """Values match wallwhale.v1.ArchiveState without its prefix."""

    AVAILABLE = "AVAILABLE"
    EXPIRED = "EXPIRED"  # removed by the retention policy


class GuardKind(StrEnum):
    """What a Steam Guard prompt waits for; values match wallwhale.v1.SteamGuardKind without its prefix."""

    AUTHENTICATOR_CODE = "AUTHENTICATOR_CODE"
    EMAIL_CODE = "EMAIL_CODE"
    MOBILE_CONFIRMATION = "MOBILE_CONFIRMATION"


class UsagePeriod(StrEnum):
    """The values of UsageCounter.period."""

    DAY = "day"
    MONTH = "month"


_E = TypeVar("_E", bound=StrEnum)


def _enum(enum_cls: type[_E], length: int = 32) -> sa.Enum:
    return sa.Enum(
        enum_cls,
        native_enum=False,
        length=length,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


# Small column factories for the patterns every table repeats. Booleans and counters also get a server
# default, so rows written by plain SQL (upserts, data migrations) and columns added later get a value.
def _id() -> Mapped[str]:
    return mapped_column(sa.String(26), primary_key=True, default=new_id)


def _flag(default: bool = False) -> Mapped[bool]:
    # Literal true/false (not sa.true()): autogenerate would render that as 0/1, which PostgreSQL refuses.
    return mapped_column(default=default, server_default=sa.text("true" if default else "false"))


def _counter() -> Mapped[int]:
    return mapped_column(sa.BigInteger, default=0, server_default=sa.text("0"))


def _text(length: int) -> Mapped[str]:
    return mapped_column(sa.String(length), default="", server_default="")


def _create_time() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


def _update_time() -> Mapped[datetime]:
    return mapped_column(default=utcnow, onupdate=utcnow)


def _optional_ref(target: str, *, index: bool = False) -> Mapped[str | None]:
    # Jobs and batches outlive what they point to (history, archives): deleting it clears the reference.
    return mapped_column(sa.String(26), sa.ForeignKey(target, ondelete="SET NULL"), index=index)


class User(Base):
    """A person who signs in with email and password; owns API keys, downloads and batches."""

    __tablename__ = "users"

    id: Mapped[str] = _id()
    # Stored lower-case (see _lower_email), so the unique constraint is case-insensitive.
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    display_name: Mapped[str] = _text(128)
    role: Mapped[UserRole] = mapped_column(_enum(UserRole), default=UserRole.USER)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    disabled: Mapped[bool] = _flag()
    create_time: Mapped[datetime] = _create_time()
    update_time: Mapped[datetime] = _update_time()
    last_login_time: Mapped[datetime | None]
    # A password reset or a disable: access tokens issued before it are refused.
    credentials_changed_time: Mapped[datetime | None]
    # The person's own limits, over all their API keys and sessions; NULL: the server's default
    # (WALLWHALE_USER_*), which may be no limit. A key's limits are never looser (core.limits).
    requests_per_minute: Mapped[int | None]
    burst: Mapped[int | None]
    daily_download_quota: Mapped[int | None] = mapped_column(sa.BigInteger)
    monthly_download_quota: Mapped[int | None] = mapped_column(sa.BigInteger)
    max_concurrent_downloads: Mapped[int | None]
    max_runtime_seconds: Mapped[int | None]

    @validates("email")
    def _lower_email(self, key: str, value: str) -> str:
        return value.strip().lower()


class ApiKey(Base):
    """A secret for programs: only its SHA-256 is stored; carries scopes, rate limits and quotas.

    NULL limits mean "no limit of this kind".
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(sa.String(128))
    owner_user_id: Mapped[str] = mapped_column(
        sa.String(26), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The visible start of the key, shown in listings and logs to tell keys apart.
    prefix: Mapped[str] = mapped_column(sa.String(16), index=True)
    # sha256 hex of the whole key; a lookup by hash is how a presented key is authenticated.
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    requests_per_minute: Mapped[int | None]
    burst: Mapped[int | None]
    daily_download_quota: Mapped[int | None] = mapped_column(sa.BigInteger)
    monthly_download_quota: Mapped[int | None] = mapped_column(sa.BigInteger)
    max_concurrent_downloads: Mapped[int | None]
    max_runtime_seconds: Mapped[int | None]
    expire_time: Mapped[datetime | None]
    disabled: Mapped[bool] = _flag()
    revoke_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = _create_time()
    update_time: Mapped[datetime] = _update_time()
    last_used_time: Mapped[datetime | None]
    total_requests: Mapped[int] = _counter()

    # Authentication always needs the owner (disabled? role?), so it comes in the same query.
    owner: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class RefreshToken(Base):
    """One refresh token of a login session; only its SHA-256 is stored.

    Rotation marks the used token (`used_time`) and issues a new one in the same family; presenting a
    used token again means it was stolen, and the whole family is revoked.
    """

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(
        sa.String(26), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[str] = mapped_column(sa.String(26), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    create_time: Mapped[datetime] = _create_time()
    expire_time: Mapped[datetime]
    used_time: Mapped[datetime | None]
    revoke_time: Mapped[datetime | None]
    user_agent: Mapped[str] = _text(256)
    client_address: Mapped[str] = _text(64)


class UsageCounter(Base):
    """Downloads and bytes per API key per day and per month, for quotas (updated by atomic upsert)."""

    __tablename__ = "usage_counters"
    __table_args__ = (sa.CheckConstraint("period IN ('day', 'month')", name="period"),)

    api_key_id: Mapped[str] = mapped_column(
        sa.String(26), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    # A UsagePeriod value; a plain string (checked by the database) so upserts can name it in SQL.
    period: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    # The first day of the period (UTC): the day itself, or the first of the month.
    period_start: Mapped[date] = mapped_column(primary_key=True)
    downloads: Mapped[int] = _counter()
    bytes: Mapped[int] = _counter()


class UserUsageCounter(Base):
    """Downloads per user per day and per month, over all their keys and sessions (user quotas)."""

    __tablename__ = "user_usage_counters"
    __table_args__ = (sa.CheckConstraint("period IN ('day', 'month')", name="period"),)

    user_id: Mapped[str] = mapped_column(
        sa.String(26), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    period_start: Mapped[date] = mapped_column(primary_key=True)
    downloads: Mapped[int] = _counter()


class RateLimitState(Base):
    """The request budget of one rate-limited caller, shared by every server instance (GCRA).

    `subject` is "api-keys/<id>" or "users/<id>": no foreign key, so one table serves both. A row
    whose time has passed means a full budget, the same as no row; rows of deleted keys are inert.
    """

    __tablename__ = "rate_limits"

    subject: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # GCRA's theoretical arrival time in microseconds since the Unix epoch (integers, so SQLite and
    # PostgreSQL do the same arithmetic): the moment the caller's budget is full again.
    theoretical_arrival_us: Mapped[int] = mapped_column(sa.BigInteger)


class SteamAccount(Base):
    """A Steam login in the pool that DepotDownloader runs as.

    The password is encrypted (`encryption_key_id` names the key, for rotation) and never read back
    through the API. `session_owner`/`session_expire_time` are a lease: at most one DepotDownloader
    session per account across all server instances.
    """

    __tablename__ = "steam_accounts"

    id: Mapped[str] = _id()
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = _text(128)
    encrypted_password: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    encryption_key_id: Mapped[str | None] = mapped_column(sa.String(32))
    status: Mapped[SteamAccountStatus] = mapped_column(
        _enum(SteamAccountStatus), default=SteamAccountStatus.ACTIVE
    )
    status_reason: Mapped[str] = _text(256)
    disabled: Mapped[bool] = _flag()
    cooldown_end_time: Mapped[datetime | None]
    # App ids this account was seen to own, or to lack (a download failed for want of a license).
    owned_app_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    not_owned_app_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    has_remembered_login: Mapped[bool] = _flag()
    # DepotDownloader -loginid: Steam drops a session when another logs in with the same id.
    login_id: Mapped[int] = mapped_column(unique=True)
    downloads_run: Mapped[int] = _counter()
    downloads_failed: Mapped[int] = _counter()
    last_used_time: Mapped[datetime | None]
    session_owner: Mapped[str | None] = mapped_column(sa.String(64))
    session_expire_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = _create_time()
    update_time: Mapped[datetime] = _update_time()


class Batch(Base):
    """A group of downloads submitted together, e.g. every item of a workshop collection."""

    __tablename__ = "batches"
    __table_args__ = (
        sa.UniqueConstraint("idempotency_scope", "request_id"),
        sa.Index("ix_batches_owner_user_id_create_time", "owner_user_id", "create_time"),
    )

    id: Mapped[str] = _id()
    owner_user_id: Mapped[str | None] = _optional_ref("users.id")
    api_key_id: Mapped[str | None] = _optional_ref("api_keys.id", index=True)
    collection_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    title: Mapped[str] = _text(256)
    state: Mapped[BatchState] = mapped_column(_enum(BatchState), default=BatchState.ACTIVE)
    # request_id replay (AIP-155): the scope is the caller (user or key), so ids of callers never clash;
    # the fingerprint (sha256 of the canonical request) tells a different request under a used id.
    idempotency_scope: Mapped[str | None] = mapped_column(sa.String(64))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    # Set by CancelBatch: once every download is final the batch is CANCELLED (see core.batch_state).
    cancel_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = _create_time()
    end_time: Mapped[datetime | None]


class Download(Base):
    """One download job of one workshop item: queue entry, progress, outcome and archive.

    Claiming: the oldest QUEUED job of the highest priority whose `next_attempt_time` has come; the
    claimer writes its `lease_owner` and renews `lease_expire_time`. A job whose lease expired belongs
    to a dead instance and goes back to the queue.
    """

    __tablename__ = "downloads"
    __table_args__ = (
        sa.UniqueConstraint("idempotency_scope", "request_id"),
        sa.Index("ix_downloads_state_priority_create_time", "state", "priority", "create_time"),
        sa.Index("ix_downloads_owner_user_id_create_time", "owner_user_id", "create_time"),
        sa.Index("ix_downloads_api_key_id_state", "api_key_id", "state"),
        # A user's running jobs are counted per claim (their max_concurrent_downloads).
        sa.Index("ix_downloads_owner_user_id_state", "owner_user_id", "state"),
        sa.Index("ix_downloads_steam_account_id_state", "steam_account_id", "state"),
    )

    id: Mapped[str] = _id()
    workshop_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    app_id: Mapped[int]
    state: Mapped[DownloadState] = mapped_column(_enum(DownloadState), default=DownloadState.QUEUED)
    # Higher runs first.
    priority: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    owner_user_id: Mapped[str | None] = _optional_ref("users.id")
    api_key_id: Mapped[str | None] = _optional_ref("api_keys.id")
    batch_id: Mapped[str | None] = _optional_ref("batches.id", index=True)
    # The account that ran (or runs) the job, and the one the caller asked for, if any. The request is
    # kept as a plain id so a job remembers it even after the account is removed.
    steam_account_id: Mapped[str | None] = _optional_ref("steam_accounts.id")
    requested_steam_account_id: Mapped[str | None] = mapped_column(sa.String(26))

    # request_id replay: the same (scope, request_id) returns this job; a different request under the
    # same id is told apart by its fingerprint (sha256 of the canonical request).
    idempotency_scope: Mapped[str | None] = mapped_column(sa.String(64))
    request_id: Mapped[str | None] = mapped_column(sa.String(64))
    request_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    skip_cache: Mapped[bool] = _flag()
    # Served from an existing archive of the same item version instead of running DepotDownloader.
    from_cache: Mapped[bool] = _flag()

    # Item metadata from the Steam Web API.
    title: Mapped[str] = _text(256)
    item_file_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    item_update_time: Mapped[datetime | None]
    preview_url: Mapped[str] = _text(2048)
    content_handle: Mapped[int | None] = mapped_column(sa.BigInteger)

    # Progress. The phases and failure reasons are DepotDownloader's (steam.output), plus the server's own.
    phase: Mapped[Phase] = mapped_column(_enum(Phase), default=Phase.STARTING)
    percent: Mapped[float] = mapped_column(default=0.0, server_default=sa.text("0"))
    bytes_downloaded: Mapped[int] = _counter()
    bytes_total: Mapped[int] = _counter()
    current_file: Mapped[str] = _text(1024)

    # Failure: a machine-readable reason (the ErrorInfo reason) and a message for people.
    failure_reason: Mapped[Reason | None] = mapped_column(_enum(Reason, 48))
    failure_message: Mapped[str | None] = mapped_column(sa.Text)
    failure_retryable: Mapped[bool] = _flag()

    # Steam Guard prompt, while the job waits for a code.
    guard_kind: Mapped[GuardKind | None] = mapped_column(_enum(GuardKind))
    guard_email_hint: Mapped[str | None] = mapped_column(sa.String(64))
    guard_previous_rejected: Mapped[bool] = _flag()
    guard_expire_time: Mapped[datetime | None]

    # The archive; archive_path is relative to the storage root, never absolute.
    archive_state: Mapped[ArchiveState | None] = mapped_column(_enum(ArchiveState, 16))
    archive_path: Mapped[str | None] = mapped_column(sa.String(1024))
    archive_filename: Mapped[str | None] = mapped_column(sa.String(255))
    archive_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    archive_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    archive_file_count: Mapped[int | None]
    archive_content_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    archive_create_time: Mapped[datetime | None]
    archive_expire_time: Mapped[datetime | None]

    # Retries and limits.
    attempt: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    max_attempts: Mapped[int] = mapped_column(default=3, server_default=sa.text("3"))
    next_attempt_time: Mapped[datetime | None]
    max_runtime_seconds: Mapped[int | None]

    # Lease of the instance running the job.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_expire_time: Mapped[datetime | None] = mapped_column(index=True)
    cancel_requested: Mapped[bool] = _flag()
    # The sequence of the newest DownloadEvent; a stream resumes after the last one it saw.
    last_event_sequence: Mapped[int] = _counter()
    # The W3C traceparent of the call that queued the job, so that whichever instance runs it
    # continues that trace (wallwhale.tracing); NULL when tracing was off.
    trace_parent: Mapped[str | None] = mapped_column(sa.String(55))

    create_time: Mapped[datetime] = _create_time()
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    update_time: Mapped[datetime] = _update_time()

    # Write-only: a job can have thousands of events; query them with `events.select()`.
    events: WriteOnlyMapped[DownloadEvent] = relationship(
        passive_deletes=True, order_by="DownloadEvent.sequence"
    )


class DownloadEvent(Base):
    """One entry of a download's event log (state change, progress, log line, finish), for streams.

    `sequence` counts from 1 per download, so a client can resume a stream without gaps or repeats.
    """

    __tablename__ = "download_events"
    __table_args__ = (sa.UniqueConstraint("download_id", "sequence"),)

    # SQLite only autoincrements an INTEGER PRIMARY KEY; BIGINT elsewhere.
    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    download_id: Mapped[str] = mapped_column(sa.String(26), sa.ForeignKey("downloads.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(sa.BigInteger)
    event_time: Mapped[datetime] = mapped_column(default=utcnow)
    # 'state', 'progress', 'log' or 'finished'.
    kind: Mapped[str] = mapped_column(sa.String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class AuditEvent(Base):
    """A record of a security-relevant action: who did what to which resource, and how it ended.

    Rows are only ever inserted. `actor_kind` is 'user', 'api_key', 'system' or 'anonymous'; `resource`
    is a resource name such as 'downloads/01j...'; `details` never holds secrets.
    """

    __tablename__ = "audit_events"

    id: Mapped[str] = _id()
    event_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[str | None] = mapped_column(sa.String(26), index=True)
    actor_display: Mapped[str] = _text(320)
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    resource: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    # 'success', 'denied', 'failure'.
    outcome: Mapped[str] = mapped_column(sa.String(16), index=True)
    # The gRPC status code name, e.g. 'PERMISSION_DENIED'.
    status_code: Mapped[str] = _text(32)
    client_address: Mapped[str] = _text(64)
    user_agent: Mapped[str] = _text(256)
    request_id: Mapped[str] = _text(64)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The call's OpenTelemetry trace id (32 hex digits); empty when tracing was off.
    trace_id: Mapped[str] = _text(32)


class IdempotencyRecord(Base):
    """What the first call with a request_id made, answered again when the id comes again (AIP-155;
    core.idempotency). Downloads and batches keep their request_id on their own rows; this table
    serves RetryDownload, CreateUser, CreateApiKey and CreateSteamAccount. An expired row is deleted
    when its id comes again (nothing sweeps the others yet).
    """

    __tablename__ = "idempotency_records"

    scope: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # The RPC, e.g. 'CreateApiKey': the same id for another RPC is an error.
    method: Mapped[str] = mapped_column(sa.String(128))
    # sha256 hex of the canonical request, secrets left out: the same id with another request is an error.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    # The id of what the first call made (UTF-8; never a secret), and its status (0: OK).
    response: Mapped[bytes] = mapped_column(sa.LargeBinary)
    status_code: Mapped[int]
    create_time: Mapped[datetime] = _create_time()
    expire_time: Mapped[datetime] = mapped_column(index=True)


class ArchiveLink(Base):
    """A share link to the archive of a download or a batch: fetched with no credentials until
    `expire_time`, a revoke, or (single use) its one request. Only the token's SHA-256 is stored."""

    __tablename__ = "archive_links"

    id: Mapped[str] = _id()
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Exactly one is set; the link goes with what it names.
    download_id: Mapped[str | None] = mapped_column(
        sa.String(26), sa.ForeignKey("downloads.id", ondelete="CASCADE"), index=True
    )
    batch_id: Mapped[str | None] = mapped_column(
        sa.String(26), sa.ForeignKey("batches.id", ondelete="CASCADE"), index=True
    )
    expire_time: Mapped[datetime]
    single_use: Mapped[bool] = _flag()
    use_count: Mapped[int] = _counter()
    revoke_time: Mapped[datetime | None]
    last_use_time: Mapped[datetime | None]
    create_time: Mapped[datetime] = _create_time()
