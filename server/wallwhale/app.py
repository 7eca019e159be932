"""Assembles the gRPC server: services, interceptors, health, reflection, metrics; starts and stops it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from wallwhale import metrics, tracing
from wallwhale.config import Settings
from wallwhale.core import downloads as core_downloads
from wallwhale.core import reports, secretbox
from wallwhale.core.after_commit import Targets, install
from wallwhale.core.audit import AuditWriter
from wallwhale.core.catalog import Catalog
from wallwhale.core.events import EventHub
from wallwhale.core.identity import Principal, PrincipalCache
from wallwhale.core.key_usage import KeyUsage
from wallwhale.core.limits import Limits, RateLimit, RateLimiter
from wallwhale.core.login_sessions import LoginSessions
from wallwhale.core.login_throttle import LoginThrottle
from wallwhale.core.status import StatusProbe
from wallwhale.core.watches import Rules
from wallwhale.db import engine as db_engine
from wallwhale.db.notify import Channel, Listener, libpq_url
from wallwhale.db.types import utcnow
from wallwhale.log import get_logger
from wallwhale.network import IpRules, parse_networks
from wallwhale.private import private_directory
from wallwhale.rpc import access
from wallwhale.rpc.audit import AuditInterceptor
from wallwhale.rpc.authentication import AuthenticationInterceptor, NetworkRulesInterceptor
from wallwhale.rpc.calls import CallChain
from wallwhale.rpc.interceptors import ErrorMappingInterceptor, MetricsInterceptor, RequestContextInterceptor
from wallwhale.rpc.limits import RateLimitInterceptor, address_refusal
from wallwhale.rpc.servicers.admin import AdminServicer
from wallwhale.rpc.servicers.auth import AuthServicer
from wallwhale.rpc.servicers.download import DownloadOptions, DownloadServicer
from wallwhale.rpc.servicers.health import HealthServicer
from wallwhale.rpc.servicers.links import LinkOptions
from wallwhale.rpc.servicers.status import StatusServicer
from wallwhale.rpc.servicers.watch import WatchServicer
from wallwhale.rpc.servicers.webhooks import WebhookServicer
from wallwhale.rpc.streams_limit import StreamLimitInterceptor
from wallwhale.rpc.webhook_payloads import render as render_webhook
from wallwhale.steam.webapi import SteamWebApi
from wallwhale.storage import objects
from wallwhale.storage.archives import Storage
from wallwhale.v1 import (
    admin_pb2_grpc,
    auth_pb2_grpc,
    download_pb2_grpc,
    status_pb2_grpc,
    watch_pb2_grpc,
    webhook_pb2_grpc,
)
from wallwhale.worker.context import worker_settings
from wallwhale.worker.dispatcher import Dispatcher
from wallwhale.worker.watch_checker import CheckerSettings, WatchChecker
from wallwhale.worker.webhook_delivery import WebhookSender, sender_settings, target_rules

_log = get_logger("wallwhale.server")


class CannotListen(Exception):
    """The gRPC address is taken or not ours; the message names the setting that moves it."""


SERVICE_NAMES = tuple(service.full_name for service in access.SERVICES)
_HEALTH_NAMES = ("", *SERVICE_NAMES)
# SERVING from the start until a graceful stop, whatever the database does: the process and its
# event loop answer (a liveness probe; restarting instances does not bring a database back).
LIVENESS = "liveness"


def keyring_for(settings: Settings) -> secretbox.Keyring:
    """The keys that seal Steam passwords, as configured (a key file in the data dir in development)."""
    return secretbox.load_keyring(
        settings.secret_key.get_secret_value() if settings.secret_key else None,
        settings.secret_key_file,
        settings.data_dir / "secret.key",
    )


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def listener_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Mutual TLS for the gRPC listener when WALLWHALE_UPSTREAM_TLS_* are set: only clients with a
    certificate signed by the CA (Envoy) get in. None: plain h2c."""
    if not (
        settings.upstream_tls_ca_file and settings.upstream_tls_cert_file and settings.upstream_tls_key_file
    ):
        return None
    return grpc.ssl_server_credentials(
        [(settings.upstream_tls_key_file.read_bytes(), settings.upstream_tls_cert_file.read_bytes())],
        root_certificates=settings.upstream_tls_ca_file.read_bytes(),
        require_client_auth=True,
    )


