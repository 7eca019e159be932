"""The `wallwhale` command: serve, health, migrate, bootstrap, keys, admin, depotdownloader, doctor, certs.

Exit codes: 0 success, 1 a runtime failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import gc
import json
import multiprocessing
import signal
import socket
import sys
from pathlib import Path

from wallwhale import __version__, log, private
from wallwhale.config import ConfigError, Settings, load_settings
from wallwhale.errors import WallWhaleError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallwhale", description="Steam Workshop downloads as a gRPC service."
    )
    parser.add_argument("--version", action="version", version=f"wallwhale {__version__}")
    parser.add_argument("--config", type=Path, help="TOML file with settings (environment variables win)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC server (applies migrations first)")
    serve.add_argument("--host", help="address to listen on (WALLWHALE_GRPC_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on, 0 for any (WALLWHALE_GRPC_PORT)")
    serve.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")

    health = commands.add_parser(
        "health", help="ask this instance's gRPC health service (exit 0 only when SERVING); for probes"
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.add_argument(
        "--service",
        default="",
        help="'' (default): the instance and its database answer; 'liveness': the process answers",
    )
    commands.add_parser("migrate", help="apply database migrations up to the newest")

    bootstrap = commands.add_parser(
        "bootstrap", help="create the first admin user and API key on an empty database (printed once)"
    )
    bootstrap.add_argument(
        "--email", default="admin@localhost", help="the admin's e-mail (default %(default)s)"
    )
    bootstrap.add_argument("--json", action="store_true", help="print the result as JSON")
    bootstrap.add_argument(
        "--if-empty", action="store_true", help="exit 0 without creating anything when users exist already"
    )
    keys = commands.add_parser("keys", help="the keys that encrypt Steam passwords at rest")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_commands.add_parser(
        "generate", help="print a new key (base64) for WALLWHALE_SECRET_KEY or the key file"
    )
    keys_commands.add_parser(
        "rotate", help="re-encrypt every stored password with the first (current) key of the keyring"
    )
    admin = commands.add_parser(
        "admin", help="recovery on the database itself, for whoever runs the server (audited)"
    )
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    issue = admin_commands.add_parser(
        "issue-key", help="a new admin API key for an existing admin (printed once)"
    )
    reset = admin_commands.add_parser(
        "reset-password", help="a generated password for a user (printed once); their login sessions end"
    )
    for recovery_command in (issue, reset):
        recovery_command.add_argument("--email", required=True, help="the user's e-mail")
        recovery_command.add_argument("--json", action="store_true", help="print the result as JSON")
    doctor = commands.add_parser(
        "doctor", help="what downloads need, each with its fix (exit 0 only when a download can run)"
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    downloader = commands.add_parser("depotdownloader", help="the DepotDownloader binary downloads run")
    downloader_commands = downloader.add_subparsers(
        dest="downloader_command", required=True, metavar="ACTION"
    )
    install = downloader_commands.add_parser(
        "install", help="download, verify and unpack a release under the data directory"
    )
    install.add_argument("--version", dest="dd_version", help="release number (default: the pinned one)")
    install.add_argument("--url", help="where releases are downloaded from (WALLWHALE_DEPOTDOWNLOADER_URL)")
    install.add_argument(
        "--sha256", help="the published sha256 of the platform's zip (required where none is pinned)"
    )
    certs = commands.add_parser("certs", help="TLS certificates")
    certs_commands = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    dev = certs_commands.add_parser(
        "dev", help="make a local CA and certificates for development, and print how to trust the CA"
    )
    dev.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name or address the certificates are for (repeatable; localhost is always in)",
    )
    dev.add_argument("--out", type=Path, help="folder for the files (default: DATA_DIR/certs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {}
    if args.command == "serve":
        overrides = {k: v for k, v in (("grpc_host", args.host), ("grpc_port", args.port)) if v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"wallwhale: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.configure(settings.log_level, settings.log_format)
    # Whatever this command creates (database, keys, archives, certificates) is this user's alone.
    private.restrict_process()
    try:
        if args.command == "health":
            return _health(settings, args.service, args.timeout)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "keys":
            return _keys(settings, args.keys_command)
        if args.command == "admin":
            return asyncio.run(_recover(settings, args.admin_command, args.email, as_json=args.json))
        if args.command == "doctor":
            return asyncio.run(_doctor(settings, as_json=args.json))
        if args.command == "depotdownloader":
            return _install_depotdownloader(settings, args.dd_version, args.url, args.sha256)
        if args.command == "certs":
            return _certs_dev(args.out or settings.data_dir / "certs", args.host)
        if args.command == "bootstrap":
            return asyncio.run(_bootstrap(settings, args.email, as_json=args.json, if_empty=args.if_empty))
        return _serve(settings, args.port_file)
    except WallWhaleError as exc:
        print(f"wallwhale: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE


def _migrate(settings: Settings) -> int:
    from wallwhale.db import migrate

    migrate.upgrade(settings.resolved_database_url)
    log.get_logger("wallwhale.cli").info(
        "database migrated", revision=migrate.current_revision(settings.resolved_database_url)
    )
    return EXIT_OK


async def _bootstrap(settings: Settings, email: str, *, as_json: bool, if_empty: bool) -> int:
    from wallwhale.core.bootstrap import bootstrap_admin, has_users
    from wallwhale.db import engine as db_engine
    from wallwhale.db import migrate

    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    engine = db_engine.create_engine(settings.resolved_database_url)
    sessions = db_engine.session_factory(engine)
    try:
        if if_empty:
            async with sessions() as session:
                if await has_users(session):
                    print("users exist already; nothing created", file=sys.stderr)
                    return EXIT_OK
        result = await bootstrap_admin(sessions, email)
    finally:
        await engine.dispose()
    if as_json:
        print(
            json.dumps(
                {
                    "user_id": result.user_id,
                    "email": result.email,
                    "password": result.password,
                    "api_key": result.api_key,
                    "api_key_id": result.api_key_id,
                }
            )
        )
    else:
        print(
            "Created the first admin. This is the only time these secrets are shown: store them now.\n"
            f"  e-mail:    {result.email}\n"
            f"  password:  {result.password}\n"
            f"  API key:   {result.api_key}   (send as the x-api-key header)"
        )
    return EXIT_OK


async def _recover(settings: Settings, action: str, email: str, *, as_json: bool) -> int:
    from wallwhale.core import recovery
    from wallwhale.db import engine as db_engine

    engine = db_engine.create_engine(settings.resolved_database_url)
    try:
        sessions = db_engine.session_factory(engine)
        if action == "issue-key":
            key = await recovery.issue_admin_key(sessions, email)
            result = {
                "user_id": key.user_id,
                "email": key.email,
                "api_key": key.api_key,
                "api_key_id": key.api_key_id,
            }
            text = f"New admin API key for {key.email} (shown once): {key.api_key}   (send as x-api-key)"
        else:
            new = await recovery.reset_password(sessions, email)
            result = {"user_id": new.user_id, "email": new.email, "password": new.password}
            text = (
                f"New password for {new.email} (shown once): {new.password}\nTheir login sessions were ended."
            )
    finally:
        await engine.dispose()
    print(json.dumps(result) if as_json else text)
    return EXIT_OK


async def _doctor(settings: Settings, *, as_json: bool) -> int:
    from wallwhale.core import status
    from wallwhale.db import engine as db_engine
    from wallwhale.db import migrate
    from wallwhale.steam.webapi import SteamWebApi
    from wallwhale.storage import objects

    engine = db_engine.create_engine(settings.resolved_database_url)
    downloader = settings.resolved_depotdownloader_path
    probe = status.StatusProbe(
        engine,
        db_engine.session_factory(engine),
        downloader,
        settings.resolved_storage_dir,
        objects.from_settings(settings),
    )
    api = SteamWebApi(settings.steam_web_api_url, timeout_seconds=5.0) if settings.steam_web_api_url else None
    try:
        report, web_api = await asyncio.gather(probe.report(), api.ping() if api else _nothing())
    finally:
        await engine.dispose()
        if api is not None:
            await api.aclose()
    found = status.checks(report, web_api, migrate.head_revision(), downloader)
    ready = status.can_download(found)
    if as_json:
        print(json.dumps({"ready": ready, "checks": [dataclasses.asdict(check) for check in found]}))
    else:
        for check in found:
            mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
            print(
                f"{mark} {check.name}: {check.detail}" + (f"\n       fix: {check.fix}" if check.fix else "")
            )
        print(
            "ready: a download can run"
            if ready
            else "not ready: downloads fail until the FAIL lines are fixed"
        )
    return EXIT_OK if ready else EXIT_FAILURE


async def _nothing() -> None:
    return None


def _install_depotdownloader(
    settings: Settings, version: str | None, url: str | None, sha256: str | None
) -> int:
    from wallwhale.steam import install

    try:
        installed = install.install(
            settings.data_dir,
            version=version or install.PINNED_VERSION,
            base_url=url or settings.depotdownloader_url,
            sha256=sha256,
        )
    except install.InstallError as exc:
        print(f"wallwhale: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(install.describe(installed))
    if settings.depotdownloader_path is not None:
        print(
            f"note: WALLWHALE_DEPOTDOWNLOADER_PATH={settings.depotdownloader_path} is set and wins;"
            " unset it to use this copy"
        )
    return EXIT_OK


def _certs_dev(directory: Path, hosts: list[str]) -> int:
    from wallwhale import certs

    print(certs.instructions(certs.make_dev_certificates(directory, hosts)))
    return EXIT_OK


def _keys(settings: Settings, action: str) -> int:
    from wallwhale.core import secretbox

    if action == "generate":
        print(secretbox.generate_key())
        return EXIT_OK
    try:
        count = asyncio.run(_rotate(settings))
    except secretbox.KeyringError as exc:
        print(f"wallwhale: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"re-encrypted {count} Steam password(s) with the current key")
    return EXIT_OK


async def _rotate(settings: Settings) -> int:
    from wallwhale.app import keyring_for
    from wallwhale.core import steam_accounts
    from wallwhale.db import engine as db_engine

    keyring = keyring_for(settings)
    engine = db_engine.create_engine(settings.resolved_database_url)
    try:
        async with db_engine.session_factory(engine).begin() as session:
            return await steam_accounts.rotate_passwords(session, keyring)
    finally:
        await engine.dispose()


def _serve(settings: Settings, port_file: Path | None) -> int:
    if (taken := _port_taken(settings.grpc_host, settings.grpc_port)) is not None:
        # Before migrating and before gRPC's own bind, which logs a line of its own.
        print(
            f"wallwhale: {taken} is in use (another server?); choose another port with"
            " WALLWHALE_GRPC_PORT or --port",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if settings.migrate_on_start:
        # In a child process: Alembic (about 11 MB) is needed once, not for the server's lifetime.
        child = multiprocessing.get_context("spawn").Process(
            target=_migrate_in_child, args=(settings,), name="wallwhale-migrate"
        )
        child.start()
        child.join()
        if child.exitcode != EXIT_OK:
            print("wallwhale: the database migration failed; not serving", file=sys.stderr)
            return EXIT_FAILURE
    from wallwhale.app import CannotListen

    try:
        asyncio.run(_run_server(settings, port_file))
    except CannotListen as exc:
        print(f"wallwhale: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _port_taken(host: str, port: int) -> str | None:
    """The address, when something listens on it already; None when it is free or cannot be told."""
    if port <= 0:  # a free port, or no TCP listener
        return None
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError:
        return None  # gRPC reports a bad host itself
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"{host}:{port}"
    return None


def _migrate_in_child(settings: Settings) -> None:
    log.configure(settings.log_level, settings.log_format)
    sys.exit(_migrate(settings))


def _health(settings: Settings, service: str, timeout: float) -> int:
    """grpc.health.v1.Health/Check on the configured listener (service "": as Envoy asks it)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    host = settings.grpc_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listener answers on loopback
        host = "127.0.0.1"
    target = f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"
    if settings.upstream_tls:
        # Only a client certificate from the listener's CA gets in (Envoy's); this process has none.
        print(
            "wallwhale: health cannot ask a listener with WALLWHALE_UPSTREAM_TLS_* (it takes only "
            "Envoy's client certificate): use Envoy's health checks",
            file=sys.stderr,
        )
        return EXIT_USAGE
    channel = grpc.insecure_channel(target)
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            print(
                f"wallwhale: health of {target}: {exc.code().name} {exc.details() or ''}".rstrip(),
                file=sys.stderr,
            )
            return EXIT_FAILURE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{target}: {status}")
    return EXIT_OK if answer.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE


async def _run_server(settings: Settings, port_file: Path | None) -> None:
    from wallwhale.app import WallWhaleServer

    server = WallWhaleServer(settings)
    await server.start()
    # The cyclic collector's full passes walk every live object and stalled every watch stream
    # (figures: docs/benchmarks.md, "Progress latency and memory"). What start-up made (modules, mappers,
    # descriptors: most of the heap) lives as long as the process, so it is taken out of those
    # passes, and the youngest generation is collected less often, which makes the full passes rarer.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    if port_file is not None:
        await asyncio.to_thread(port_file.write_text, f"{server.port}\n")
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()

    def request_stop(signame: str) -> None:
        if not stopping:
            log.get_logger("wallwhale.cli").info("signal received", signal=signame)
            stopping.add(asyncio.create_task(server.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    await server.wait_stopped()


if __name__ == "__main__":
    sys.exit(main())
