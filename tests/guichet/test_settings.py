"""Settings: defaults, the TOML file, GUICHET_* variables, and loud failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from guichet.settings import DEFAULT_CONFIG, SettingsError, load_settings


def test_defaults_from_the_shipped_file() -> None:
    settings = load_settings(DEFAULT_CONFIG, environ={})
    assert settings.home == Path("var")
    assert (settings.http_host, settings.http_port, settings.smtp_port) == ("127.0.0.1", 8080, 2525)
    assert settings.mail_domains == ("guichet.localhost",)
    assert settings.smtp_max_message_bytes == 25 * 1024 * 1024
    assert (
        settings.effective_database_url
        == f"sqlite+aiosqlite:///{Path('var').resolve() / 'guichet.sqlite3'}"
    )


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    settings = load_settings(
        DEFAULT_CONFIG,
        environ={
            "GUICHET_HOME": str(tmp_path),
            "GUICHET_DATABASE_URL": "postgresql+psycopg://u@db/guichet",
            "GUICHET_HTTP_PORT": "9090",
            "GUICHET_SMTP_PORT": "2626",
            "GUICHET_SMTP_RELAY": "mail.example:587",
            "GUICHET_MAIL_DOMAINS": "Guichet.localhost, assistance.example ,",
        },
    )
    assert settings.home == tmp_path
    assert settings.effective_database_url == "postgresql+psycopg://u@db/guichet"
    assert (settings.http_port, settings.smtp_port) == (9090, 2626)
    assert settings.relay_address == ("mail.example", 587)
    assert settings.mail_domains == ("guichet.localhost", "assistance.example")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GUICHET_HTTP_PORT": "eighty"}, "GUICHET_HTTP_PORT: cannot use 'eighty'"),
        ({"GUICHET_SMTP_RELAY": "nohostport"}, "GUICHET_SMTP_RELAY must be host:port"),
        ({"GUICHET_MAIL_DOMAINS": " , "}, "GUICHET_MAIL_DOMAINS: cannot use"),
    ],
)
def test_bad_values_fail_at_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(DEFAULT_CONFIG, environ=environ)


def test_unknown_key_in_file_and_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "guichet.toml"
    config.write_text("[guichet]\nhttp_prot = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'http_prot'"):
        load_settings(config, environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", environ={})
