"""The ``guichet`` command line, run as a user would run it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.conftest import Relay
from tests.guichet.service import GuichetProcess

EMAILS = Path(__file__).parent.parent / "data" / "emails"


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = GuichetProcess(tmp_path, relay_port=25).cli("--help")
    assert result.returncode == 0
    for command in ("serve", "demo", "db", "ingest"):
        assert command in result.stdout


def test_db_upgrade_and_demo_are_idempotent(tmp_path: Path) -> None:
    guichet = GuichetProcess(tmp_path / "home", relay_port=25)
    assert guichet.cli("db", "upgrade").returncode == 0
    assert (tmp_path / "home" / "guichet.sqlite3").exists()
    first = guichet.cli("demo")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "demo.toml: 14 created, 0 already there",
        "user demo (password demo) added",
    ]
    second = guichet.cli("demo")
    assert second.stdout.strip() == "demo.toml: 0 created, 14 already there"


def test_user_and_token_commands(tmp_path: Path) -> None:
    guichet = GuichetProcess(tmp_path / "home", relay_port=25)
    added = guichet.cli(
        "user", "add", "lea", "--role", "superviseur", "--password-stdin", stdin="s3cret pass\n"
    )
    assert (added.returncode, added.stdout.strip()) == (0, "user lea added (superviseur)")
    again = guichet.cli("user", "add", "lea", "--password-stdin", stdin="another one\n")
    assert again.returncode == 2 and "user 'lea' already exists" in again.stderr
    short = guichet.cli("user", "add", "marc", "--password-stdin", stdin="abc\n")
    assert short.returncode == 2 and "password too short" in short.stderr
    token = guichet.cli("token", "create", "lea", "--label", "crm")
    assert token.returncode == 0 and token.stdout.startswith("gch_")
    changed = guichet.cli("user", "passwd", "lea", "--password-stdin", stdin="new pass\n")
    assert changed.returncode == 0, changed.stderr
    assert guichet.cli("user", "disable", "lea").stdout.strip() == "user lea disabled"
    refused = guichet.cli("token", "create", "lea")
    assert refused.returncode == 2 and "disabled" in refused.stderr
    ghost = guichet.cli("user", "disable", "ghost")
    assert ghost.returncode == 2 and "no user 'ghost'" in ghost.stderr


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    guichet = GuichetProcess(tmp_path, relay_port=25, extra_env={"GUICHET_SMTP_PORT": "many"})
    result = guichet.cli("db", "upgrade")
    assert result.returncode == 2
    assert "GUICHET_SMTP_PORT: cannot use 'many'" in result.stderr


async def test_ingest_takes_files_through_the_smtp_path_and_processes_them(
    tmp_path: Path, relay: Relay
) -> None:
    guichet = GuichetProcess(tmp_path / "home", relay.port)
    copy = tmp_path / "again.eml"
    shutil.copy(EMAILS / "eml-0001.eml", copy)
    files = [str(EMAILS / "eml-0001.eml"), str(EMAILS / "eml-0003.eml"), str(copy)]
    result = await asyncio.to_thread(guichet.cli, "ingest", *files)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if ".eml:" in line]
    assert "stored as contact 1" in lines[0] and "stored as contact 2" in lines[1]
    assert "duplicate of contact 1" in lines[2]
    assert "processed 4 job(s)" in result.stdout  # two contacts, two acknowledgements
    assert "ingest: 100%" in result.stderr  # the progress bar
    assert sorted(envelope.rcpt_tos[0] for envelope, _ in relay.received) == [
        "ericclement@free.example",
        "oceane.brun@laposte.example",
    ]


def test_ingest_reports_unreadable_files(tmp_path: Path) -> None:
    result = GuichetProcess(tmp_path, relay_port=25).cli(
        "ingest", "--no-process", str(tmp_path / "missing.eml")
    )
    assert result.returncode == 1
    assert "missing.eml: cannot read" in result.stdout + result.stderr
