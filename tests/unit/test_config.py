"""Configuration: environment over file over defaults, validated with the variable named."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallwhale.config import ConfigError, Mode, load_settings, to_async_url

STRONG = "s" * 40


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WALLWHALE_"):
            monkeypatch.delenv(name)


def test_defaults_use_sqlite_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WALLWHALE_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.mode is Mode.DEVELOPMENT
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/wallwhale.sqlite3"
    assert settings.resolved_storage_dir == (tmp_path / "storage").resolve()


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLWHALE_GRPC_PORT", "70000")
    monkeypatch.setenv("WALLWHALE_LOG_LEVEL", "LOUD")
    monkeypatch.setenv("WALLWHALE_DATABASE_URL", "mysql://x")
    monkeypatch.setenv("WALLWHALE_OTLP_ENDPOINT", "collector:4317")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    for name in (
        "WALLWHALE_GRPC_PORT",
        "WALLWHALE_LOG_LEVEL",
        "WALLWHALE_DATABASE_URL",
        "WALLWHALE_OTLP_ENDPOINT",
    ):
        assert name in message


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "wallwhale.toml"
    config.write_text("grpc_prot = 1\n")
    with pytest.raises(ConfigError, match="WALLWHALE_GRPC_PROT"):
        load_settings(config)


def test_production_refuses_to_start_without_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WALLWHALE_MODE", "production")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "WALLWHALE_JWT_SECRET" in str(raised.value)
    assert "WALLWHALE_SECRET_KEY" in str(raised.value)

    monkeypatch.setenv("WALLWHALE_JWT_SECRET", "too-short")
    monkeypatch.setenv("WALLWHALE_SECRET_KEY_FILE", str(tmp_path / "key"))
    with pytest.raises(ConfigError, match="at least 32 characters") as raised:
        load_settings()
    assert "too-short" not in str(raised.value)  # secrets never echoed

    monkeypatch.setenv("WALLWHALE_JWT_SECRET", STRONG)
    assert load_settings().mode is Mode.PRODUCTION


def test_file_settings_lose_to_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "wallwhale.toml"
    config.write_text('grpc_port = 6000\nlog_level = "debug"\n')
    monkeypatch.setenv("WALLWHALE_GRPC_PORT", "7000")
    settings = load_settings(config)
    assert settings.grpc_port == 7000
    assert settings.log_level == "DEBUG"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("plain", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_async_driver_is_added(plain: str, expected: str) -> None:
    assert to_async_url(plain) == expected
