"""Activity reports on a small hand-made data set whose figures are worked out below by hand,
on SQLite and PostgreSQL; the page for superviseurs only; ``guichet report`` in three formats."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp
import pytest
from openpyxl import load_workbook

from guichet import auth
from guichet.reports import build_report, percentile
from models.store import Store
from models.tables import (
    AuditEvent,
    Contact,
    ContactTriage,
    Document,
    Dossier,
    OutboundMessage,
)
from tests.guichet.site import serve_site

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
SINCE, UNTIL = date(2026, 11, 1), date(2026, 11, 2)


def _at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


async def _data_set(store: Store) -> None:
    """Four inbound contacts in the range (1 and 2 November), three outside, and around them
    the replies and audit events whose timings the expected figures below come from."""
    async with store.sessions() as session, session.begin():
        for username in ("marie", "paul"):
            await auth.add_user(session, username, f"{username} password")
        dossier = Dossier(ref="AS-2026-000001", claim_type="medical")
        session.add(dossier)
        await session.flush()

        def contact(key: str, channel: str, received: datetime, **values: object) -> Contact:
            row = Contact(
                channel=channel,
                natural_key=key,
                sender=f"{key}@example.org",
                received_at=received,
                **values,
            )
            session.add(row)
            return row

        c1 = contact(
            "c1",
            "email",
            _at(1, 8),
            intent="refund_request",
            status="processed",
            dossier_id=dossier.id,
            match_rule="reference in subject",
        )
        c2 = contact(
            "c2",
            "email",
            _at(1, 9),
            intent="refund_request",
            status="needs_review",
            match_rule="sender: several open dossiers",
        )
        c3 = contact(
            "c3",
            "sms",
            _at(2, 10),
            status="processed",
            dossier_id=dossier.id,
            match_rule="attached by marie",
        )
        c4 = contact(
            "c4",
            "chat",
            _at(2, 23, 30),
            intent="status_question",
            status="received",
            dossier_id=dossier.id,
            match_rule="chat conversation",
        )
        # Outside the range: they count in the backlog (a state now) and nowhere else.
        contact(
            "c5", "email", _at(31, 23, 59, month=10), intent="refund_request", status="needs_review"
        )
        contact("c7", "email", _at(1, 9, month=10), status="failed")
        c8 = contact("c8", "email", _at(20, 12, month=10), status="needs_review")
        # Ours, not received: never counted.
        contact("out", "email", _at(1, 12), direction="outbound", status="processed")
        await session.flush()
        session.add(ContactTriage(contact_id=c8.id, done_at=_at(21, 9, month=10), done_by="marie"))

        def document(owner: Contact, doc_type: str | None) -> Document:
            row = Document(
                contact_id=owner.id, filename="f.pdf", sha256="0" * 64, size=1, doc_type=doc_type
            )
            session.add(row)
            return row

        document(c1, "invoice")
        document(c1, "medical_report")
        d2 = document(c2, "invoice")
        document(c3, None)

        def reply(
            key: str,
            owner: Contact | None,
            purpose: str,
            status: str = "sent",
            sent: datetime | None = None,
            created: datetime = NOW,
        ) -> OutboundMessage:
            row = OutboundMessage(
                idempotency_key=key,
                contact_id=owner.id if owner else None,
                purpose=purpose,
                template=purpose,
                channel="email",
                language="fr",
                recipient="x@example.org",
                status=status,
                sent_at=sent,
                created_at=created,
            )
            session.add(row)
            return row

        reply("a1", c1, "acknowledgement", sent=_at(1, 8, 2))
        reply("a1bis", c1, "acknowledgement", sent=_at(1, 8, 30))
        r2 = reply("a2", c2, "acknowledgement", sent=_at(1, 9, 10))
        reply("a3", c3, "acknowledgement", status="queued")
        reply("a4", c4, "acknowledgement", sent=_at(2, 23, 31))
        reply(
            "m4",
            c4,
            "missing_documents",
            sent=_at(
                2,
                23,
                30,
            ),
        )
        reply("h1", c1, "refusal", status="held", created=_at(2, 12))
        reply("h2", c2, "refusal", status="held", created=_at(3, 6))
        reply("h3", None, "attestation", status="held", created=_at(3, 11))
        await session.flush()

        def event(actor: str, action: str, kind: str, object_id: object, at: datetime) -> None:
            session.add(
                AuditEvent(
                    actor=actor, action=action, object_type=kind, object_id=str(object_id), at=at
                )
            )

        event("intake", "contact.attached", "contact", c1.id, _at(1, 8, 1))
        event("marie", "contact.assigned", "contact", c1.id, _at(1, 9))
        event("marie", "reply.approved", "outbound_message", r2.id, _at(1, 10, 30))
        event("paul", "document.corrected", "document", d2.id, _at(1, 11))
        event("marie", "contact.attached", "contact", c3.id, _at(2, 10, 30))
        event("marie", "user.login", "user", 1, _at(2, 8))
        event("marie", "contact.assigned", "contact", c4.id, _at(3, 0, 30))


async def test_figures_match_the_hand_count(store: Store) -> None:
    await _data_set(store)
    async with store.sessions() as session:
        report = await build_report(session, SINCE, UNTIL, now=NOW)
    assert report.table("volumes").rows == [
        ("2026-11-01", "email", 2),
        ("2026-11-02", "chat", 1),
        ("2026-11-02", "sms", 1),
    ]
    assert report.table("intents").rows == [
        ("refund_request", 2, 50.0),
        (None, 1, 25.0),
        ("status_question", 1, 25.0),
    ]
    assert report.table("doc_types").rows == [
        ("invoice", 2, 50.0),
        (None, 1, 25.0),
        ("medical_report", 1, 25.0),
    ]
    # c1 and c4 matched by a rule; c3 attached by a person; c2 not attached.
    assert report.table("matching").rows == [(4, 2, 50.0)]
    # First sent acknowledgement: c1 2 min, c2 10 min, c4 1 min; c3's is still queued.
    # Sorted 1, 2, 10: the median is the 2nd value, the 95th percentile the 3rd (nearest rank).
    assert report.table("acknowledgement").rows == [(3, 4, 2.0, 10.0)]
    # First act of a person: c1 60 min (assigned; intake's act is not a person's), c2 90 min
    # (reply approved, before the document correction at 120), c3 30 min, c4 60 min (after the
    # range, still counted for a contact of the range). Sorted 30, 60, 60, 90.
    assert report.table("first_action").rows == [(4, 4, 60.0, 90.0)]
    # Open at NOW: c4 12.5 h, c2 51 h, c5 60 h, c7 33 days; c8 is marked done.
    assert report.table("backlog").rows == [
        ("lt_1d", 1),
        ("1d_3d", 2),
        ("3d_7d", 0),
        ("7d_30d", 0),
        ("gt_30d", 1),
    ]
    # The login is not work, intake is not a person, 3 November is outside the range.
    assert report.table("work").rows == [
        ("marie", "contact.assigned", 1),
        ("marie", "contact.attached", 1),
        ("marie", "reply.approved", 1),
        ("paul", "document.corrected", 1),
    ]
    # Held at NOW: refusals since 2 Nov 12:00 (24 h) and 3 Nov 06:00; an attestation since 11:00.
    assert report.table("held").rows == [("attestation", 1, 1.0), ("refusal", 2, 24.0)]


async def test_an_empty_range_gives_empty_tables(store: Store) -> None:
    async with store.sessions() as session:
        report = await build_report(session, date(2020, 1, 1), date(2020, 1, 31), now=NOW)
    assert report.table("volumes").rows == []
    assert report.table("matching").rows == [(0, 0, 0.0)]
    assert report.table("acknowledgement").rows == [(0, 0, None, None)]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 21))), 95) == 19.0


async def test_page_for_superviseurs_only(store: Store) -> None:
    await _data_set(store)
    async with serve_site(store, users=(("anne", "gestionnaire"), ("sam", "superviseur"))) as site:
        status, _ = await site.call(
            "GET", "/api/reports?from=2026-11-01&to=2026-11-02", user="anne"
        )
        assert status == 403
        status, body = await site.call(
            "GET", "/api/reports?from=2026-11-01&to=2026-11-02", user="sam"
        )
        assert status == 200
        assert body["tables"]["matching"] == [{"contacts": 4, "matched": 2, "rate": 50.0}]
        status, body = await site.call(
            "GET", "/api/reports?from=2026-11-05&to=2026-11-01", user="sam"
        )
        assert status == 400 and "after" in body["error"]
        async with aiohttp.ClientSession() as client:
            url = f"{site.url}/inbox/reports?from=2026-11-01&to=2026-11-02"
            anne = {"Authorization": f"Bearer {site.tokens['anne']}"}
            sam = {"Authorization": f"Bearer {site.tokens['sam']}", "Accept-Language": "en"}
            async with client.get(url, headers=anne) as refused:
                assert refused.status == 403
            async with client.get(url, headers=sam) as page:
                assert page.status == 200
                html = await page.text()
            async with client.get(url, allow_redirects=False) as anonymous:
                assert anonymous.status == 303
    assert "Backlog by age" in html
    assert html.count("<svg") == 4 and 'role="img"' in html
    assert "<td>refund_request</td>" in html


@pytest.mark.parametrize("fmt", ["csv", "html", "xlsx"])
async def test_cli_report(store: Store, database_url: str, tmp_path: Path, fmt: str) -> None:
    await _data_set(store)
    out = tmp_path / f"report.{fmt}"
    env = {
        **os.environ,
        "GUICHET_HOME": str(tmp_path / "home"),
        "GUICHET_DATABASE_URL": database_url,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "guichet.cli",
            "report",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-02",
            "--format",
            fmt,
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if fmt == "xlsx":
        book = load_workbook(out)
        assert book.sheetnames == [
            "volumes",
            "intents",
            "doc_types",
            "matching",
            "acknowledgement",
            "first_action",
            "backlog",
            "work",
            "held",
        ]
        sheet = book["matching"]
        assert [c.value for c in sheet[1]] == ["Contacts", "Rattachés automatiquement", "Taux (%)"]
        assert [c.value for c in sheet[2]] == [4, 2, 50]
        assert [c.value for c in book["volumes"][2]] == ["2026-11-01", "email", 2]
        assert [c.value for c in book["intents"][3]] == ["(aucun)", 1, 25]
        return
    content = out.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(content)))
        assert rows[0] == ["Tableaux de synthèse", "2026-11-01", "2026-11-02"]
        start = rows.index(["# Rattachement automatique"])
        assert rows[start + 1 : start + 3] == [
            ["Contacts", "Rattachés automatiquement", "Taux (%)"],
            ["4", "2", "50.0"],
        ]
        assert ["# Réponses retenues"] in rows
    else:
        assert content.startswith("<!doctype html>")
        assert "/static/" not in content  # a file that stands alone
        assert "<td>refund_request</td>" in content and content.rstrip().endswith("</html>")


async def test_cli_refuses_bad_requests(tmp_path: Path) -> None:
    env = {**os.environ, "GUICHET_HOME": str(tmp_path)}
    for args, message in (
        (["--from", "2026-11-02", "--to", "2026-11-01"], "after"),
        (["--from", "2026-11-01", "--to", "2026-11-31"], "YYYY-MM-DD"),
        (["--from", "2026-11-01", "--to", "2026-11-02", "--format", "xlsx"], "--out"),
    ):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "guichet.cli", "report", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2 and message in done.stderr
