"""Where the server is and who the caller is: flags over the environment over the config file."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wallwhale_client.aio import AsyncClient, Tls
from wallwhale_client.cli.exits import UsageError

# Envoy as scripts/run.sh starts it: the front door (the servers behind it listen on Unix sockets).
DEFAULT_ADDRESS = "127.0.0.1:8080"
CONFIG_KEYS = {"address", "api_key", "email", "password", "tls", "ca_cert", "timeout"}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The flags of the settings (each also WALLWHALE_<KEY> and a key of the config file)."""
    parser.add_argument("--address", help=f"host:port of the server or Envoy (default {DEFAULT_ADDRESS})")
    parser.add_argument("--api-key", dest="api_key", help="an API key (ww_...)")
    parser.add_argument("--email", help="log in as this person (with --password or WALLWHALE_PASSWORD)")
    parser.add_argument("--password", help=argparse.SUPPRESS)  # visible in `ps`: prefer the environment
    parser.add_argument("--tls", action="store_true", default=None, help="connect with TLS")
    parser.add_argument("--ca-cert", dest="ca_cert", help="PEM file of the CA to trust (implies --tls)")
    parser.add_argument("--timeout", type=float, help="seconds for each call (default 30)")
    parser.add_argument("--config", help="TOML file with address, api_key, tls, ... (see above)")


@dataclass(frozen=True)
class Settings:
    address: str
    api_key: str | None
    email: str | None
    password: str | None
    tls: bool
    ca_cert: Path | None
    timeout: float


def _config_file(args: argparse.Namespace, environ: dict[str, str]) -> Path | None:
    if args.config:
        return Path(args.config)
    if environ.get("WALLWHALE_CLIENT_CONFIG"):
        return Path(environ["WALLWHALE_CLIENT_CONFIG"])
    default = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "wallwhale" / "client.toml"
    return default if default.exists() else None


def load_settings(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Flags over environment over the config file."""
    values: dict[str, Any] = {}
    path = _config_file(args, environ)
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise UsageError(f"config file {path}: {error}") from None
        if unknown := set(values) - CONFIG_KEYS:
            raise UsageError(f"config file {path}: unknown keys {sorted(unknown)}")
    for key in CONFIG_KEYS:
        if value := environ.get(f"WALLWHALE_{key.upper()}"):  # set but empty counts as unset
            values[key] = value
        if (flag := getattr(args, key, None)) is not None:
            values[key] = flag
    tls = values.get("tls", False)
    try:
        return Settings(
            address=str(values.get("address") or DEFAULT_ADDRESS),
            api_key=values.get("api_key") or None,
            email=values.get("email") or None,
            password=values.get("password") or None,
            tls=tls if isinstance(tls, bool) else str(tls).lower() in ("1", "true", "yes"),
            ca_cert=Path(values["ca_cert"]) if values.get("ca_cert") else None,
            timeout=float(values.get("timeout", 30.0)),
        )
    except ValueError as error:
        raise UsageError(f"bad setting: {error}") from None


def make_client(settings: Settings) -> AsyncClient:
    if settings.email and not settings.password:
        raise UsageError("an e-mail needs a password (--password, WALLWHALE_PASSWORD or the config file)")
    tls: Tls | bool = settings.tls
    if settings.ca_cert is not None:
        if not settings.ca_cert.is_file():
            raise UsageError(f"--ca-cert {settings.ca_cert}: no such file")
        tls = Tls(ca_cert=settings.ca_cert)
    return AsyncClient(
        settings.address,
        api_key=None if settings.email else settings.api_key,
        email=settings.email,
        password=settings.password if settings.email else None,
        tls=tls,
        timeout=settings.timeout,
    )