def watch_rules(settings: Settings) -> Rules:
    return Rules(
        min_interval_seconds=settings.watch_min_interval_seconds,
        default_interval_seconds=settings.watch_default_interval_seconds,
        keep_versions=settings.watch_keep_versions,
        retry_base_seconds=settings.watch_retry_base_seconds,
        max_attempts=settings.max_attempts,
    )


def user_limit_defaults(settings: Settings) -> Limits:
    """Every user's limits unless an admin set their own (WALLWHALE_USER_*)."""
    return Limits(
        requests_per_minute=settings.user_requests_per_minute,
        burst=settings.user_burst,
        daily_download_quota=settings.user_daily_download_quota,
        monthly_download_quota=settings.user_monthly_download_quota,
        max_concurrent_downloads=settings.user_max_concurrent_downloads,
        max_runtime_seconds=settings.user_max_runtime_seconds,
    )


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class WallWhaleServer:
    """One server instance. `start()` binds and serves; `stop()` drains and releases everything."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.settings = settings
        self.instance_id = new_instance_id()
        private_directory(settings.data_dir)  # 0700 even when it was made looser before
        self.engine = engine or db_engine.create_engine(settings.resolved_database_url)
        self._owns_engine = engine is None
        self.sessions = db_engine.session_factory(self.engine)
        self.health = HealthServicer()
        self.port = 0
        self.socket_path: Path | None = None
        self.metrics_server: metrics.MetricsServer | None = None
        self._shared_figures: metrics.SharedFigures | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stopping = asyncio.Event()
        rules = access.load_rules()  # refuses to start when an RPC lacks its access rule
        readers = db_engine.read_only_sessions(self.engine)
        self.connections = db_engine.ConnectionRunner(self.engine)
        self.audit = AuditWriter(
            self.sessions,
            flush_interval=settings.audit_flush_interval_seconds,
            denial_window=settings.audit_denial_window_seconds,
        )
        self.key_usage = KeyUsage(self.sessions, settings.api_key_usage_flush_seconds)
        if settings.jwt_secret is None:
            _log.warning("no WALLWHALE_JWT_SECRET: login tokens are signed with a key of this process only")
        limiter = RateLimiter(self.connections, self.engine.dialect.name, clock)
        by_address = RateLimit.of(settings.anonymous_requests_per_minute, None)
        user_defaults = user_limit_defaults(settings)
        logins = LoginSessions(
            self.sessions,
            settings.jwt_secret.get_secret_value() if settings.jwt_secret else secrets.token_urlsafe(48),
            clock,
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            throttle=LoginThrottle(
                limiter,
                per_account=RateLimit.of(settings.login_failures_per_account_per_minute, None),
                per_address=RateLimit.of(settings.login_failures_per_address_per_minute, None),
            ),
            user_defaults=user_defaults,
        )

        # On PostgreSQL the cache serves only while this instance hears other instances' changes.
        self.principals = PrincipalCache(
            settings.api_key_cache_seconds,
            usable=lambda: self.listener is None or self.listener.connected.is_set(),
        )
        self.listener: Listener | None = None
        limiter = RateLimiter(self.connections, self.engine.dialect.name, clock)
        if settings.otlp_endpoint:
            tracing.configure(
                settings.otlp_endpoint, self.instance_id, sample_ratio=settings.otlp_sample_ratio
            )
        # Outermost when tracing is on: the call's log lines and audit row see its span.
        tracer = tracing.server_interceptor()
        self.server = aio.server(
            interceptors=[
                *([tracer] if tracer is not None else []),
                CallChain(
                    [
                        RequestContextInterceptor(),
                        MetricsInterceptor(),
                        NetworkRulesInterceptor(
                            IpRules(
                                allow=parse_networks(settings.ip_allow),
                                deny=parse_networks(settings.ip_deny),
                                trusted_proxies=parse_networks(settings.trusted_proxies),
                            ),
                            self.audit,
                        ),
                        # The key look-up only reads: on SQLite it must not take the write lock on every call.
                        AuthenticationInterceptor(
                            rules,
                            readers,
                            clock,
                            self.audit,
                            logins,
                            self.principals,
                            refusals=lambda address: address_refusal(limiter, by_address, address),
                            usage=self.key_usage,
                            user_defaults=user_defaults,
                        ),
                        RateLimitInterceptor(limiter, self.audit, address_limit=by_address),
                        StreamLimitInterceptor(
                            self.audit, settings.max_streams_per_caller, settings.max_streams_total
                        ),
                        AuditInterceptor(rules, self.audit),
                        ErrorMappingInterceptor(),
                    ]
                ),
            ],
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
                # Room for Envoy's copy of a REST body (x-wallwhale-rest-body, up to 32 KiB as
                # base64); gRPC's default of 8 KiB would refuse calls with larger bodies.
                ("grpc.max_metadata_size", 64 * 1024),
                ("grpc.absolute_max_metadata_size", 64 * 1024),
            ],
        )
        self.storage = Storage(settings.resolved_storage_dir, objects.from_settings(settings))
        probe = StatusProbe(
            self.engine,
            self.sessions,
            settings.resolved_depotdownloader_path,
            settings.resolved_storage_dir,
            self.storage.objects,
        )
        keyring = keyring_for(settings)
        self.hub = EventHub(readers)
        self.catalog = Catalog(
            SteamWebApi(settings.steam_web_api_url, timeout_seconds=settings.steam_web_api_timeout_seconds)
            if settings.steam_web_api_url
            else None,
            retry_seconds=settings.steam_web_api_retry_seconds,
        )
        self.worker = Dispatcher(
            self.sessions,
            keyring,
            worker_settings(settings, self.instance_id, self.storage),
            clock,
            self.catalog,
        )
        self.webhooks = WebhookSender(
            self.sessions, keyring, sender_settings(settings, self.instance_id), clock, render_webhook
        )
        # Every committed transaction's side effects reach these (core.after_commit).
        install(
            self.sessions,
            Targets(self.hub, self.worker.wake, self.principals, self.storage, self.webhooks.wake),
        )
        self.listener = self._listener(settings)
        downloads = DownloadServicer(
            self.sessions,
            readers,
            clock,
            self.worker,
            self.hub,
            self.storage,
            DownloadOptions(
                max_attempts=settings.max_attempts,
                heartbeat_seconds=settings.watch_heartbeat_seconds,
                cancel_wait_seconds=settings.process_stop_grace_seconds + 5,
                archive_url_seconds=settings.archive_url_seconds,
            ),
            self.catalog,
            self.connections,
            LinkOptions(
                max_ttl=timedelta(seconds=settings.archive_link_max_seconds),
                rate_limit=RateLimit.of(
                    settings.archive_link_requests_per_minute, settings.archive_link_burst
                ),
                limiter=limiter,
                url_seconds=settings.archive_url_seconds,
            ),
        )
        download_pb2_grpc.add_DownloadServiceServicer_to_server(downloads, self.server)
        admin = AdminServicer(
            self.sessions, clock, keyring, self.worker, settings.watch_heartbeat_seconds, user_defaults
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, self.server)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(logins, self.sessions), self.server)
        status_pb2_grpc.add_StatusServiceServicer_to_server(
            StatusServicer(probe, self.instance_id, self.catalog, settings.max_concurrent_downloads),
            self.server,
        )
        watching_rules = watch_rules(settings)

        async def limits_for(session: AsyncSession, principal: Principal) -> core_downloads.JobLimits:
            return await core_downloads.job_limits(session, principal, settings.max_attempts)

        watch_pb2_grpc.add_WatchServiceServicer_to_server(
            WatchServicer(self.sessions, readers, clock, self.catalog.api, watching_rules, limits_for),
            self.server,
        )
        self.watch_checker = WatchChecker(
            self.sessions,
            self.catalog.api,
            CheckerSettings(
                poll_seconds=settings.watch_poll_interval_seconds,
                claim_size=settings.watch_claim_size,
                lease_seconds=settings.watch_lease_seconds,
                rules=watching_rules,
            ),
            self.instance_id,
            clock,
            limits_for,
        )
        webhook_pb2_grpc.add_WebhookServiceServicer_to_server(
            WebhookServicer(self.sessions, readers, clock, keyring, target_rules(settings)), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )

    def _listener(self, settings: Settings) -> Listener | None:
        """PostgreSQL: hear other instances' events, new jobs and cancels (SQLite is one instance)."""
        if db_engine.backend_name(self.engine) != "postgresql":
            return None

        def events(payload: str) -> None:
            download_id, _, sequence = payload.partition(":")
            self.hub.announced(download_id, int(sequence or 0))

        def reconnected() -> None:
            self.principals.clear()  # a change announced while away went unheard
            self.hub.mark_all_behind()
            self.worker.wake()

        return Listener(
            libpq_url(settings.resolved_database_url),
            {
                Channel.EVENTS: events,
                Channel.QUEUE: lambda _: self.worker.wake(),
                Channel.CANCEL: self.worker.cancel_requested,
                Channel.GUARD: self.worker.guard_code_announced,
                Channel.CREDENTIALS: lambda _: self.principals.clear(),
            },
            reconnected,
        )

    async def start(self) -> None:
        if self.settings.grpc_port >= 0:
            self._listen_tcp()
        if self.settings.grpc_socket is not None:
            self._listen_unix(self.settings.grpc_socket)
        serving = await self._database_answers()
        await self._set_health(serving)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self._health_task = asyncio.create_task(self._watch_database(serving), name="health-monitor")
        self.audit.start()
        self.key_usage.start()
        if self.settings.metrics_port >= 0:
            self._serve_metrics()
        await self.server.start()
        if self.listener is not None:
            self.listener.start()
        self.worker.start()
        self.watch_checker.start()
        self.webhooks.start()
        _log.info(
            "serving",
            address=f"{self.settings.grpc_host}:{self.port}" if self.port else None,
            socket=str(self.socket_path) if self.socket_path else None,
            metrics_port=self.metrics_server.port if self.metrics_server else None,
            database=db_engine.backend_name(self.engine),
            instance_id=self.instance_id,
        )

    def _listen_tcp(self) -> None:
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        credentials = listener_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc says only "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise CannotListen(
                f"cannot listen on {address} (is another server using the port?);"
                " choose another with WALLWHALE_GRPC_PORT or --port"
            )

    def _listen_unix(self, path: Path) -> None:
        """The proxy's way in: calls over this socket are believed about their client's address,
        so only the service user may reach it (its folder 0700, the socket made under umask 077)."""
        path = path.resolve()
        if len(os.fsencode(path)) >= 108:  # sun_path's size on Linux
            raise CannotListen(
                f"WALLWHALE_GRPC_SOCKET {path} is too long for a Unix socket (107 bytes at most)"
            )
        private_directory(path.parent)
        if path.parent.stat().st_mode & 0o077 or path.parent.stat().st_uid != os.getuid():
            raise CannotListen(
                f"the folder of WALLWHALE_GRPC_SOCKET ({path.parent}) must be this user's alone (0700)"
            )
        if path.is_socket():
            if _socket_answers(path):
                raise CannotListen(f"another server listens on {path}; choose another WALLWHALE_GRPC_SOCKET")
            path.unlink()  # left by a server that did not stop cleanly
        saved = os.umask(0o177)
        try:
            bound = self.server.add_insecure_port(f"unix:{path}")
        except RuntimeError:
            bound = 0
        finally:
            os.umask(saved)
        if not bound:
            raise CannotListen(f"cannot listen on the Unix socket {path}")
        self.socket_path = path

    @property
    def upstream(self) -> str:
        """Where a proxy on this host reaches this server: its Unix socket if it has one."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        return f"{self.settings.grpc_host}:{self.port}"

    def _serve_metrics(self) -> None:
        loop, storage_root = asyncio.get_running_loop(), self.settings.resolved_storage_dir
        dd_path = self.settings.resolved_depotdownloader_path

        async def read_shared() -> metrics.Shared:
            async with self.sessions() as session:
                return await reports.shared_figures(session, utcnow())

        def shared() -> metrics.Shared:  # called in the scrape's thread: the query runs on our loop
            if _running_loop() is loop:  # collected on the loop itself: waiting for it would block it
                raise RuntimeError("the shared figures are not read on the event loop's thread")
            return asyncio.run_coroutine_threadsafe(read_shared(), loop).result(timeout=2)

        metrics.AUDIT_BACKLOG.set_function(lambda: self.audit.backlog)
        metrics.STORAGE_FREE.set_function(lambda: shutil.disk_usage(storage_root).free)
        metrics.STORAGE_CAPACITY.set_function(lambda: shutil.disk_usage(storage_root).total)
        metrics.DEPOTDOWNLOADER_AVAILABLE.set_function(lambda: _executable(dd_path))
        self._shared_figures = metrics.SharedFigures(shared)
        try:
            REGISTRY.register(self._shared_figures)
        except ValueError:  # another instance in this process reports them already
            self._shared_figures = None
        try:
            self.metrics_server = metrics.MetricsServer(
                self.settings.metrics_host, self.settings.metrics_port
            )
        except OSError as exc:
            raise CannotListen(
                f"cannot serve metrics on {self.settings.metrics_host}:{self.settings.metrics_port}"
                f" ({exc.strerror or exc}); choose another port with WALLWHALE_METRICS_PORT (-1: off)"
            ) from None

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health says NOT_SERVING, new calls are refused, running ones get `grace`."""
        if self._stopped.is_set():
            return
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        _log.info("stopping", grace_seconds=grace)
        await self.health.enter_graceful_shutdown()
        await self.watch_checker.stop()  # watches it claimed and did not check are due again
        await self.worker.stop()  # claims nothing more; running jobs go back to the queue
        await self.webhooks.stop()  # claims nothing more; attempts under way finish
        if self.listener is not None:
            await self.listener.stop()
        self._stopping.set()
        if self._health_task is not None:
            await self._health_task  # it sees the flag after its current check (bounded by the ping timeout)
        await self.server.stop(grace)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
        await self.audit.close()  # after the last call ended, so its record is stored too
        await self.key_usage.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self._shared_figures is not None:
            REGISTRY.unregister(self._shared_figures)
        await self.catalog.close()
        await self.connections.close()
        if self.settings.otlp_endpoint:
            await asyncio.to_thread(tracing.shutdown)  # sends the last spans
        if self._owns_engine:
            await self.engine.dispose()
        self._stopped.set()
        _log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _database_answers(self) -> bool:
        try:
            await db_engine.ping(self.engine)
        except Exception as exc:
            _log.warning(
                "database check failed", error=str(exc).splitlines()[0][:300] if str(exc) else repr(exc)
            )
            return False
        return True

    async def _set_health(self, serving: bool) -> None:
        metrics.DATABASE_UP.set(1 if serving else 0)
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in _HEALTH_NAMES:
            await self.health.set(name, status)

    async def _watch_database(self, serving: bool) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.health_check_interval_seconds)
            if self._stopping.is_set():
                return
            answers = await self._database_answers()
            if answers != serving:
                _log.info("health changed", serving=answers)
            serving = answers
            await self._set_health(answers)


def _executable(path: Path) -> bool:
    """A bare name is looked up on PATH, as the runner does."""
    found = shutil.which(str(path))
    return found is not None and os.access(found, os.X_OK)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
