"""A real server for the tests: its settings (the test DepotDownloader, free ports, nothing asks the
real Steam), call metadata, the rich error details of a refusal, and its log copied to a file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import structlog
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from wallwhale import log
from wallwhale.config import LogFormat, Settings
from wallwhale_simulator import depotdownloader as simulated_depotdownloader

# The simulator's DepotDownloader executable (tests/fakes/depotdownloader.py is its module's other name).
FAKE_DEPOTDOWNLOADER = Path(simulated_depotdownloader.__file__).resolve()

Metadata = tuple[tuple[str, str], ...]


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "grpc_port": 0,
        "metrics_port": 0,
        "depotdownloader_path": FAKE_DEPOTDOWNLOADER,
        "health_check_interval_seconds": 0.2,
        "shutdown_grace_seconds": 1.0,
        "migrate_on_start": False,
        # Tests never ask the real Steam; those about item details start tests/fakes/webapi.py.
        "steam_web_api_url": "",
        # One budget per client address would be shared by every test of the shared database (all
        # from 127.0.0.1), some of which move the server's clock; tests of that limit set it.
        "anonymous_requests_per_minute": None,
        # Likewise identical denials (e.g. a call without credentials from 127.0.0.1) would be folded
        # into one row across tests that look for their own request's row; tests of that set it.
        "audit_denial_window_seconds": 0.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status details")


@contextmanager
def server_log_to(path: Path, level: str = "INFO", *, sql_statements: bool = False) -> Iterator[Path]:
    """The server's logging as `wallwhale serve` sets it up (JSON at `level`), copied to `path`;
    `sql_statements`: also every SQL statement with its parameters, as with echo=True."""
    root, statements = logging.getLogger(), logging.getLogger("sqlalchemy.engine")
    saved_handlers, saved_level, saved_statements = root.handlers[:], root.level, statements.level
    log.configure(level, LogFormat.JSON)
    if sql_statements:
        statements.setLevel(logging.INFO)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(root.handlers[0].formatter)
    root.addHandler(to_file)
    try:
        yield path
    finally:
        to_file.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        statements.setLevel(saved_statements)
        structlog.reset_defaults()
