"""The `DepotDownloader -V` status probe gets the runner's minimal environment, not the server's
(issue 15, item 14)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from wallwhale.steam import depotdownloader


async def test_the_probe_does_not_pass_the_servers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALLWHALE_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("WALLWHALE_SECRET_KEY", "k" * 44)
    seen = tmp_path / "environment"
    probe = tmp_path / "DepotDownloader"
    probe.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"open({str(seen)!r}, 'w').write('\\n'.join(sorted(os.environ)))\n"
        "print('DepotDownloader v3.4.0+abc')\n"
    )
    probe.chmod(0o755)
    info = await depotdownloader.probe(probe)
    assert info.available, info
    names = set(seen.read_text().split("\n"))
    assert not {name for name in names if name.startswith("WALLWHALE_")}
    assert "HOME" in names
    assert names <= {*depotdownloader.minimal_environment(Path("/x")), *os.environ.keys() & {"PATH", "TZ"}}
