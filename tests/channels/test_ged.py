"""GED drops through the real intake pipeline, and dossier exports on close and by the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from channels.ged import (
    DossierNotFound,
    GedDrop,
    GedExport,
    export_dossier,
    ged_contact,
    read_sidecar,
)
from classifiers.corpus import DOC_TYPES
from guichet.parts import open_store
from guichet.service import build_runner
from guichet.settings import PROJECT_ROOT, load_settings
from guichet.wiring import build_channels
from intake.closing import UnknownDossier, close_dossier
from intake.reading import OcrPool
from intake.runner import JobRunner
from models import migrate
from models.blobs import BlobStore
from models.db import create_engine
from models.jobs import GED_EXPORT_JOB, ClaimedJob
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from models.tables import (
    AuditEvent,
    Contact,
    Delivery,
    Document,
    Dossier,
    Job,
    OutboundMessage,
)
from tests.conftest import Relay
from tests.guichet.service import GuichetProcess

DOCS = Path(__file__).parent.parent / "data" / "documents"
QUOTE = DOCS / "quote-text-layer.pdf"


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(1)
    yield pool
    pool.shutdown()


@pytest.fixture
async def demo_store(store: Store) -> Store:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
    return store


def _runner(store: Store, ocr: OcrPool, relay: Relay, home: Path) -> JobRunner:
    settings = load_settings(
        environ={},
        smtp_relay=f"{relay.host}:{relay.port}",
        job_backoff_seconds=0,
        home=str(home),
    )
    # The channels as the service wires them: the GED export handler among them.
    return build_runner(
        settings, store, ocr, channels=build_channels(settings, store, lambda: None)
    )


def _drop(store: Store, folder: Path) -> GedDrop:
    # Stable at once: the watcher's timing is tested in test_drops; here one pass takes all.
    return GedDrop(store, folder, doc_types=DOC_TYPES, stable_seconds=0, poll_seconds=0.05)


def _put(folder: Path, name: str, source: Path, sidecar: dict[str, Any] | str | None) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / name)
    if sidecar is not None:
        text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
        (folder / f"{name}.json").write_text(text, encoding="utf-8")
    return source.read_bytes()


async def _contacts(store: Store) -> list[Contact]:
    async with store.sessions() as session:
        rows = await session.scalars(select(Contact).order_by(Contact.id))
        contacts = list(rows)
        for contact in contacts:
            await session.refresh(contact, ["documents", "dossier"])
        return contacts


async def test_a_pdf_with_its_sidecar_is_labelled_by_the_person_not_the_machine(
    demo_store: Store, ocr: OcrPool, relay: Relay, tmp_path: Path
) -> None:
    drops = tmp_path / "ged"
    content = _put(
        drops,
        "courrier-0001.pdf",
        QUOTE,
        {
            # The scan is a quote to the machine; the mailroom filed it as an invoice of
            # Amina Benali's dossier: the person wins on both counts.
            "dossier_ref": "as-2026-000002",
            "doc_type": "invoice",
            "received_at": "2026-11-02T09:30:00+01:00",
            "source": "courrier-lyon",
        },
    )
    assert await _drop(demo_store, drops).watcher.poll_once() == 1
    assert sorted(p.name for p in (drops / "done").iterdir()) == [
        "courrier-0001.pdf",
        "courrier-0001.pdf.json",
    ]
    assert [p.name for p in drops.iterdir()] == ["done"]

    assert await _runner(demo_store, ocr, relay, tmp_path / "home").run_pending() >= 1
    [contact] = await _contacts(demo_store)
    assert (contact.channel, contact.sender, contact.subject) == (
        "ged",
        "courrier-lyon",
        "courrier-0001.pdf",
    )
    assert contact.natural_key == hashlib.sha256(content).hexdigest()
    assert contact.sent_at == datetime(2026, 11, 2, 8, 30, tzinfo=UTC)
    assert contact.step == "done"
    assert contact.dossier is not None and contact.dossier.ref == "AS-2026-000002"
    assert contact.match_rule == "labelled AS-2026-000002 by courrier-lyon"
    # Filed to a dossier by a person: a document for it, no intent left to doubt.
    assert (contact.intent, contact.intent_confidence) == ("document_submission", 1.0)
    assert contact.status == "processed", contact.status_reason
    [document] = contact.documents
    assert (document.doc_type, document.doc_type_confidence) == ("invoice", 1.0)
    assert document.doc_type_hint == "invoice"
    assert document.dossier_id == contact.dossier_id
    assert document.text_source == "text_layer"
    assert demo_store.blobs.get(document.sha256) == content
    async with demo_store.sessions() as session:
        # The mailroom that dropped the scan is never written back to.
        to_mailroom = select(OutboundMessage).where(OutboundMessage.recipient == "courrier-lyon")
        assert (await session.scalars(to_mailroom)).all() == []


async def test_without_a_sidecar_the_machine_classifies(
    demo_store: Store, ocr: OcrPool, relay: Relay, tmp_path: Path
) -> None:
    drops = tmp_path / "ged"
    _put(drops, "scan.pdf", QUOTE, None)
    assert await _drop(demo_store, drops).watcher.poll_once() == 1
    await _runner(demo_store, ocr, relay, tmp_path / "home").run_pending()
    [contact] = await _contacts(demo_store)
    assert (contact.sender, contact.sent_at, contact.dossier_hint) == ("mailroom", None, None)
    [document] = contact.documents
    assert document.doc_type_hint is None
    assert document.doc_type == "quote"
    assert document.doc_type_confidence is not None and document.doc_type_confidence < 1.0
    # Nobody said which dossier: the machine's rules decided, and recorded how.
    assert contact.match_rule is not None and not contact.match_rule.startswith("labelled")


async def test_a_label_naming_no_dossier_goes_to_review(
    demo_store: Store, ocr: OcrPool, relay: Relay, tmp_path: Path
) -> None:
    drops = tmp_path / "ged"
    _put(drops, "scan.pdf", QUOTE, {"dossier_ref": "AS-2026-999999"})
    await _drop(demo_store, drops).watcher.poll_once()
    await _runner(demo_store, ocr, relay, tmp_path / "home").run_pending()
    [contact] = await _contacts(demo_store)
    assert contact.dossier_id is None and contact.status == "needs_review"
    assert contact.status_reason is not None
    assert "labelled dossier AS-2026-999999 does not exist" in contact.status_reason


BAD_SIDECARS: list[tuple[dict[str, Any] | str, str]] = [
    ('{"dossier_ref": "AS-2026-000001",', "Invalid JSON"),
    ('["AS-2026-000001"]', "sidecar: Input should be an object"),
    ({"dossier_ref": 12}, "dossier_ref: Input should be a valid string"),
    ({"dossier_ref": "dossier 12"}, "is not a dossier reference"),
    ({"dosier_ref": "AS-2026-000001"}, "dosier_ref: Extra inputs are not permitted"),
    ({"doc_type": "pizza"}, "doc_type: 'pizza' is not one of bank_details"),
    ({"received_at": "2026-11-02T09:30:00"}, "received_at: Value error, needs a timezone"),
    ({"received_at": "yesterday"}, "received_at: Input should be a valid datetime"),
    ({"source": "  "}, "source: Value error, is empty"),
]


async def test_a_bad_sidecar_sends_both_files_to_error_with_the_reason(
    store: Store, tmp_path: Path
) -> None:
    # One folder, one pass: each bad file goes to error/ and never stops the next one.
    drops = tmp_path / "ged"
    contents = {
        f"scan-{n}.pdf": _put(drops, f"scan-{n}.pdf", QUOTE, sidecar)
        for n, (sidecar, _) in enumerate(BAD_SIDECARS)
    }
    assert await _drop(store, drops).watcher.poll_once() == len(BAD_SIDECARS)
    error = drops / "error"
    for n, (_, reason) in enumerate(BAD_SIDECARS):
        name = f"scan-{n}.pdf"
        assert (error / name).read_bytes() == contents[name]
        assert (error / f"{name}.json").exists()
        written = (error / f"{name}.reason.txt").read_text(encoding="utf-8")
        assert written.startswith(f"{name}.json: ") and reason in written, written
    assert [p.name for p in drops.iterdir()] == ["error"]
    assert await _contacts(store) == []


async def test_an_empty_file_is_refused_with_a_reason(store: Store, tmp_path: Path) -> None:
    drops = tmp_path / "ged"
    drops.mkdir()
    (drops / "blank.pdf").write_bytes(b"")
    await _drop(store, drops).watcher.poll_once()
    assert (drops / "error" / "blank.pdf.reason.txt").read_text() == "the file is empty\n"


async def test_the_same_file_twice_is_one_contact(store: Store, tmp_path: Path) -> None:
    drops = tmp_path / "ged"
    drop = _drop(store, drops)
    _put(drops, "scan.pdf", QUOTE, None)
    await drop.watcher.poll_once()
    # The mailroom scans nothing new but drops the same file again, under the same name.
    _put(drops, "scan.pdf", QUOTE, {"source": "courrier-lyon"})
    await drop.watcher.poll_once()
    [contact] = await _contacts(store)
    assert contact.duplicate_count == 1
    async with store.sessions() as session:
        deliveries = await session.scalar(select(func.count()).select_from(Delivery))
    assert deliveries == 2
    assert sorted(p.name for p in (drops / "done").iterdir()) == [
        "scan-2.pdf",
        "scan-2.pdf.json",
        "scan.pdf",
    ]


async def test_a_store_that_cannot_write_leaves_the_file_for_later(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_text("blobs cannot go here")
    broken = Store(create_engine(database_url), BlobStore(tmp_path / "not-a-folder"))
    try:
        drops = tmp_path / "ged"
        _put(drops, "scan.pdf", QUOTE, {"doc_type": "quote"})
        await _drop(broken, drops).watcher.poll_once()
    finally:
        await broken.close()
    assert sorted(p.name for p in drops.iterdir()) == ["scan.pdf", "scan.pdf.json"]


async def _ged_contact_in(store: Store, ref: str, name: str, source: Path) -> bytes:
    content = await asyncio.to_thread(source.read_bytes)
    sidecar = read_sidecar(json.dumps({"dossier_ref": ref}).encode(), DOC_TYPES)
    await store.accept_contact(ged_contact(name, content, sidecar), content)
    return content


def _check_export(folder: Path, ref: str, files: dict[str, bytes]) -> None:
    manifest = json.loads((folder / ref / "dossier.json").read_text(encoding="utf-8"))
    assert manifest["dossier_ref"] == ref
    assert len(manifest["documents"]) == len(files)
    for exported in manifest["documents"]:
        content = (folder / ref / exported).read_bytes()
        metadata = json.loads((folder / ref / f"{exported}.json").read_text(encoding="utf-8"))
        assert files[metadata["filename"]] == content
        assert metadata["sha256"] == hashlib.sha256(content).hexdigest()
        assert metadata["size"] == len(content)
        assert metadata["dossier_ref"] == ref
        assert metadata["contact"]["channel"] == "ged"
        assert exported == f"{metadata['document_id']:06d}-{metadata['filename']}"
        assert datetime.fromisoformat(metadata["received_at"]).tzinfo is not None


async def test_closing_a_dossier_exports_it_through_a_durable_job(
    demo_store: Store, ocr: OcrPool, relay: Relay, tmp_path: Path
) -> None:
    ref = "AS-2026-000001"
    files = {
        "devis.pdf": await _ged_contact_in(demo_store, ref, "devis.pdf", QUOTE),
        "rib.tif": await _ged_contact_in(demo_store, ref, "rib.tif", DOCS / "rib-fax.tif"),
    }
    # Another dossier's document with the same name lands in another folder.
    await _ged_contact_in(demo_store, "AS-2026-000002", "devis.pdf", DOCS / "quote-scanned.pdf")
    home = tmp_path / "home"
    runner = _runner(demo_store, ocr, relay, home)
    await runner.run_pending()

    async with demo_store.sessions() as session, session.begin():
        dossier = await close_dossier(session, ref, "user:alice")
        assert dossier.status == "closed"
    async with demo_store.sessions() as session, session.begin():
        await close_dossier(session, ref, "user:alice")  # a double click changes nothing
        with pytest.raises(UnknownDossier):
            await close_dossier(session, "AS-2026-424242", "user:alice")
    async with demo_store.sessions() as session:
        [job] = (await session.scalars(select(Job).where(Job.kind == GED_EXPORT_JOB))).all()
        [event] = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "dossier.closed"))
        ).all()
        assert (event.actor, event.object_id, event.after) == (
            "user:alice",
            ref,
            {"status": "closed"},
        )
    assert await runner.run_pending() == 1
    root = home / "ged-export"
    _check_export(root, ref, files)
    assert not (root / "AS-2026-000002").exists()
    async with demo_store.sessions() as session:
        assert (await session.get_one(Job, job.id)).status == "done"

    # A replayed job rewrites the very same files, and nothing else.
    before = {p.name: p.read_bytes() for p in (root / ref).iterdir()}
    await GedExport(demo_store, root).run(ClaimedJob(job.id, GED_EXPORT_JOB, job.subject_id, 2))
    assert {p.name: p.read_bytes() for p in (root / ref).iterdir()} == before


async def test_export_of_an_unknown_dossier_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(DossierNotFound, match="no dossier AS-2026-000009"):
        await export_dossier(store, tmp_path, ref="AS-2026-000009")
    assert not any(n.startswith("AS-") for n in await asyncio.to_thread(os.listdir, tmp_path))


async def test_a_parked_export_is_an_audit_event(store: Store) -> None:
    async with store.sessions() as session, session.begin():
        dossier = Dossier(ref="AS-2026-000077", claim_type="towing")
        session.add(dossier)
        await session.flush()
        await GedExport(store, Path("unused")).on_parked(
            session, ClaimedJob(1, GED_EXPORT_JOB, dossier.id, 5), "blob missing"
        )
    async with store.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "dossier.export_failed")
        )
    assert event is not None and event.object_id == "AS-2026-000077"
    assert event.note == "GED export failed after 5 attempts: blob missing"


async def test_cli_exports_on_demand_and_refuses_an_unknown_dossier(
    tmp_path: Path, ocr: OcrPool, relay: Relay
) -> None:
    home = tmp_path / "home"
    settings = load_settings(environ={}, home=str(home))
    await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
    store = open_store(settings)
    try:
        async with store.sessions() as session, session.begin():
            await load_reference_data(
                session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
            )
        content = await _ged_contact_in(store, "AS-2026-000003", "facture.pdf", QUOTE)
        await _runner(store, ocr, relay, home).run_pending()
    finally:
        await store.close()

    guichet = GuichetProcess(home, relay.port)
    result = await asyncio.to_thread(guichet.cli, "ged-export", "AS-2026-000003")
    assert result.returncode == 0, result.stderr
    folder = home / "ged-export" / "AS-2026-000003"
    printed = [Path(line) for line in result.stdout.splitlines()]
    assert sorted(p.name for p in printed) == sorted(p.name for p in folder.iterdir())
    assert len(printed) == 3  # the document, its metadata, the manifest
    _check_export(home / "ged-export", "AS-2026-000003", {"facture.pdf": content})

    missing = await asyncio.to_thread(guichet.cli, "ged-export", "AS-2026-999999")
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith("guichet: no dossier AS-2026-999999")
    assert missing.stdout == ""
    assert not (home / "ged-export" / "AS-2026-999999").exists()


def test_wiring_adds_the_drop_only_when_configured(tmp_path: Path) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "blobs")
    try:
        off = build_channels(load_settings(environ={}, home=str(tmp_path)), store, lambda: None)
        on = build_channels(
            load_settings(environ={}, home=str(tmp_path), ged_drop="scans"),
            store,
            lambda: None,
        )
    finally:
        asyncio.run(store.close())
    assert not any(isinstance(a, GedDrop) for a in off.adapters)
    [drop] = [a for a in on.adapters if isinstance(a, GedDrop)]
    assert drop.watcher.folder == tmp_path / "scans"
    assert [h.kind for h in on.handlers if isinstance(h, GedExport)] == [GED_EXPORT_JOB]
    assert [h.root for h in off.handlers if isinstance(h, GedExport)] == [tmp_path / "ged-export"]


async def test_documents_keep_their_labels_in_the_store(store: Store) -> None:
    content = QUOTE.read_bytes()
    sidecar = read_sidecar(b'{"doc_type": "quote", "dossier_ref": "AS-2026-000001"}', DOC_TYPES)
    accepted = await store.accept_contact(ged_contact("q.pdf", content, sidecar), content)
    async with store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        document = await session.scalar(select(Document).where(Document.contact_id == contact.id))
    assert contact.dossier_hint == "AS-2026-000001"
    assert document is not None and document.doc_type_hint == "quote"
