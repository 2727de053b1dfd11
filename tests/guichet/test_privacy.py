"""Personal data: a subject's export, the retention purge, and the tables they must cover."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from guichet import cli, privacy
from guichet.logs import QUIET_LOGGERS, RedactingFilter
from guichet.privacy import (
    EXPORTED,
    JOB_SUBJECTS,
    NOT_PERSONAL,
    PURGE_LINKS,
    PURGED_TABLES,
    REACHED_ELSEWHERE,
    SubjectError,
    export_subject,
    parse_identifier,
    purge_expired,
    safe_name,
    subject_key,
)
from guichet.search import search
from guichet.settings import load_settings
from models import jobs, migrate
from models.blobs import BlobStore
from models.inbound import InboundAttachment, InboundContact
from models.store import Store
from models.tables import (
    AuditEvent,
    Base,
    Beneficiary,
    ChatConversation,
    Contact,
    Contract,
    Delivery,
    Document,
    Dossier,
    Job,
    OutboundMessage,
    SmsOptOut,
    TrainingExample,
)

ROOT = Path(__file__).resolve().parents[2]
#: The commands purge against the real clock: the world is dated from it.
NOW = datetime.now(UTC)
SHARED = b"%PDF-1.4 the same receipt sent by two people"
#: Column names that smell of personal data.
PERSONAL_COLUMN = re.compile(r"email|phone|sender|recipient|visitor|name|address|iban|peer")


@dataclass
class World:
    """Two beneficiaries, their dossiers and contacts on every channel, and a stranger."""

    old: int  # Jean's dossier closed 4000 days ago: to purge
    old_contacts: list[int]
    open_contact: int  # Jean's web chat, on his open dossier
    recent_contact: int  # Marie's, on her dossier closed 10 days ago
    stranger: int
    unique_blobs: list[str]  # referred to by the old dossier's rows only
    shared_blob: str


async def _contact(
    store: Store,
    key: str,
    sender: str,
    *,
    channel: str = "email",
    subject: str = "",
    files: tuple[tuple[str, bytes], ...] = (),
) -> int:
    inbound = InboundContact(
        channel=channel,
        natural_key=key,
        sender=sender,
        subject=subject,
        text=f"message {key}",
        attachments=tuple(InboundAttachment(n, "application/pdf", c) for n, c in files),
    )
    return (await store.accept_contact(inbound, f"raw {key}".encode())).contact_id


async def _world(store: Store) -> World:
    async with store.sessions() as session, session.begin():
        jean = Beneficiary(
            name="Jean Dupont",
            emails=["jean.dupont@example.org", "j.dupont@travail.example"],
            phones=["+33612345678"],
        )
        marie = Beneficiary(name="Marie Curie", emails=["marie@example.net"], phones=[])
        session.add_all([jean, marie])
        await session.flush()
        contracts = [
            Contract(
                number=f"CT{n}",
                product="Voyage",
                beneficiary_id=b.id,
                starts_on=NOW.date(),
                ends_on=NOW.date(),
            )
            for n, b in enumerate((jean, marie))
        ]
        session.add_all(contracts)
        await session.flush()

        def dossier(ref: str, who: Beneficiary, status: str, updated: datetime) -> Dossier:
            return Dossier(
                ref=ref,
                beneficiary_id=who.id,
                contract_id=contracts[0 if who is jean else 1].id,
                claim_type="medical_costs_abroad",
                status=status,
                updated_at=updated,
            )

        old = dossier("AS-2015-000001", jean, "closed", NOW - timedelta(days=4000))
        current = dossier("AS-2026-000002", jean, "open", NOW - timedelta(days=5000))
        recent = dossier("AS-2026-000003", marie, "closed", NOW - timedelta(days=10))
        # Imported already closed: no closing event, its last change counts.
        imported = dossier("AS-2012-000004", marie, "closed", NOW - timedelta(days=5000))
        # Closed long ago, reopened, closed again last week: the last closing counts.
        again = dossier("AS-2014-000005", marie, "closed", NOW - timedelta(days=5))
        session.add_all([old, current, recent, imported, again])
        await session.flush()
        for ref, days in ((old.ref, 4000), (recent.ref, 10), (again.ref, 4500), (again.ref, 5)):
            session.add(
                AuditEvent(
                    at=NOW - timedelta(days=days),
                    actor="lea",
                    action="dossier.closed",
                    object_type="dossier",
                    object_id=ref,
                )
            )
        session.add(
            ChatConversation(
                public_id="conv-jean", token_sha256="0" * 64, visitor_phone="06 12 34 56 78"
            )
        )
        ids = {"old": old.id, "current": current.id, "recent": recent.id}

    c1 = await _contact(
        store,
        "email:1",
        "Jean.Dupont@Example.org",
        subject="Facture zygomorphe",
        files=(("../../etc/passwd", b"%PDF-1.4 jean's own"), ("recu.pdf", SHARED)),
    )
    c2 = await _contact(store, "SM0001", "+33612345678", channel="sms")
    c3 = await _contact(
        store, "email:3", "accueil@clinique.example", files=(("bilan.pdf", b"%PDF clinic"),)
    )
    chat = await _contact(store, "conv-jean:m1", "06 12 34 56 78", channel="chat")
    c4 = await _contact(
        store,
        "email:4",
        "marie@example.net",
        subject="Facture xylophage",
        files=(("recu.pdf", SHARED),),
    )
    stranger = await _contact(store, "email:5", "stranger@example.com")
    attestation = store.blobs.put(b"%PDF attestation for jean")
    async with store.sessions() as session, session.begin():
        for contact_id in (c1, c2, c3):
            (await session.get_one(Contact, contact_id)).dossier_id = ids["old"]
        (await session.get_one(Contact, chat)).dossier_id = ids["current"]
        (await session.get_one(Contact, c4)).dossier_id = ids["recent"]
        for document in await session.scalars(select(Document)):
            document.dossier_id = (await session.get_one(Contact, document.contact_id)).dossier_id
        reply = OutboundMessage(
            idempotency_key="ack:1",
            contact_id=c1,
            dossier_id=ids["old"],
            purpose="attestation",
            template="attestation",
            channel="email",
            language="fr",
            recipient="jean.dupont@example.org",
            subject="Votre attestation",
            body_text="Bonjour",
            headers={"X-Guichet-Attachments": [{"sha256": attestation, "filename": "a.pdf"}]},
        )
        status = OutboundMessage(
            idempotency_key="sms:1",
            purpose="status",
            template="status",
            channel="sms",
            language="fr",
            recipient="+33612345678",
            body_text="Votre dossier avance",
        )
        session.add_all([reply, status])
        await session.flush()
        jobs.enqueue(session, jobs.DELIVER_JOB, reply.id)
        jobs.enqueue(session, jobs.GED_EXPORT_JOB, ids["old"])
        session.add(SmsOptOut(phone="+33612345678", keyword="STOP", contact_id=c2))
        session.add(TrainingExample(actor="lea", contact_id=c1, kind="message", text="x"))
    unique = [store.blobs.put(b"%PDF-1.4 jean's own"), store.blobs.put(b"%PDF clinic")]
    unique += [store.blobs.put(f"raw {k}".encode()) for k in ("email:1", "SM0001", "email:3")]
    return World(
        old=ids["old"],
        old_contacts=[c1, c2, c3],
        open_contact=chat,
        recent_contact=c4,
        stranger=stranger,
        unique_blobs=[*unique, attestation],
        shared_blob=store.blobs.put(SHARED),
    )


# --------------------------------------------------------------------------- export


def _read_export(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return json.loads(files.pop("subject.json").decode("utf-8")), files


async def test_export_gathers_everything_about_one_person(store: Store, tmp_path: Path) -> None:
    world = await _world(store)
    result = await export_subject(store, "  JEAN.dupont@EXAMPLE.org ", tmp_path / "jean.zip")
    assert result is not None
    data, files = _read_export(tmp_path / "jean.zip")

    # His email, SMS and chat (number typed another way), and a clinic's mail on his dossier;
    # neither Marie's nor a stranger's.
    contacts = {c["id"] for c in data["contacts"]}
    assert contacts == {*world.old_contacts, world.open_contact}
    assert {d["ref"] for d in data["dossiers"]} == {"AS-2015-000001", "AS-2026-000002"}
    assert data["subject"]["phones"] == ["+33612345678"]
    assert [b["name"] for b in data["beneficiaries"]] == ["Jean Dupont"]
    assert {m["recipient"] for m in data["outbound_messages"]} == {
        "jean.dupont@example.org",
        "+33612345678",
    }
    assert [o["keyword"] for o in data["sms_opt_outs"]] == ["STOP"]
    assert [c["public_id"] for c in data["chat_conversations"]] == ["conv-jean"]
    assert "token_sha256" not in data["chat_conversations"][0]
    assert len(data["deliveries"]) == 4 and len(data["training_examples"]) == 1
    assert {e["action"] for e in data["audit_events"]} >= {"contact.received", "dossier.closed"}
    assert {e["object_id"] for e in data["audit_events"]}.isdisjoint({"AS-2026-000003"})
    datetime.fromisoformat(data["contacts"][0]["received_at"])
    assert data["counts"] == result.counts and result.counts["documents"] == 3

    # Each file once, under a safe name, byte for byte; a hostile stored name stays a name.
    for document in data["documents"]:
        name = safe_name(document["filename"])
        assert document["file"] == f"documents/{document['id']}-{name}"
        assert files[document["file"]] == store.blobs.get(document["sha256"])
    assert any(name.endswith("-passwd") for name in files)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in files)
    raw = {c["id"]: c["raw_file"] for c in data["contacts"]}
    assert files[raw[world.old_contacts[0]]] == b"raw email:1"
    assert raw[world.old_contacts[1]].endswith(".txt")  # the SMS
    [reply] = [m for m in data["outbound_messages"] if "attachments" in m]
    assert files[reply["attachments"][0]["file"]] == b"%PDF attestation for jean"
    assert result.files == len(files) == 3 + 4 + 1

    async with store.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "subject.exported")
        )
    assert event is not None and event.actor == "cli"
    assert event.object_id == subject_key("jean.dupont@example.org")
    assert sorted(event.after["contacts"]) == sorted(contacts)  # type: ignore[index]
    recorded = json.dumps([event.note, event.after, event.object_id])
    assert "@" not in recorded and "612345678" not in recorded

    # The same person by phone, in the national form.
    by_phone = await export_subject(store, "06 12 34 56 78", tmp_path / "phone.zip")
    assert by_phone is not None
    assert {c["id"] for c in _read_export(tmp_path / "phone.zip")[0]["contacts"]} == contacts
    assert await export_subject(store, "nobody@example.org", tmp_path / "none.zip") is None
    assert not (tmp_path / "none.zip").exists()


def test_identifiers_and_safe_names() -> None:
    assert parse_identifier("<Jean.Dupont@Example.ORG>") == "jean.dupont@example.org"
    assert parse_identifier("+33 (0)6 12 34 56 78") == "+33612345678"
    assert parse_identifier("06.12.34.56.78") == "+33612345678"
    for wrong in ("hello", "jean@", "12"):
        with pytest.raises(SubjectError):
            parse_identifier(wrong)
    assert safe_name("..\\..\\Windows\\évil name?.pdf") == "evil_name_.pdf"
    assert safe_name("../../") == "file" and safe_name(".bashrc") == "bashrc"
    assert safe_name("a" * 300 + ".pdf").endswith("a.pdf") and len(safe_name("a" * 300)) == 100


# --------------------------------------------------------------------------- retention


async def _count(store: Store, model: type[Base], *where: object) -> int:
    async with store.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))  # type: ignore[arg-type]


async def test_purge_deletes_an_old_closed_dossier_and_keeps_the_rest(
    store: Store, tmp_path: Path
) -> None:
    world = await _world(store)
    thumbnail = store.blobs.root / "thumbnails" / f"{world.unique_blobs[0]}.png"
    thumbnail.parent.mkdir(parents=True)
    thumbnail.write_bytes(b"png")
    async with store.sessions() as session:
        assert (await search(session, "zygomorphe")).total == 1
    contacts_before = await _count(store, Contact)

    dry = await purge_expired(store, 3650, now=NOW, dry_run=True)
    assert [d.ref for d in dry.dossiers] == ["AS-2012-000004", "AS-2015-000001"]
    assert dry.blobs == len(world.unique_blobs)
    assert await _count(store, Contact) == contacts_before
    assert all(store.blobs.exists(d) for d in world.unique_blobs)

    report = await purge_expired(store, 3650, now=NOW)
    assert [(d.ref, d.counts) for d in report.dossiers] == [(d.ref, d.counts) for d in dry.dossiers]
    assert report.dossiers[1].counts == {
        "training_examples": 1,
        "sms_opt_outs_unlinked": 1,
        "deliveries": 3,
        "jobs": 5,  # three contacts', the reply's delivery and the GED export
        "audit_events": 4,  # three contact.received and the dossier.closed
        "outbound_messages": 1,
        "documents": 3,
        "contacts": 3,
        "dossiers": 1,
    }
    assert report.blobs == len(world.unique_blobs)
    assert not any(store.blobs.exists(d) for d in world.unique_blobs)
    assert store.blobs.exists(world.shared_blob)  # Marie's kept contact has the same receipt
    assert not thumbnail.exists()

    old = Contact.id.in_(world.old_contacts)
    assert await _count(store, Contact, old) == 0
    assert await _count(store, Document, Document.contact_id.in_(world.old_contacts)) == 0
    assert await _count(store, Delivery, Delivery.contact_id.in_(world.old_contacts)) == 0
    assert await _count(store, OutboundMessage, OutboundMessage.dossier_id == world.old) == 0
    assert await _count(store, Job, Job.subject_id.in_(world.old_contacts)) == 0
    assert await _count(store, Job, Job.kind == jobs.GED_EXPORT_JOB) == 0
    kept = [world.open_contact, world.recent_contact, world.stranger]
    assert await _count(store, Contact, Contact.id.in_(kept)) == 3
    assert await _count(store, Job, Job.subject_id == world.recent_contact) == 1
    assert await _count(store, Dossier) == 3  # open, closed ten days ago, closed again
    async with store.sessions() as session:
        opt_out = await session.scalar(select(SmsOptOut))
        assert opt_out is not None and opt_out.contact_id is None and opt_out.opted_out
        assert (await search(session, "zygomorphe")).total == 0
        assert [h.contact_id for h in (await search(session, "xylophage")).hits] == [
            world.recent_contact
        ]
        events = list(
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "dossier.purged")
                .order_by(AuditEvent.id)
            )
        )
    assert [e.object_id for e in events] == ["AS-2012-000004", "AS-2015-000001"]
    assert events[1].after is not None and events[1].after["contacts"] == 3
    assert "@" not in json.dumps([e.after for e in events] + [e.note for e in events])
    assert (
        await _count(
            store,
            AuditEvent,
            AuditEvent.object_type == "contact",
            AuditEvent.object_id.in_([str(i) for i in world.old_contacts]),
        )
        == 0
    )

    again = await purge_expired(store, 3650, now=NOW)
    assert again.dossiers == [] and again.blobs == 0
    forever = await purge_expired(store, 0, now=NOW + timedelta(days=99999))
    assert forever.cutoff is None and forever.dossiers == []


class MemoryBlobs(BlobStore):
    """Blobs held in memory, as an object store would hold them: there is no folder to reach
    around the interface by, so a caller that tries fails the test."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.objects: dict[str, bytes] = {}
        self.aside: dict[str, bytes] = {}

    @staticmethod
    def _checked(digest: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return digest

    def path_for(self, digest: str) -> Path:
        raise AssertionError("a blob was reached by its path, not through the blob store")

    def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        self.objects.setdefault(digest, content)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self.objects[self._checked(digest)]
        except KeyError:
            raise FileNotFoundError(digest) from None

    def exists(self, digest: str) -> bool:
        return self._checked(digest) in self.objects

    def delete(self, digest: str) -> bool:
        return self.objects.pop(self._checked(digest), None) is not None

    def set_aside(self, digest: str) -> bool:
        if self._checked(digest) not in self.objects:
            return False
        self.aside[digest] = self.objects.pop(digest)
        return True

    def restore(self, digest: str) -> bool:
        if self._checked(digest) not in self.aside:
            return False
        self.objects[digest] = self.aside.pop(digest)
        return True

    def discard(self, digest: str) -> bool:
        return self.aside.pop(self._checked(digest), None) is not None

    def ensure_writable(self) -> None:
        """Memory always takes writes."""


async def test_export_and_purge_reach_blobs_only_through_the_blob_store(
    store: Store, tmp_path: Path
) -> None:
    store.blobs = blobs = MemoryBlobs(tmp_path / "no-such-folder")
    world = await _world(store)

    result = await export_subject(store, "jean.dupont@example.org", tmp_path / "jean.zip")
    assert result is not None and (result.files, result.missing_files) == (8, 0)
    data, files = _read_export(tmp_path / "jean.zip")
    for document in data["documents"]:
        assert files[document["file"]] == blobs.get(document["sha256"])

    report = await purge_expired(store, 3650, now=NOW)
    assert report.blobs == len(world.unique_blobs)
    assert not any(blobs.exists(d) for d in world.unique_blobs)
    assert blobs.exists(world.shared_blob)
    assert blobs.aside == {}
    assert not (tmp_path / "no-such-folder").exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_blob_wanted_again_during_its_removal_is_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal hides the blobs, reads the references again, then restores or discards."""
    blobs = store.blobs
    claimed, rewritten, gone = (blobs.put(c) for c in (b"claimed", b"rewritten", b"gone"))
    first_look = privacy.referenced_blobs
    looks: list[set[str]] = []

    async def racing(session: Any, digests: Any) -> set[str]:
        looks.append(set(digests))
        if len(looks) == 1:
            return await first_look(session, digests)
        # Meanwhile: a contact that found "claimed" before it was hidden committed its row,
        # and one storing "rewritten" found it gone and wrote it again (not committed yet).
        assert not any(blobs.exists(d) for d in (claimed, rewritten, gone))
        blobs.put(b"rewritten")
        return {claimed}

    monkeypatch.setattr(privacy, "referenced_blobs", racing)
    removed = await privacy.remove_unreferenced_blobs(store, [claimed, rewritten, gone])
    assert looks == [{claimed, rewritten, gone}] * 2
    assert removed == 2
    assert blobs.get(claimed) == b"claimed"
    assert blobs.get(rewritten) == b"rewritten"
    assert not blobs.exists(gone)
    assert not [p for p in blobs.root.rglob(".purge-*")]


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """``cli.main`` sets logging up for the process: undo it, other tests share this one."""
    names = [*QUIET_LOGGERS, "alembic.runtime.migration"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for handler in logging.getLogger().handlers:
        for added in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(added)


@pytest.mark.usefixtures("cli_logging")
def test_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("GUICHET_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    migrate.upgrade(settings.effective_database_url)

    async def build() -> None:
        store = Store.open(settings.effective_database_url, settings.blob_dir)
        try:
            await _world(store)
        finally:
            await store.close()

    asyncio.run(build())

    assert cli.main(["export-subject", "+33612345678"]) == 0
    out = capsys.readouterr().out.strip()
    zip_name = f"subject-{subject_key('+33612345678')}.zip"
    assert out.startswith(f"{tmp_path / zip_name}: beneficiaries: 1,") and "contacts: 4" in out
    assert (tmp_path / zip_name).stat().st_mode & 0o077 == 0

    assert cli.main(["export-subject", "nobody@example.org"]) == 1
    assert "nothing is held about this person" in capsys.readouterr().err
    assert cli.main(["export-subject", "not an address"]) == 2

    assert cli.main(["purge", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("would purge AS-2012-000004 (closed ")
    assert lines[1].startswith("would purge AS-2015-000001 (") and "contacts: 3" in lines[1]
    assert lines[2].startswith("2 dossier(s) closed before ")
    assert lines[2].endswith(" would be purged; 6 blob file(s) would be removed")
    assert cli.main(["purge"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("purged AS-2015-000001") and lines[2].endswith(
        "purged; 6 blob file(s) removed"
    )


# --------------------------------------------------------------------------- declarations


def test_every_table_is_exported_or_declared_not_personal() -> None:
    tables = set(Base.metadata.tables)
    declared = [set(EXPORTED), set(NOT_PERSONAL), set(REACHED_ELSEWHERE)]
    assert sum(map(len, declared)) == len(set().union(*declared)), "declared twice"
    assert tables - set().union(*declared) == set(), "add it to EXPORTED or NOT_PERSONAL"
    assert set().union(*declared) <= tables, "a declared table no longer exists"
    # A table declared impersonal must not grow a column that looks personal unseen.
    looks_personal = {
        name: {c.name for c in Base.metadata.tables[name].columns if PERSONAL_COLUMN.search(c.name)}
        for name in NOT_PERSONAL
    }
    assert {k: v for k, v in looks_personal.items() if v} == {
        "user_account": {"username", "display_name"},  # staff
        "edi_interchange": {"sender", "recipient"},  # companies' EDI identifiers
    }


def test_purge_handles_every_link_to_what_it_deletes() -> None:
    links = {
        (table.name, fk.parent.name)
        for table in Base.metadata.tables.values()
        for fk in table.foreign_keys
        if fk.column.table.name in PURGED_TABLES
    }
    assert links == set(PURGE_LINKS), "say in PURGE_LINKS what the purge does with it"


def test_every_job_kind_names_its_subject_table() -> None:
    kinds = set()
    for package in ("guichet", "channels", "intake", "models", "responders"):
        for path in (ROOT / package).rglob("*.py"):
            kinds |= set(re.findall(r'^\w*_JOB = "(\w+)"', path.read_text(), re.M))
    assert kinds and kinds <= set(JOB_SUBJECTS), "say in JOB_SUBJECTS what its subject_id is"
    assert set(JOB_SUBJECTS.values()) <= set(Base.metadata.tables)
