"""Configuration: defaults, overrides, clear errors, and the README table that documents it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import SETTINGS, ServiceSettings, SettingsError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_give_fixed_local_ports_and_sqlite_under_var() -> None:
    settings = ServiceSettings.from_env("wallet", {})
    assert settings.port == 50051
    assert settings.database_url == "sqlite:///var/wallet.db"
    assert settings.peer_targets == {
        "points": "127.0.0.1:50052",
        "promotions": "127.0.0.1:50053",
        "checkout": "127.0.0.1:50054",
    }


def test_environment_overrides_defaults() -> None:
    settings = ServiceSettings.from_env(
        "points", {"POINTS_PORT": "6000", "POINTS_DATABASE_URL": "postgresql://db/points", "LOG_LEVEL": "debug"}
    )
    assert (settings.port, settings.database_url, settings.log_level) == (6000, "postgresql://db/points", "DEBUG")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"POINTS_PORT": "http"}, "POINTS_PORT must be an integer, got 'http'"),
        ({"GRPC_MAX_WORKERS": "0"}, "GRPC_MAX_WORKERS must be at least 1, got 0"),
        ({"DB_AUTO_MIGRATE": "maybe"}, "DB_AUTO_MIGRATE must be true or false, got 'maybe'"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json or text, got 'xml'"),
    ],
)
def test_bad_values_fail_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        ServiceSettings.from_env("points", environ)


def test_unknown_service_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown service 'loyalty'"):
        ServiceSettings.from_env("loyalty", {})


def test_readme_documents_every_setting_with_its_default() -> None:
    table = README.read_text(encoding="utf-8")
    for setting in SETTINGS:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{setting.name}`")), None)
        assert row is not None, f"README configuration table lacks {setting.name}"
        expected = f"`{setting.default}`" if setting.default else "(empty)"
        assert expected in row, f"README gives another default for {setting.name}"


def test_a_maximum_connection_age_makes_clients_reconnect_and_spread() -> None:
    from shared.peers import _CHANNEL_OPTIONS
    from shared.server import server_options

    settings = ServiceSettings.from_env("points", {"GRPC_MAX_CONNECTION_AGE_MS": "300000"})
    assert settings.max_connection_age_ms == 300_000
    assert ("grpc.max_connection_age_ms", 300_000) in server_options(settings.max_connection_age_ms)
    assert [name for name, _ in server_options(0)] == [  # the default: never
        "grpc.so_reuseport",
        "grpc.max_receive_message_length",
    ]
    assert ("grpc.lb_policy_name", "round_robin") in _CHANNEL_OPTIONS
