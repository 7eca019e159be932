"""What the test suites share: a running server and its database, the harness with the fake Steam,
Envoy, fault injection, hostile input. Test modules import from here, never from one another."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
