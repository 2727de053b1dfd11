"""The one typed settings object, read once from config/guichet.toml and GUICHET_* variables."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: The checkout: config/ and templates/ sit beside the packages (the project installs editable).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "guichet.toml"


class SettingsError(ValueError):
    """A setting is missing, unknown or cannot be cast; raised at start-up, never later."""


@dataclass(frozen=True)
class Settings:
    """Everything a step may need to know about the deployment, passed explicitly."""

    home: Path = Path("var")
    database_url: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_relay: str = "127.0.0.1:25"
    smtp_max_message_bytes: int = 25 * 1024 * 1024
    #: Free space kept on the blob folder's disk: below it new contacts are refused for now
    #: (SMTP 452, HTTP 503) so that those already accepted can still be processed.
    min_free_bytes: int = 200 * 1024 * 1024
    mail_domains: tuple[str, ...] = ("guichet.localhost",)
    mail_from_local: str = "sinistres"
    mail_from_name: str = "Guichet Assistance"
    workers: int = 2
    job_max_attempts: int = 5
    job_backoff_seconds: float = 2.0
    #: Replies wait out a relay or provider outage longer than intake waits for a bug: with
    #: the doubling backoff capped at 5 minutes, 10 tries span about a quarter of an hour.
    delivery_max_attempts: int = 10
    job_poll_seconds: float = 1.0
    ocr_languages: str = "fra+eng"
    ocr_processes: int = 0
    ocr_page_timeout_seconds: float = 60.0
    ocr_dpi: int = 300
    pdf_max_pages: int = 50
    document_max_bytes: int = 25 * 1024 * 1024
    archive_max_total_bytes: int = 100 * 1024 * 1024
    archive_max_members: int = 200
    archive_max_ratio: int = 100
    nesting_max_depth: int = 3
    default_language: str = "fr"
    models_dir: Path = PROJECT_ROOT / "classifiers" / "models"
    review_threshold_intent: float = 0.45
    review_threshold_doc_type: float = 0.45
    #: Days after a missing-documents request when reminders go out ("" for none).
    missing_documents_reminder_days: str = "7,21"
    #: Refusal reason codes whose reply leaves without a gestionnaire's approval (comma list).
    auto_send_refusal_codes: str = ""
    #: Automatic replies to one recipient within an hour beyond which the next are held.
    max_automatic_per_hour: int = 5
    #: The address the outside world uses to reach Guichet (behind a proxy): Twilio signs it.
    public_url: str = "http://127.0.0.1:8080"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    #: Our sending number (E.164) or Messaging Service SID ("MG…").
    twilio_from: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    #: Hosts MMS media may be fetched from (comma list); nothing else is ever requested.
    twilio_media_hosts: str = "api.twilio.com,media.twiliocdn.com"
    twilio_media_max_bytes: int = 5 * 1024 * 1024
    chat_max_messages_per_minute: int = 20
    chat_max_messages_per_minute_per_address: int = 60
    chat_max_upload_bytes: int = 10 * 1024 * 1024
    #: Drop folders ("" turns the watcher off); relative paths are under ``home``.
    edi_drop: str = ""
    edi_out: str = "edi-out"
    ged_drop: str = ""
    ged_export: str = "ged-export"
    #: Seconds a dropped file's size and mtime must stay unchanged before it is taken.
    drop_stable_seconds: float = 2.0
    drop_poll_seconds: float = 1.0
    #: Hours after which a contact not marked done counts as past its service level (inbox).
    inbox_sla_hours: int = 48
    #: Days a closed dossier is kept before ``guichet purge`` deletes it with its contacts,
    #: documents and replies (0 keeps everything for ever).
    retention_days: int = 3650
    templates_dir: Path = PROJECT_ROOT / "templates"
    config_dir: Path = PROJECT_ROOT / "config"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.home / 'guichet.sqlite3').resolve()}"

    @property
    def relay_address(self) -> tuple[str, int]:
        host, _, port = self.smtp_relay.rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"GUICHET_SMTP_RELAY must be host:port, got {self.smtp_relay!r}")
        return host, int(port)

    def folder(self, value: str) -> Path:
        """A folder setting: absolute as given, relative ones under ``home``."""
        path = Path(value)
        return path if path.is_absolute() else self.home / path

    @property
    def reply_domain(self) -> str:
        return self.mail_domains[0]

    @property
    def ocr_pool_size(self) -> int:
        return self.ocr_processes or max(1, os.cpu_count() or 1)


def _cast(name: str, annotation: str, raw: Any) -> Any:
    """Cast a TOML or environment value to the field's declared type, loudly."""
    try:
        if annotation == "int":
            if isinstance(raw, bool):
                raise TypeError("boolean given")
            return int(raw)
        if annotation == "float":
            return float(raw)
        if annotation == "Path":
            return Path(str(raw))
        if annotation == "str":
            if not isinstance(raw, str | int | float):
                raise TypeError(f"expected text, got {type(raw).__name__}")
            return str(raw)
        if annotation == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            values = tuple(str(item).strip().lower() for item in items if str(item).strip())
            if not values:
                raise ValueError("empty list")
            return values
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: cannot use {raw!r}: {exc}") from exc
    raise SettingsError(f"setting {name}: unsupported type {annotation}")


_CASTABLE = {f.name: str(f.type) for f in fields(Settings) if f.name != "extra"}


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings: defaults < TOML file < GUICHET_* variables < explicit overrides."""
    environ = os.environ if environ is None else environ
    path = config_file or Path(environ.get("GUICHET_CONFIG", DEFAULT_CONFIG))
    values: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as fh:
            document = tomllib.load(fh)
        section = document.get("guichet", {})
        for key, raw in section.items():
            if key not in _CASTABLE:
                raise SettingsError(f"{path}: unknown setting {key!r}")
            values[key] = _cast(key, _CASTABLE[key], raw)
        values["extra"] = {k: v for k, v in document.items() if k != "guichet"}
    elif config_file is not None:
        raise SettingsError(f"settings file {path} does not exist")
    for key, annotation in _CASTABLE.items():
        env_value = environ.get(f"GUICHET_{key.upper()}")
        if env_value is not None and env_value != "":
            values[key] = _cast(f"GUICHET_{key.upper()}", annotation, env_value)
    for key, raw in overrides.items():
        if key not in _CASTABLE:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = _cast(key, _CASTABLE[key], raw)
    settings = Settings(**values)
    settings.relay_address  # noqa: B018 - validate host:port at start-up, not at first send
    return settings
