"""Configuration: WALLWHALE_* environment variables over an optional TOML file, validated at start.

Precedence (highest first): environment variables, the file named by WALLWHALE_CONFIG_FILE
(or --config), the defaults below. In production mode every secret must be given explicitly:
there are no silent defaults that would make two installations share a key.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wallwhale.network import is_loopback, parse_networks

ENV_PREFIX = "WALLWHALE_"
CONFIG_FILE_ENV = f"{ENV_PREFIX}CONFIG_FILE"


# The file given to load_settings() explicitly; it wins over WALLWHALE_CONFIG_FILE.
_config_file: ContextVar[Path | None] = ContextVar("wallwhale_config_file", default=None)


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem, one per line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    mode: Mode = Mode.DEVELOPMENT
    # Where SQLite, archives and per-account DepotDownloader homes live unless set separately.
    data_dir: Path = Path("var")
    # Empty: a SQLite file in data_dir. PostgreSQL: postgresql://user@host:5432/db.
    database_url: str = ""

    grpc_host: str = "127.0.0.1"
    # 0 picks a free port (the bound port is logged); -1: no TCP listener (then grpc_socket).
    grpc_port: int = Field(default=50051, ge=-1, le=65535)
    # A Unix socket to serve gRPC on as well (or only, with grpc_port -1): the way for Envoy on
    # this host. Its folder must be private (0700, as the data directory): a call that comes over
    # it is from the proxy, so its x-forwarded-for is believed.
    grpc_socket: Path | None = None
    # Prometheus metrics over HTTP; -1 turns them off, 0 picks a free port.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=-1, le=65535)

    # OpenTelemetry traces go to this OTLP/gRPC collector (http://host:4317, or https:// for TLS);
    # empty: no traces, and nothing of tracing runs (wallwhale.tracing).
    otlp_endpoint: str = ""
    # The share of calls traced that arrive without a caller's sampling decision (a traceparent says
    # it itself): 1 traces every call, 0.1 one in ten (and the jobs they queue).
    otlp_sample_ratio: float = Field(default=1.0, ge=0, le=1)

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON

    # How long running RPCs may finish after SIGTERM before they are cancelled.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # How often the health service asks the database whether it answers.
    health_check_interval_seconds: float = Field(default=5.0, gt=0)
    # How often queued audit events are written (a graceful stop writes the rest).
    audit_flush_interval_seconds: float = Field(default=0.5, gt=0)
    # Identical denials within this many seconds of the first are stored as one row with a count.
    audit_denial_window_seconds: float = Field(default=60.0, ge=0)
    # How often API keys' use (total_requests, last_used_time) is written: one UPDATE per used key.
    api_key_usage_flush_seconds: float = Field(default=5.0, gt=0)
    # Apply pending migrations when `wallwhale serve` starts.
    migrate_on_start: bool = True

    storage_dir: Path | None = None
    # Where finished archives live: empty keeps them in storage_dir; s3://bucket/prefix uploads them
    # to S3-compatible object storage (every instance reads them there: no shared folder needed).
    # Credentials come from boto3's usual chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the
    # shared credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE), an instance role.
    storage_url: str = ""
    storage_s3_endpoint: str = ""  # empty: AWS S3; MinIO, R2, Ceph...: their URL
    storage_s3_region: str = ""
    storage_s3_path_style: bool = False  # bucket in the path (MinIO-like servers), not the host name
    # How long a presigned archive URL (GetArchiveUrl) works.
    archive_url_seconds: int = Field(default=300, ge=10, le=7 * 86400)
    # Unset: the copy `wallwhale depotdownloader install` put in data_dir, else DepotDownloader on PATH.
    depotdownloader_path: Path | None = None
    # Where `wallwhale depotdownloader install` downloads releases from (a mirror keeps the layout
    # <url>/DepotDownloader_<version>/<asset>.zip of GitHub's release downloads).
    depotdownloader_url: str = "https://github.com/SteamRE/DepotDownloader/releases/download"
    # Confines DepotDownloader to its item folder and its account's home (steam/sandbox.py):
    # "bwrap" (bubblewrap) or "none". Unset: bwrap where it can make a sandbox, else none, loudly.
    depotdownloader_sandbox: Literal["bwrap", "none"] | None = None
    # Folders DepotDownloader may write besides those (comma-separated absolute paths); the data
    # and storage directories stay hidden even inside them.
    depotdownloader_writable: Annotated[list[Path], NoDecode] = []
    # Steam's public Web API (item details before a job is queued, collections of a batch); empty
    # turns it off (then every id of a batch is taken for an item).
    steam_web_api_url: str = "https://api.steampowered.com"
    steam_web_api_timeout_seconds: float = Field(default=10.0, gt=0)
    # After a failed lookup, jobs are queued without asking for this long (metadata comes later).
    steam_web_api_retry_seconds: float = Field(default=60.0, ge=0)

    # The download worker. Concurrency is per instance; per key and per Steam account limits hold
    # across instances (they are counted in the database).
    max_concurrent_downloads: int = Field(default=4, ge=0, le=256)
    # A running job's lease: renewed every third of it; a dead instance's jobs return after it.
    job_lease_seconds: float = Field(default=30.0, ge=1)
    queue_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Automatic attempts per download (transient failures are retried with back-off).
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_base_seconds: float = Field(default=15.0, ge=0)
    retry_max_seconds: float = Field(default=900.0, ge=0)
    # Limits of one DepotDownloader run: overall (unless the API key sets one), without any output,
    # and waiting for a person to answer Steam Guard.
    download_timeout_seconds: float = Field(default=3600.0, gt=0)
    inactivity_timeout_seconds: float = Field(default=300.0, gt=0)
    steam_guard_timeout_seconds: float = Field(default=600.0, gt=0)
    # How long a QR login (AdminService.StartQrLogin) waits for the code to be scanned; Steam may
    # expire it sooner (DepotDownloader then reports the poll result, e.g. Expired).
    qr_login_timeout_seconds: float = Field(default=300.0, gt=0)
    # SIGTERM, then SIGKILL after this long.
    process_stop_grace_seconds: float = Field(default=10.0, ge=0)
    # How long an account rests after Steam throttled its logins.
    steam_throttle_cooldown_seconds: float = Field(default=6 * 3600.0, ge=0)
    # Consecutive chunk errors after which a run is given up (DepotDownloader retries forever).
    chunk_error_limit: int = Field(default=50, ge=1)
    # Archive downloads and watches (FetchArchive, FetchBatchArchive, WatchDownload, WatchBatch) open
    # at once on one instance: per API key or person, and in total; more are RESOURCE_EXHAUSTED.
    max_streams_per_caller: int = Field(default=16, ge=1)
    max_streams_total: int = Field(default=1024, ge=1)
    # Heartbeats on quiet WatchDownload streams, so that idle proxies keep them open.
    watch_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Retention: archives older than this (0 keeps them), and a disk budget for all of them (0: none).
    archive_max_age_hours: float = Field(default=0.0, ge=0)
    archive_disk_budget_mb: int = Field(default=0, ge=0)
    retention_interval_seconds: float = Field(default=300.0, gt=0)
    # Audit events older than this many days are deleted by the same loop (0 keeps them all).
    audit_retention_days: float = Field(default=0.0, ge=0)
    # Watches (core.watches): the shortest interval a watch may ask for, and the interval when it
    # asks for none; archives kept per watched item (older versions' archives are removed); how often
    # an instance looks for due watches, how many it checks at once, how long its claim lasts, and
    # the first wait after Steam failed (doubling per failure, up to the watch's interval).
    watch_min_interval_seconds: float = Field(default=300.0, gt=0)
    watch_default_interval_seconds: float = Field(default=900.0, gt=0)
    watch_keep_versions: int = Field(default=3, ge=1)
    watch_poll_interval_seconds: float = Field(default=10.0, gt=0)
    watch_claim_size: int = Field(default=1000, ge=1, le=10000)
    watch_lease_seconds: float = Field(default=120.0, ge=1)
    watch_retry_base_seconds: float = Field(default=60.0, gt=0)

    # IP rules (CIDRs or addresses, comma-separated): deny wins; with an allow list, only it passes.
    ip_allow: Annotated[list[str], NoDecode] = []
    ip_deny: Annotated[list[str], NoDecode] = []
    # Peers whose x-forwarded-for is believed over TCP (e.g. a proxy on another host). A loopback
    # address needs mutual TLS (upstream_tls_*): any local user can bind one. Envoy on this host
    # uses grpc_socket instead, which needs no entry here.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    # Signs access tokens (HS256). Required in production; in development a random key per process
    # (tokens then die with the process and are not shared between instances).
    jwt_secret: SecretStr | None = None
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=300)
    # The rate limit of a person signed in with an access token, per user over all their sessions
    # (API keys carry their own limits). Unset: people are not limited.
    user_requests_per_minute: int | None = Field(default=None, ge=0)
    user_burst: int | None = Field(default=None, ge=0)
    # Every user's other limits, over all their API keys and sessions, unless an admin set the
    # user's own (AdminService UpdateUser `limits`); a key's limits are never looser than its
    # owner's. Unset: no limit of that kind.
    user_daily_download_quota: int | None = Field(default=None, ge=0)
    user_monthly_download_quota: int | None = Field(default=None, ge=0)
    user_max_concurrent_downloads: int | None = Field(default=None, ge=0)
    user_max_runtime_seconds: int | None = Field(default=None, ge=1)
    # Share links to archives: the longest lifetime a link may be given, and each link's own rate
    # limit (fetches per minute, burst); a link is passed around, so it gets a budget of its own.
    archive_link_max_seconds: int = Field(default=86400, ge=60)
    archive_link_requests_per_minute: int | None = Field(default=60, ge=0)
    archive_link_burst: int | None = Field(default=20, ge=0)
    # Calls without credentials (Login, Refresh, Logout) and calls refused by authentication, per
    # client address and minute (bursts as large); health and reflection are not counted. Unset: none.
    anonymous_requests_per_minute: int | None = Field(default=300, ge=0)
    # Failed logins allowed per minute (and at once) for one e-mail and from one client address;
    # past that, logins for it or from it are refused until the budget refills (0: none pass).
    login_failures_per_account_per_minute: int = Field(default=10, ge=0)
    login_failures_per_address_per_minute: int = Field(default=30, ge=0)
    # An API key that passed its check is trusted this long without reading it again (0: read at
    # every call). Changes made through the API reach every instance at once; this bounds what a
    # change made behind the server's back (or a lost notification) leaves in effect.
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    # Mutual TLS on the gRPC listener (Envoy -> instance): this instance's certificate and key
    # (PEM), and the CA whose client certificates it requires. All three or none; with them the
    # listener accepts only TLS clients that show a certificate signed by the CA.
    upstream_tls_ca_file: Path | None = None
    upstream_tls_cert_file: Path | None = None
    upstream_tls_key_file: Path | None = None
    # Encrypts Steam passwords at rest: base64 of 32 bytes, or a file holding it.
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    # Webhooks (core.webhooks, worker.webhook_delivery). Endpoints must be https and reach public
    # addresses; an admin may allow http for some hosts and private networks (CIDRs, comma-separated),
    # e.g. a receiver on the same machine: WEBHOOK_HTTP_HOSTS=127.0.0.1 WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32.
    webhook_http_hosts: Annotated[list[str], NoDecode] = []
    webhook_allowed_networks: Annotated[list[str], NoDecode] = []
    # One attempt's limit (connect, send, answer); the answer's body is read up to 4 KiB at most.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # The waits before each retry (comma-separated seconds); attempts = 1 + their number. The default
    # spreads 8 attempts over about 27.5 hours: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    webhook_retry_schedule_seconds: Annotated[list[float], NoDecode] = [
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    ]
    # An endpoint is disabled after this many failed attempts in a row spanning at least this long.
    webhook_disable_after_failures: int = Field(default=20, ge=1)
    webhook_disable_after_seconds: float = Field(default=3 * 86400, ge=0)
    # Deliveries sent at once by one instance (to different endpoints), and how often it looks.
    # Finished deliveries (succeeded or given up) are deleted after this many days, checked every
    # WALLWHALE_RETENTION_INTERVAL_SECONDS (0 keeps them all).
    webhook_delivery_retention_days: float = Field(default=30.0, ge=0)
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    webhook_poll_interval_seconds: float = Field(default=2.0, gt=0)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("storage_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment):
            raise ValueError("must be empty (the storage directory) or look like s3://bucket/prefix")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _collector_url(cls, value: str) -> str:
        # Without a scheme the exporter would quietly try TLS: say which one is meant.
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be http://HOST:PORT (plain h2c) or https://HOST:PORT (TLS), or empty")
        return value

    @field_validator("ip_allow", "ip_deny", "trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        entries = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        entries = [str(entry).strip() for entry in entries if str(entry).strip()]
        parse_networks(entries)  # raises ValueError naming the bad entry
        return entries

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _allowed_networks(cls, value: object) -> list[str]:
        return cls._networks(value)

    @field_validator("webhook_http_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> list[str]:
        entries = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        return [str(entry).strip().lower() for entry in entries if str(entry).strip()]

    @field_validator("webhook_retry_schedule_seconds", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> list[float]:
        entries = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        waits = [float(str(entry).strip()) for entry in entries if str(entry).strip()]
        if any(wait < 0 for wait in waits):
            raise ValueError("waits must not be negative")
        return waits

    @field_validator("depotdownloader_writable", mode="before")
    @classmethod
    def _absolute_folders(cls, value: object) -> list[Path]:
        entries = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        folders = [Path(str(entry).strip()) for entry in entries if str(entry).strip()]
        for folder in folders:
            if not folder.is_absolute():
                raise ValueError(f"{folder} is not an absolute path")
        return folders

    @field_validator("jwt_secret")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _watch_interval_floor(self) -> Settings:
        if self.watch_default_interval_seconds < self.watch_min_interval_seconds:
            raise ValueError(
                f"{ENV_PREFIX}WATCH_DEFAULT_INTERVAL_SECONDS is below {ENV_PREFIX}WATCH_MIN_INTERVAL_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _upstream_tls_complete(self) -> Settings:
        files = {
            f"{ENV_PREFIX}UPSTREAM_TLS_CA_FILE": self.upstream_tls_ca_file,
            f"{ENV_PREFIX}UPSTREAM_TLS_CERT_FILE": self.upstream_tls_cert_file,
            f"{ENV_PREFIX}UPSTREAM_TLS_KEY_FILE": self.upstream_tls_key_file,
        }
        given = [name for name, path in files.items() if path is not None]
        if given and len(given) < len(files):
            missing = [name for name in files if name not in given]
            raise ValueError(f"{', '.join(given)} also need {', '.join(missing)}")
        unreadable = [f"{name}={path}" for name, path in files.items() if path and not path.is_file()]
        if unreadable:
            raise ValueError("no such file: " + ", ".join(unreadable))
        return self

    @property
    def upstream_tls(self) -> bool:
        return self.upstream_tls_ca_file is not None

    @model_validator(mode="after")
    def _forwarded_for_only_over_private_channels(self) -> Settings:
        if self.grpc_port == -1 and self.grpc_socket is None:
            raise ValueError(f"{ENV_PREFIX}GRPC_PORT=-1 (no TCP listener) needs {ENV_PREFIX}GRPC_SOCKET")
        local = [entry for entry in self.trusted_proxies if is_loopback(parse_networks([entry])[0])]
        if local and not self.upstream_tls:
            raise ValueError(
                f"{ENV_PREFIX}TRUSTED_PROXIES: {', '.join(local)} is a loopback address any local user"
                " can connect from and then forge x-forwarded-for; let the proxy on this host connect"
                f" over {ENV_PREFIX}GRPC_SOCKET (trusted with no entry here) or over mutual TLS"
                f" ({ENV_PREFIX}UPSTREAM_TLS_*)"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.mode is Mode.PRODUCTION:
            missing = []
            if self.jwt_secret is None:
                missing.append(f"{ENV_PREFIX}JWT_SECRET")
            if self.secret_key is None and self.secret_key_file is None:
                missing.append(f"{ENV_PREFIX}SECRET_KEY or {ENV_PREFIX}SECRET_KEY_FILE")
            if missing:
                raise ValueError("production mode needs " + ", ".join(missing))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get() or os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL (driver included) of the configured database."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'wallwhale.sqlite3').resolve()}"
        return to_async_url(url)

    @property
    def resolved_depotdownloader_path(self) -> Path:
        """The explicit setting, else the installed copy, else `DepotDownloader` looked up on PATH."""
        if self.depotdownloader_path is not None:
            return self.depotdownloader_path
        return installed_depotdownloader(self.data_dir) or Path("DepotDownloader")

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()


# `wallwhale depotdownloader install` unpacks each version under <data_dir>/depotdownloader/<version>/
# and names the one in use in this file (written last, so a half-done install is never used).
DEPOTDOWNLOADER_DIR = "depotdownloader"
DEPOTDOWNLOADER_CURRENT = "current"


def installed_depotdownloader(data_dir: Path) -> Path | None:
    """The executable the install command made current, if it is still there."""
    root = (data_dir / DEPOTDOWNLOADER_DIR).resolve()
    try:
        version = (root / DEPOTDOWNLOADER_CURRENT).read_text().strip()
    except OSError:
        return None
    if not version or "/" in version or version.startswith("."):
        return None
    for name in ("DepotDownloader", "DepotDownloader.exe"):
        if (candidate := root / version / name).is_file():
            return candidate
    return None


def to_async_url(url: str) -> str:
    """Adds the async driver to a plain database URL (sqlite -> aiosqlite, postgresql -> psycopg)."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Reads and validates the configuration; raises ConfigError naming every bad setting."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    if config_file is None and (named := os.environ.get(CONFIG_FILE_ENV)) and not Path(named).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}={named}: no such file")
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _config_file.reset(token)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "configuration"
        # The input is left out on purpose: it may be a secret.
        lines.append(f"{name}: {error['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
