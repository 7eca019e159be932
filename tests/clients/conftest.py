"""The client suites run the server on SQLite only: a client does not care which database the
server uses (the server's own suites run on both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallwhale.config import to_async_url


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, empty SQLite database (narrows the top-level fixture of both backends)."""
    return to_async_url(f"sqlite:///{tmp_path / 'wallwhale.sqlite3'}")
