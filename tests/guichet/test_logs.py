"""Personal data masked in logs: patterns, filter, CLI set-up, a real verbose intake run."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from guichet.logs import FORMAT, install_redaction, redact
from tests.conftest import Relay
from tests.guichet.service import GuichetProcess


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from jean.dupont@example.org", "from j***@example.org"),
        ("<A.B+tag@sub.example.co.uk>", "<A***@sub.example.co.uk>"),
        ("sms +33612345678 ok", "sms +33*******78 ok"),
        ("tel +33 (0)6 12 34 56 78.", "tel +33********78."),
        ("06 12 34 56 78 / 06.12.34.56.78 / 0612345678", "06******78 / 06******78 / 06******78"),
        ("uk +44 7700 900123", "uk +44********23"),
        ("IBAN FR76 3000 6000 0112 3456 7890 189", "IBAN FR76***89"),
        ("iban=FR7630006000011234567890189;", "iban=FR76***89;"),
        ("NIR 1 85 05 78 006 084 36", "NIR *************36"),
        ("card 4970101234567890", "card **************90"),
        # The access log's query strings, URL-encoded.
        (
            "GET /inbox/search?q=jean.dupont%40example.org&to=%2B33612345678 HTTP/1.1",
            "GET /inbox/search?q=j***%40example.org&to=+33*******78 HTTP/1.1",
        ),
        (
            "q=tel+06+12+34+56+78&n=1%2085%2005%2078%20006%20084%2036",
            "q=tel+06******78&n=*************36",
        ),
        # What must stay readable: ids, references, dates, times, ports, sizes, SIDs.
        (
            "contact 42 dossier AS-2026-000123 at 2026-11-24 01:40:47 port 2525",
            "contact 42 dossier AS-2026-000123 at 2026-11-24 01:40:47 port 2525",
        ),
        ("52428800000 bytes free", "52428800000 bytes free"),
        ("SID SM0123456789abcdef0123456789abcdef", "SID SM0123456789abcdef0123456789abcdef"),
        (
            "(IntegrityError) [SQL: INSERT INTO contact (sender) VALUES (?)]\n"
            "[parameters: ('a body ] with a bracket',)]\n"
            "(Background on this error at: https://sqlalche.me/e/20/gkpj)",
            "(IntegrityError) [SQL: INSERT INTO contact (sender) VALUES (?)]\n"
            "[parameters: hidden]\n"
            "(Background on this error at: https://sqlalche.me/e/20/gkpj)",
        ),
        # PostgreSQL quotes the refused row, or the key, in its own detail line.
        (
            '(psycopg.errors.NotNullViolation) null value in column "channel" of relation'
            ' "contact" violates not-null constraint\n'
            "DETAIL:  Failing row contains (7, inbound, null, j'ai une fracture (au bras), x).\n"
            "[SQL: INSERT INTO contact (text) VALUES (%(text)s::VARCHAR)]",
            '(psycopg.errors.NotNullViolation) null value in column "channel" of relation'
            ' "contact" violates not-null constraint\n'
            "DETAIL:  Failing row contains (hidden).\n"
            "[SQL: INSERT INTO contact (text) VALUES (%(text)s::VARCHAR)]",
        ),
        (
            "DETAIL:  Key (channel, natural_key)=(email, email:<fracture.du.bras>) already exists.",
            "DETAIL:  Key (channel, natural_key)=(hidden) already exists.",
        ),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # a second pass changes nothing


def test_filter_masks_arguments_and_tracebacks() -> None:
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    install_redaction(logger)
    install_redaction(logger)  # twice: still one filter
    assert len(handler.filters) == 1

    logger.info("mail from %s to %r", "jean.dupont@example.org", ["+33612345678"])
    try:
        raise ValueError(
            "relay refused <jean.dupont@example.org>, IBAN FR7630006000011234567890189"
        )
    except ValueError:
        logger.exception("delivery of %d failed", 7)
    logged = out.getvalue()
    assert "mail from j***@example.org to ['+33*******78']" in logged
    assert "delivery of 7 failed" in logged
    assert "ValueError: relay refused <j***@example.org>, IBAN FR76***89" in logged
    for secret in ("jean.dupont", "612345678", "3000600001"):
        assert secret not in logged


def test_command_line_setup_masks_and_quiets_chatty_libraries() -> None:
    program = textwrap.dedent(
        """
        import logging
        from guichet.logs import configure_logging
        configure_logging(verbose=True)
        logging.getLogger("channels.email_smtp").debug("from %s", "jean.dupont@example.org")
        logging.getLogger("aiosqlite").debug("executing INSERT ... ('the whole body',)")
        logging.getLogger("mail.log").debug("DATA readline: b'the whole body'")
        logging.getLogger("mail.log").info("sender: jean.dupont@example.org")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG channels.email_smtp: from j***@example.org" in result.stderr
    assert "INFO mail.log: sender: j***@example.org" in result.stderr
    assert "the whole body" not in result.stderr
    assert "jean.dupont" not in result.stderr


PII_MAIL = """\
From: Jean Testeur <jean.testeur@example.fr>
To: sinistres@guichet.localhost
Subject: Remboursement, appelez-moi au 06 12 34 56 78
Date: Thu, 25 Dec 2025 22:34:09 +0100
Message-ID: <pii-1@mail.example.fr>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Bonjour,

Merci de rembourser sur mon IBAN FR76 3000 6000 0112 3456 7890 189.
Mon portable : +33 6 12 34 56 78, ou le fixe 01.23.45.67.89.
Ecrivez aussi a jean.testeur.bis@example.fr.

Jean Testeur
"""
PII_VALUES = (
    "jean.testeur@example.fr",
    "jean.testeur.bis@example.fr",
    "06 12 34 56 78",
    "+33 6 12 34 56 78",
    "+33612345678",
    "01.23.45.67.89",
    "+33123456789",
    "FR76 3000 6000 0112 3456 7890 189",
    "FR7630006000011234567890189",
    "Remboursement, appelez-moi",
)


async def test_verbose_ingest_logs_no_personal_data(tmp_path: Path, relay: Relay) -> None:
    # The relay greylists the acknowledgement quoting its recipient, as real relays do: the
    # runner logs the failure, with the address masked.
    relay.refuse_with = "451 4.7.1 <jean.testeur@example.fr>: greylisted, try again later"
    mail = tmp_path / "pii.eml"
    mail.write_text(PII_MAIL, encoding="utf-8")
    guichet = GuichetProcess(tmp_path / "home", relay.port)
    result = await asyncio.to_thread(guichet.cli, "-v", "ingest", str(mail))
    assert result.returncode == 0, result.stderr
    assert "stored as contact 1" in result.stdout
    assert " DEBUG " in result.stderr and "intake.pipeline: contact 1: respond" in result.stderr
    assert "attempt 1 failed: DeliveryError: relay answered 451 4.7.1 <j***@example.fr>" in (
        result.stderr
    )
    for value in PII_VALUES:
        assert value not in result.stderr, value
        assert value not in result.stdout, value
