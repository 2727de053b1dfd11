"""Every file of the hostile corpus (tests/data/hostile) through the real intake path, each in
a process of its own under an address-space limit: it must end with a status and a reason for
the contact and each document, within a time bound and a memory bound."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import select

HOSTILE = Path(__file__).parent.parent / "data" / "hostile"
ROOT = Path(__file__).parent.parent.parent
CORPUS = sorted(p.name for p in HOSTILE.iterdir() if p.is_file() and p.suffix != ".py")
DOCUMENT_STATUSES = {"ok", "partial", "encrypted", "refused", "too_large", "timeout", "unreadable"}
#: Bounds for one file on a loaded two-core machine: reading time, then memory. The slowest
#: file (3 000 parts) took 38 to 53 s while other suites ran beside it: the bound leaves room
#: for a busy CI host, and still catches a hang or a quadratic blow-up.
SECONDS = 90
#: Peak resident memory of the intake process, over what importing everything costs; and the
#: address-space limit under which a runaway allocation fails instead of swapping the host.
MEMORY_GROWTH_MB = 600
ADDRESS_SPACE_MB = 6144
#: What each file must come to, where the file decides it: (filename, status, reason start).
EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "encrypted.pdf": [("encrypted.pdf", "encrypted", "PDF is encrypted")],
    "zip-bomb.zip": [("zip-bomb.zip", "refused", "zip bomb")],
    "png-bomb.png": [("png-bomb.png", "too_large", "")],
    "truncated.jpg": [("truncated.jpg", "unreadable", "")],
    # 500 blank pages took 63 s (two Tesseract runs per page) before blank pages were skipped.
    "blank-500-pages.pdf": [("blank-500-pages.pdf", "partial", "only the first 50 of 500 pages")],
    "path-traversal.eml": [("passwd", "ok", ""), ("shadow", "ok", ""), ("boot.ini", "ok", "")],
    "tnef.eml": [("facture.txt", "ok", ""), ("cut.dat", "unreadable", "")],
}
#: A contact's reason is read by a person: 3 000 uncertain parts once made it 200 KB long.
MAX_REASON = 4000


# --------------------------------------------------------------------------- the child process


async def _intake(name: str, work: Path) -> dict[str, Any]:
    """Store the file the way its channel would, run every pending job, report the outcome."""
    from channels.email_smtp import ingest_email
    from guichet.service import build_runner
    from guichet.settings import load_settings
    from intake.reading import OcrPool
    from models import migrate
    from models.blobs import BlobStore
    from models.db import create_engine
    from models.inbound import InboundAttachment, InboundContact
    from models.store import Store
    from models.tables import Contact, Document
    from tests.conftest import Relay, free_port

    url = f"sqlite+aiosqlite:///{work / 'guichet.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    store = Store(create_engine(url), BlobStore(work / "blobs"))
    loop = asyncio.get_running_loop()
    relay = Relay("127.0.0.1", free_port())
    server = await loop.create_server(
        lambda: SMTP(relay, hostname="relay.test", loop=loop), relay.host, relay.port
    )
    ocr = OcrPool(1)
    try:
        settings = load_settings(
            environ={}, smtp_relay=f"{relay.host}:{relay.port}", job_backoff_seconds=0, home=work
        )
        runner = build_runner(settings, store, ocr)
        content = (HOSTILE / name).read_bytes()
        started = time.monotonic()
        if name.endswith(".eml"):
            accepted, _ = await ingest_email(store, content)
        else:
            inbound = InboundContact(
                channel="email",
                natural_key=f"email:{name}@hostile.example",
                sender="jean.dupont@example.org",
                subject=f"Pièce jointe {name}",
                text="Bonjour, voici le document.",
                attachments=(InboundAttachment(name, "application/octet-stream", content),),
            )
            accepted = await store.accept_contact(inbound, content)
        await runner.run_pending()
        seconds = time.monotonic() - started
        async with store.sessions() as session:
            contact = await session.get_one(Contact, accepted.contact_id)
            documents = (
                await session.scalars(
                    select(Document)
                    .where(Document.contact_id == contact.id)
                    .order_by(Document.position)
                )
            ).all()
            assert contact.raw_sha256 is not None
            raw = await store.raw_content(contact.raw_sha256, session)
            return {
                "seconds": seconds,
                "raw_kept": raw == content,
                "contact": [contact.status, contact.status_reason, contact.defects],
                "documents": [
                    [d.filename, d.status, d.reason, d.sha256, d.size, d.depth] for d in documents
                ],
            }
    finally:
        ocr.shutdown()
        server.close()
        await server.wait_closed()
        await store.close()


def _child(name: str, work: str) -> None:
    limit = ADDRESS_SPACE_MB * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Import what intake needs before measuring: the libraries' own footprint is not the file's.
    import guichet.service  # noqa: F401
    import intake.reading  # noqa: F401

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = asyncio.run(_intake(name, Path(work)))
    report["baseline_kb"] = max(baseline, imported)
    report["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report["ocr_peak_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(report))


# --------------------------------------------------------------------------- the tests


def _run(name: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.intake.test_hostile_corpus", name, str(work)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SECONDS * 3,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_the_corpus_is_what_make_py_builds() -> None:
    assert set(CORPUS) >= {
        "malformed.pdf",
        "encrypted.pdf",
        "blank-500-pages.pdf",
        "zip-bomb.zip",
        "png-bomb.png",
        "truncated.jpg",
        "uuencode.eml",
        "tnef.eml",
        "broken-charsets.eml",
        "3000-parts.eml",
        "path-traversal.eml",
    }
    assert sum((HOSTILE / n).stat().st_size for n in CORPUS) < 3 * 1024 * 1024


@pytest.mark.timeout(SECONDS * 4)
@pytest.mark.parametrize("name", CORPUS)
def test_each_hostile_file_ends_with_a_status_in_bounded_time_and_memory(
    name: str, tmp_path: Path
) -> None:
    report = _run(name, tmp_path)
    assert report["seconds"] < SECONDS, report["seconds"]
    growth_mb = (report["peak_kb"] - report["baseline_kb"]) / 1024
    assert growth_mb < MEMORY_GROWTH_MB, growth_mb
    assert report["ocr_peak_kb"] / 1024 < MEMORY_GROWTH_MB + 400, report["ocr_peak_kb"]
    assert report["raw_kept"]

    status, reason, _ = report["contact"]
    assert status in ("processed", "needs_review", "failed"), report["contact"]
    if status != "processed":
        assert reason, report["contact"]
    assert len(reason or "") < MAX_REASON, len(reason)
    for filename, doc_status, doc_reason, digest, size, _depth in report["documents"]:
        assert doc_status in DOCUMENT_STATUSES, (filename, doc_status)
        if doc_status != "ok":
            assert doc_reason, (filename, doc_status)
        assert filename and "/" not in filename and "\\" not in filename
        assert filename not in (".", "..")
        assert len(digest) == 64 and size >= 0
    found = {d[0]: (d[1], d[2] or "") for d in report["documents"]}
    for filename, expected, reason_start in EXPECTED.get(name, []):
        assert filename in found, found
        assert found[filename][0] == expected, found[filename]
        assert found[filename][1].startswith(reason_start), found[filename]
    _blobs_are_only_named_by_their_hash(tmp_path / "blobs")
    # Nothing was written beside the work folder under an attachment's name.
    assert sorted(p.name for p in tmp_path.iterdir()) <= ["blobs", "guichet.sqlite3"] + [
        p.name for p in tmp_path.iterdir() if p.name.startswith("guichet.sqlite3")
    ]


def _blobs_are_only_named_by_their_hash(root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.relative_to(root).parts == (digest[:2], digest[2:4], digest), path


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
