"""The `wallwhale` command: serve, migrate, bootstrap, keys, certs.

Exit codes: 0 success, 1 a runtime failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import signal
import sys
from pathlib import Path

from wallwhale import __version__, log
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
    try:
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "keys":
            return _keys(settings, args.keys_command)
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
    asyncio.run(_run_server(settings, port_file))
    return EXIT_OK


def _migrate_in_child(settings: Settings) -> None:
    log.configure(settings.log_level, settings.log_format)
    sys.exit(_migrate(settings))


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
