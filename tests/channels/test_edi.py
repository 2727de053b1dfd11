"""EDI in: parsing and syntax checks, CONTRL out, HTTP upload and the drop folder on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydifact.parser import Parser
from sqlalchemy import func, select

from channels.edi import (
    EdiAdapter,
    EdiIntake,
    NotEdifact,
    PlainSegmentFactory,
    contrl_for,
    normalise_dossier_ref,
    read_interchange,
)
from classifiers.qualify import Qualifier
from guichet.api import create_app
from guichet.settings import PROJECT_ROOT
from intake.understand import Understanding, classify
from models.store import Store
from models.tables import Contact, EdiInterchange, ProviderInvoice
from tests.conftest import free_port, unwritable, writable

EDI = Path(__file__).parent.parent / "data" / "edi"
LABELS = [json.loads(line) for line in (EDI / "labels.jsonl").read_text().splitlines()]


def _segments(text: str) -> list[tuple[str, list[Any]]]:
    """Read back with pydifact itself (its directory validation is what warns, so skip it)."""
    return [(s.tag, list(s.elements)) for s in Parser(factory=PlainSegmentFactory()).parse(text)]


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("label", LABELS, ids=[label["id"] for label in LABELS])
def test_samples_parse_with_the_labelled_totals(label: dict[str, Any]) -> None:
    interchange = read_interchange((EDI / f"{label['id']}.edi").read_bytes())
    assert interchange.status == "accepted" and interchange.problem is None
    [message] = interchange.messages
    entities = label["entities"]
    assert message.total == Decimal(entities["amount_total"])
    assert message.currency == entities["currency"]
    assert message.invoice_date is not None
    assert message.invoice_date.isoformat() == entities["date"]
    assert message.dossier_ref == entities["dossier_ref"]
    assert message.lines and all(line.amount is not None for line in message.lines)
    assert sum(line.amount or 0 for line in message.lines) == message.total_lines


def test_one_sample_in_detail() -> None:
    interchange = read_interchange((EDI / "edi-0001.edi").read_bytes())
    assert (interchange.sender, interchange.recipient, interchange.reference) == (
        "62912910111069",
        "MISTRALASSIST",
        "46782",
    )
    [message] = interchange.messages
    assert (message.number, message.provider_id, message.provider_name) == (
        "F202673783",
        "62912910111069",
        "DEPANNAGE RHONE EXPRESS",
    )
    assert message.service_date is not None and message.service_date.isoformat() == "2026-03-16"
    km = message.lines[1]
    assert (km.service, km.description, km.quantity, km.unit) == (
        "KM01",
        "SUPPLEMENT KILOMETRIQUE",
        Decimal(13),
        "KMT",
    )
    assert (km.unit_price, km.amount, km.vat_rate) == (
        Decimal("2.43"),
        Decimal("31.59"),
        Decimal(20),
    )
    assert (message.total_lines, message.taxable, message.vat, message.total) == (
        Decimal("202.14"),
        Decimal("202.14"),
        Decimal("40.43"),
        Decimal("242.57"),
    )


def test_release_characters_are_data() -> None:
    [message] = read_interchange((EDI / "edi-0003.edi").read_bytes()).messages
    assert message.provider_name == "GARAGE DE L'AVENIR"
    assert message.lines[1].description == "MAIN D'OEUVRE HEURE"


def test_custom_separators_from_una() -> None:
    interchange = read_interchange((EDI / "custom-una.edi").read_bytes())
    assert interchange.status == "accepted"
    [message] = interchange.messages
    assert message.provider_name == "DEPANNAGE RHONE * EXPRESS"  # released data separator
    assert (message.total, message.lines[1].unit_price) == (Decimal("242.57"), Decimal("2.43"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("AS2026010051", "AS-2026-010051"), ("as-2026-001078", "AS-2026-001078"), ("X-1", "X-1")],
)
def test_dossier_references_are_normalised(value: str, expected: str) -> None:
    assert normalise_dossier_ref(value) == expected


BROKEN = [
    # file, interchange problem (code, segment), message problem (code, segment, position)
    ("bad-unt-count.edi", None, ("29", "UNT", 28)),
    ("bad-unt-ref.edi", None, ("28", "UNT", 28)),
    ("bad-unz-count.edi", ("29", "UNZ"), None),
    ("bad-unz-ref.edi", ("28", "UNZ"), None),
    ("truncated.edi", ("13", "UNZ"), ("13", "UNT", None)),
    ("bad-release.edi", None, ("21", "NAD", 6)),
]


@pytest.mark.parametrize(("name", "envelope", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_interchanges_are_rejected_where_they_break(
    name: str, envelope: tuple[str, str] | None, message: tuple[str, str, int | None] | None
) -> None:
    interchange = read_interchange((EDI / name).read_bytes())
    assert interchange.status == "rejected"
    problem = interchange.problem
    assert (problem.code, problem.segment) == envelope if problem else envelope is None
    [read] = interchange.messages
    found = read.problem
    assert (found.code, found.segment, found.position) == message if found else message is None
    assert not found or found.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"Bonjour, voici notre facture",
        b"",
        b"UNA:+.",
        b"UNA:+.? 'Hello'",
        b"UNB+UNOC:3++MISTRALASSIST+260101:1200'",
        b"%PDF-1.7 UNB+",
    ],
)
def test_what_is_not_edifact_is_refused(raw: bytes) -> None:
    with pytest.raises(NotEdifact):
        read_interchange(raw)


def test_one_bad_message_does_not_reject_the_others() -> None:
    interchange = read_interchange((EDI / "two-messages.edi").read_bytes())
    assert interchange.status == "partly_accepted"
    assert [m.problem is None for m in interchange.messages] == [True, False]


# --- CONTRL --------------------------------------------------------------------------------


def _contrl(name: str) -> tuple[str, list[tuple[str, list[Any]]]]:
    interchange = read_interchange((EDI / name).read_bytes())
    text = contrl_for(interchange, "C42", datetime(2026, 3, 25, 13, 12, tzinfo=UTC))
    return text, _segments(text)


def _values(segments: list[tuple[str, list[Any]]], tag: str) -> list[list[Any]]:
    return [elements for found, elements in segments if found == tag]


def _check_envelope(segments: list[tuple[str, list[Any]]], sender: str) -> None:
    """Valid EDIFACT: UNA, UNB with the parties swapped, one message whose UNT counts it."""
    tags = [tag for tag, _ in segments]
    assert tags[:3] == ["UNA", "UNB", "UNH"] and tags[-2:] == ["UNT", "UNZ"]
    [unb] = _values(segments, "UNB")
    assert unb[1] == ["MISTRALASSIST", "ZZZ"] and unb[2] == [sender, "5"]
    assert unb[4] == "C42"
    [unh] = _values(segments, "UNH")
    assert unh[1][0] == "CONTRL"
    [unt] = _values(segments, "UNT")
    assert unt == [str(tags.index("UNT") - tags.index("UNH") + 1), unh[0]]
    assert _values(segments, "UNZ") == [["1", "C42"]]


def test_contrl_acknowledges_a_good_interchange() -> None:
    text, segments = _contrl("edi-0001.edi")
    assert text.startswith("UNA:+.? '")
    _check_envelope(segments, "62912910111069")
    assert _values(segments, "UCI") == [
        ["46782", ["62912910111069", "5"], ["MISTRALASSIST", "ZZZ"], "7"]
    ]
    assert _values(segments, "UCM") == [["1", ["INVOIC", "D", "96A", "UN"], "7"]]


@pytest.mark.parametrize(
    ("name", "uci", "ucm", "ucs", "ucd"),
    [
        ("bad-unz-count.edi", ["4", "29", "UNZ", "1"], None, None, None),
        ("bad-unz-ref.edi", ["4", "28", "UNZ", "2"], None, None, None),
        ("truncated.edi", ["4", "13", "UNZ"], None, None, None),
        ("bad-unt-count.edi", ["7"], ["4", "29", "UNT"], None, None),
        ("bad-unt-ref.edi", ["7"], ["4", "28", "UNT"], None, None),
        ("bad-release.edi", ["7"], ["4"], ["6", "21"], ["21", "4"]),
    ],
)
def test_contrl_points_at_the_error(
    name: str, uci: list[str], ucm: list[str] | None, ucs: list[str] | None, ucd: list[str] | None
) -> None:
    interchange = read_interchange((EDI / name).read_bytes())
    _, segments = _contrl(name)
    _check_envelope(segments, interchange.sender)
    [found] = _values(segments, "UCI")
    assert found[3:] == uci
    assert [m[2:] for m in _values(segments, "UCM")] == ([ucm] if ucm else [])
    assert _values(segments, "UCS") == ([ucs] if ucs else [])
    assert _values(segments, "UCD") == ([ucd] if ucd else [])


# --- upload, records and API on loopback ---------------------------------------------------


@pytest.fixture
async def service(store: Store, tmp_path: Path) -> AsyncIterator[tuple[str, EdiAdapter]]:
    adapter = EdiAdapter(EdiIntake(store, tmp_path / "edi-out"), max_bytes=64 * 1024)
    runner = web.AppRunner(create_app(store, adapter.routes()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", adapter
    finally:
        await runner.cleanup()


async def _post(url: str, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.post(url, data=body) as response:
        return response.status, await response.json()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.json()


async def test_upload_stores_one_contact_per_interchange(
    service: tuple[str, EdiAdapter], store: Store, tmp_path: Path
) -> None:
    base, _ = service
    raw = (EDI / "edi-0001.edi").read_bytes()
    status, first = await _post(f"{base}/channels/edi", raw)
    assert status == 202, first
    assert (first["status"], first["duplicate"], first["contrl"]) == (
        "accepted",
        False,
        "CONTRL-62912910111069-46782.edi",
    )
    status, again = await _post(f"{base}/channels/edi", raw)
    assert status == 202 and again["contact_id"] == first["contact_id"] and again["duplicate"]
    async with store.sessions() as session:
        contact = await session.get_one(Contact, first["contact_id"])
        contacts = await session.scalar(select(func.count()).select_from(Contact))
        invoices = await session.scalar(select(func.count()).select_from(ProviderInvoice))
        interchanges = await session.scalar(select(func.count()).select_from(EdiInterchange))
    assert (contacts, invoices, interchanges, contact.duplicate_count) == (1, 1, 1, 1)
    assert (contact.channel, contact.natural_key, contact.sender) == (
        "edi",
        "62912910111069:46782",
        "62912910111069",
    )
    assert await store.raw_content(contact.raw_sha256 or "") == raw
    contrl = (tmp_path / "edi-out" / first["contrl"]).read_text(encoding="latin-1")
    _check_envelope_of_file(contrl)

    status, listing = await _get(f"{base}/api/invoices")
    [invoice] = listing["invoices"]
    assert (invoice["number"], invoice["total"], invoice["dossier_ref"], invoice["status"]) == (
        "F202673783",
        "242.57",
        "AS-2026-010051",
        "received",
    )
    status, one = await _get(f"{base}/api/invoices/{invoice['id']}")
    assert status == 200 and one["lines"][1]["service"] == "KM01"
    assert (await _get(f"{base}/api/invoices/999999"))[0] == 404


def _check_envelope_of_file(text: str) -> None:
    segments = _segments(text)
    assert [tag for tag, _ in segments][-2:] == ["UNT", "UNZ"]
    [uci] = _values(segments, "UCI")
    assert uci[3] == "7"


async def test_upload_of_a_broken_interchange_is_kept_and_rejected(
    service: tuple[str, EdiAdapter], store: Store, tmp_path: Path
) -> None:
    base, _ = service
    status, answer = await _post(f"{base}/channels/edi", (EDI / "bad-unt-count.edi").read_bytes())
    assert status == 202
    assert answer["status"] == "rejected"
    assert answer["messages"][0]["status"] == "rejected"
    assert "UNT counts '27'" in answer["messages"][0]["error"]
    async with store.sessions() as session:
        invoice = await session.scalar(select(ProviderInvoice))
        contact = await session.get_one(Contact, answer["contact_id"])
    assert invoice is not None and invoice.status == "rejected" and "UNT" in (invoice.error or "")
    assert contact.defects and "UNT counts" in contact.defects[0]
    contrl = _segments((tmp_path / "edi-out" / answer["contrl"]).read_text(encoding="latin-1"))
    assert [m[2] for m in _values(contrl, "UCM")] == ["4"]


async def test_upload_that_is_not_edifact_is_refused_and_nothing_stored(
    service: tuple[str, EdiAdapter], store: Store, tmp_path: Path
) -> None:
    base, _ = service
    status, answer = await _post(f"{base}/channels/edi", (EDI / "not-edifact.txt").read_bytes())
    assert status == 400 and "UNA or UNB" in answer["error"]
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{base}/channels/edi", data=b"UNB+" + b"x" * 70_000) as big,
    ):
        assert big.status == 413
    async with store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 0
    assert not (tmp_path / "edi-out").exists()


async def test_edi_contacts_skip_the_text_classifiers(
    service: tuple[str, EdiAdapter], store: Store
) -> None:
    base, _ = service
    _, answer = await _post(f"{base}/channels/edi", (EDI / "edi-0005.edi").read_bytes())
    qualifier = Qualifier(PROJECT_ROOT / "classifiers" / "models")
    await classify(store, Understanding(qualifier), answer["contact_id"], "invoices")
    async with store.sessions() as session:
        contact = await session.get_one(Contact, answer["contact_id"])
    assert (contact.intent, contact.intent_confidence, contact.step) == (
        "provider_invoice",
        1.0,
        "invoices",
    )
    # No model was even loaded: the prose classifiers never saw the interchange.
    assert "intent_model" not in vars(qualifier)


# --- the drop folder -----------------------------------------------------------------------


async def test_drop_folder_takes_stable_files_once(store: Store, tmp_path: Path) -> None:
    drop = tmp_path / "in"
    drop.mkdir()
    woken: list[int] = []
    adapter = EdiAdapter(
        EdiIntake(store, tmp_path / "out", on_accepted=lambda: woken.append(1)),
        drop=drop,
        stable_seconds=0.2,
        poll_seconds=0.05,
    )
    await adapter.start()
    try:
        for name in ("edi-0002.edi", "bad-unz-ref.edi", "not-edifact.txt"):
            (drop / name).write_bytes((EDI / name).read_bytes())
        for _ in range(200):
            if not any(path.is_file() for path in drop.iterdir()):
                break
            await asyncio.sleep(0.05)
    finally:
        await adapter.stop()
    assert sorted(p.name for p in (drop / "done").iterdir()) == ["edi-0002.edi"]
    assert sorted(p.name for p in (drop / "error").iterdir()) == [
        "bad-unz-ref.edi",
        "bad-unz-ref.edi.reason.txt",
        "not-edifact.txt",
        "not-edifact.txt.reason.txt",
    ]
    rejected = (drop / "error" / "bad-unz-ref.edi.reason.txt").read_text()
    assert "stored as contact" in rejected and "UNZ reference" in rejected
    assert "UNA or UNB" in (drop / "error" / "not-edifact.txt.reason.txt").read_text()
    async with store.sessions() as session:
        keys = (await session.scalars(select(Contact.natural_key).order_by(Contact.id))).all()
    assert sorted(keys) == ["62912910111069:46782", "77669362447901:57051"]
    assert len(woken) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "CONTRL-62912910111069-46782.edi",
        "CONTRL-77669362447901-57051.edi",
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_drop_folder_keeps_a_file_the_store_could_not_take(
    store: Store, tmp_path: Path
) -> None:
    """A full or broken blob folder is not the file's fault: it stays, and is taken once the
    store works again, instead of being parked in error/."""
    drop = tmp_path / "in"
    drop.mkdir()
    blobs = store.blobs.root
    unwritable(blobs)
    adapter = EdiAdapter(
        EdiIntake(store, tmp_path / "out"), drop=drop, stable_seconds=0.1, poll_seconds=0.05
    )
    await adapter.start()
    try:
        (drop / "edi-0002.edi").write_bytes((EDI / "edi-0002.edi").read_bytes())
        await asyncio.sleep(1.0)
        assert (drop / "edi-0002.edi").is_file()
        assert not (drop / "error").exists() or not any((drop / "error").iterdir())
        writable(blobs)
        for _ in range(100):
            if not (drop / "edi-0002.edi").exists():
                break
            await asyncio.sleep(0.05)
    finally:
        await adapter.stop()
    assert [p.name for p in (drop / "done").iterdir()] == ["edi-0002.edi"]
