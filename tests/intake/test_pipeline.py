"""A contact through extract, match and respond, with delivery to a real SMTP relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from channels.email_message import parse_email
from channels.email_smtp import ingest_email
from guichet.service import build_runner
from guichet.settings import PROJECT_ROOT, load_settings
from intake.pipeline import ContactPipeline, unpack
from intake.reading import OcrPool
from intake.runner import JobRunner
from models.inbound import InboundAttachment, InboundContact
from models.jobs import CONTACT_JOB
from models.reference import load_reference_data, read_reference_file
from models.store import Envelope, Store
from models.tables import AuditEvent, Contact, Job, OutboundMessage
from tests.conftest import Relay

DOCS = Path(__file__).parent.parent / "data" / "documents"
#: These tests follow the acknowledgement; the other replies are tested in tests/responders.
ACK = OutboundMessage.purpose == "acknowledgement"


def _acks(relay: Relay) -> list[tuple[Any, EmailMessage]]:
    return [(e, m) for e, m in relay.received if ".acknowledgement@" in str(m["Message-ID"])]


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(2)
    yield pool
    pool.shutdown()


@pytest.fixture
async def demo_store(store: Store) -> Store:
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
    return store


def _runner(store: Store, ocr: OcrPool, relay: Relay, backoff: float = 0) -> JobRunner:
    settings = load_settings(
        environ={},
        smtp_relay=f"{relay.host}:{relay.port}",
        job_backoff_seconds=backoff,
        home="unused",
    )
    return build_runner(settings, store, ocr)


def _mail(
    key: str,
    subject: str,
    text: str,
    *attachments: InboundAttachment,
    sender: str = "jean.dupont@example.org",
    sender_name: str = "Jean Dupont",
    **extra: object,
) -> InboundContact:
    return InboundContact(
        channel="email",
        natural_key=f"email:{key}",
        message_id=key,
        sender=sender,
        sender_name=sender_name,
        subject=subject,
        text=text,
        sent_at=datetime(2026, 11, 2, tzinfo=UTC),
        attachments=attachments,
        **extra,  # type: ignore[arg-type]
    )


async def test_reference_in_a_scanned_document_attaches_and_acknowledges(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    scan = InboundAttachment(
        "releve.jpg", "image/jpeg", (DOCS / "statement-photo.jpg").read_bytes()
    )
    text_layer = InboundAttachment(
        "devis.pdf", "application/pdf", (DOCS / "quote-text-layer.pdf").read_bytes()
    )
    accepted = await demo_store.accept_contact(
        _mail(
            "m1@example.org",
            "Remboursement",
            "Bonjour, voici mes justificatifs pour le dossier as 2026 000001.",
            scan,
            text_layer,
        ),
        b"raw",
    )
    runner = _runner(demo_store, ocr, relay)
    # The contact, then its replies (the acknowledgement, and what else the dossier needs).
    assert await runner.run_pending() >= 2
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert (contact.status, contact.step, contact.language) == ("processed", "done", "fr")
        assert contact.match_rule == "reference AS-2026-000001 in body"
        await session.refresh(contact, ["documents", "dossier"])
        assert contact.dossier is not None and contact.dossier.ref == "AS-2026-000001"
        assert [(d.status, d.text_source, d.dossier_id) for d in contact.documents] == [
            ("ok", "ocr", contact.dossier_id),
            ("ok", "text_layer", contact.dossier_id),
        ]
        assert "58,88" in contact.documents[0].text
        reply = await session.scalar(select(OutboundMessage).where(ACK))
        assert reply is not None and reply.status == "sent" and reply.sent_at is not None
    [(envelope, message)] = _acks(relay)
    assert envelope.mail_from == "<>" and envelope.rcpt_tos == ["jean.dupont@example.org"]
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<m1@example.org>"
    assert message["References"] == "<m1@example.org>"
    assert message["Subject"] == "[AS-2026-000001] Accusé de réception : Remboursement"
    assert message["Message-ID"] == f"<{reply.message_id}>"
    body = message.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert "rattaché à votre dossier AS-2026-000001" in content and "releve.jpg" in content


async def test_reference_found_only_in_a_document(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    note = InboundAttachment("note.txt", "text/plain", b"Mon dossier : AS2026000002")
    accepted = await demo_store.accept_contact(
        _mail(
            "m2@example.org",
            "Hello",
            "Please find attached my note. Thanks",
            note,
            # AS-2026-000002 is Amina Benali's dossier: only she (or a thread) attaches to it.
            sender="Amina.Benali@example.net",
            sender_name="Amina Benali",
        ),
        b"raw",
    )
    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.match_rule == "reference AS-2026-000002 in document note.txt"
        assert contact.language == "en"
    [(_, message)] = _acks(relay)
    assert message["Subject"] == "[AS-2026-000002] Acknowledgement of receipt: Hello"


@pytest.mark.parametrize(
    ("sender", "text", "reason"),
    [
        (
            "inconnu@example.com",
            "Bonjour, voici ma facture.",
            "no dossier reference found; unknown sender inconnu@example.com",
        ),
        (
            "jean.dupont@example.org",
            "Dossier AS-2026-999999",
            "quoted reference not found: AS-2026-999999",
        ),
        (
            "jean.dupont@example.org",
            "AS-2026-000001 et AS-2026-000002",
            "reference AS-2026-000002 quoted by jean.dupont@example.org who is not party to"
            " that dossier",
        ),
        (
            "garage@example.com",
            "Facture pour le dossier AS-2026-000002",
            "reference AS-2026-000002 quoted by garage@example.com who is not party to"
            " that dossier",
        ),
    ],
)
async def test_no_single_dossier_goes_to_review_and_still_gets_acknowledged(
    demo_store: Store, ocr: OcrPool, relay: Relay, sender: str, text: str, reason: str
) -> None:
    accepted = await demo_store.accept_contact(
        _mail("m3@example.org", "Facture", text, sender=sender), b"raw"
    )
    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert (contact.status, contact.status_reason, contact.dossier_id) == (
            "needs_review",
            reason,
            None,
        )
    [(_, message)] = relay.received
    assert message["Subject"] == "Accusé de réception : Facture"


async def test_automatic_messages_get_no_reply(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    accepted = await demo_store.accept_contact(
        _mail(
            "m4@example.org",
            "Absent",
            "Je suis absent. AS-2026-000001",
            automatic_reason="Auto-Submitted: auto-replied",
        ),
        b"raw",
    )
    assert await _runner(demo_store, ocr, relay).run_pending() == 1
    assert relay.received == []
    async with demo_store.sessions() as session:
        note = await session.scalar(
            select(AuditEvent.note).where(
                AuditEvent.action == "reply.skipped",
                AuditEvent.object_id == str(accepted.contact_id),
            )
        )
    assert note == "automatic message (Auto-Submitted: auto-replied): never answered automatically"


async def test_replayed_steps_never_queue_a_second_acknowledgement(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    accepted = await demo_store.accept_contact(
        _mail("m5@example.org", "AS-2026-000001", "Bonjour"), b"raw"
    )
    runner = _runner(demo_store, ocr, relay)
    await runner.run_pending()
    sent = len(relay.received)
    async with demo_store.sessions() as session:
        replies = await session.scalar(select(func.count()).select_from(OutboundMessage))
    # As if the process had died after the reply was queued but before the step was recorded.
    async with demo_store.sessions() as session, session.begin():
        await session.execute(update(Contact).values(step="match"))
        await session.execute(update(Job).where(Job.kind == "contact").values(status="pending"))
    await runner.run_pending()
    async with demo_store.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(OutboundMessage))
        assert count == replies
        acks = await session.scalar(select(func.count()).select_from(OutboundMessage).where(ACK))
        assert acks == 1
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.step == "done"
    assert len(relay.received) == sent and len(_acks(relay)) == 1


async def test_relay_down_retries_then_delivers_once(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await demo_store.accept_contact(_mail("m6@example.org", "AS-2026-000001", "Bonjour"), b"raw")
    runner = _runner(demo_store, ocr, relay, backoff=3600)
    relay.refuse_with = "451 4.3.0 try later"
    await runner.run_pending()
    assert await runner.run_pending() == 0  # waiting for its backoff
    async with demo_store.sessions() as session:
        reply = await session.scalar(select(OutboundMessage).where(ACK))
        assert reply is not None
        assert (reply.status, reply.status_reason) == (
            "queued",
            "relay answered 451 4.3.0 try later",
        )
    relay.refuse_with = None
    async with demo_store.sessions() as session, session.begin():
        await session.execute(update(Job).values(run_after=datetime.now(UTC)))
    await runner.run_pending()
    async with demo_store.sessions() as session:
        reply = await session.scalar(select(OutboundMessage).where(ACK))
        assert reply is not None and reply.status == "sent" and reply.attempts == 2
    assert len(_acks(relay)) == 1


async def test_permanent_refusal_fails_the_reply_without_retrying(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    await demo_store.accept_contact(_mail("m7@example.org", "AS-2026-000001", "Bonjour"), b"raw")
    relay.refuse_with = "550 5.1.1 no such user"
    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        reply = await session.scalar(select(OutboundMessage).where(ACK))
        assert reply is not None
        assert (reply.status, reply.status_reason, reply.attempts) == (
            "failed",
            "relay answered 550 5.1.1 no such user",
            1,
        )


async def test_crash_during_hand_off_is_uncertain_not_sent_twice(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    accepted = await demo_store.accept_contact(
        _mail("m8@example.org", "AS-2026-000001", "Bonjour"), b"raw"
    )
    runner = _runner(demo_store, ocr, relay)
    # Run the contact job only, then leave the reply as a dead process would have.
    handlers = runner.handlers
    runner.handlers = {"contact": handlers["contact"]}
    await runner.run_pending()
    runner.handlers = handlers
    async with demo_store.sessions() as session, session.begin():
        await session.execute(update(OutboundMessage).where(ACK).values(status="sending"))
    await runner.run_pending()
    assert _acks(relay) == []
    async with demo_store.sessions() as session:
        reply = await session.scalar(select(OutboundMessage).where(ACK))
        assert reply is not None and reply.status == "uncertain"
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.status == "needs_review"
        assert (
            contact.status_reason == "acknowledgement delivery uncertain: check and resend by hand"
        )


async def test_a_contact_that_keeps_failing_is_parked_and_the_others_go_on(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    lost = InboundAttachment("perdu.pdf", "application/pdf", b"%PDF-1.4 lost")
    broken = await demo_store.accept_contact(
        _mail("m9@example.org", "AS-2026-000001", "x", lost), b"r"
    )
    fine = await demo_store.accept_contact(
        _mail("m10@example.org", "AS-2026-000001", "Où en est mon remboursement ?"), b"r2"
    )
    # The blob vanished (a disk replaced without its backup): reading it fails every time.
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, broken.contact_id)
        await session.refresh(contact, ["documents"])
        demo_store.blobs.path_for(contact.documents[0].sha256).unlink()
    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        failed = await session.get_one(Contact, broken.contact_id)
        assert failed.status == "failed"
        assert failed.status_reason is not None
        assert failed.status_reason.startswith(
            "step extract failed after 5 attempts: FileNotFoundError"
        )
        job = await session.scalar(
            select(Job).where(Job.kind == "contact", Job.subject_id == broken.contact_id)
        )
        assert job is not None and job.status == "failed"
        ok = await session.get_one(Contact, fine.contact_id)
        assert ok.status == "processed"
    assert len(_acks(relay)) == 1


async def test_zip_members_become_child_documents_of_the_contact(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    from models.tables import Document
    from tests.intake.files import zip_of

    archive = zip_of(
        {
            "justificatifs/devis.pdf": (DOCS / "quote-text-layer.pdf").read_bytes(),
            "justificatifs/releve.jpg": (DOCS / "statement-photo.jpg").read_bytes(),
        }
    )
    accepted = await demo_store.accept_contact(
        _mail(
            "m11@example.org",
            "AS-2026-000001",
            "Mes justificatifs",
            InboundAttachment("justificatifs.zip", "application/zip", archive),
        ),
        b"raw",
    )
    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.status == "processed"
        documents = (
            await session.scalars(
                select(Document)
                .where(Document.contact_id == contact.id)
                .order_by(Document.position)
            )
        ).all()
        zipped, quote, photo = documents
        assert [
            (d.filename, d.status, d.depth, d.position, d.declared_type) for d in documents
        ] == [
            ("justificatifs.zip", "ok", 0, 0, "application/zip"),
            ("devis.pdf", "ok", 1, 1, "application/pdf"),
            ("releve.jpg", "ok", 1, 2, "image/jpeg"),
        ]
        assert (zipped.parent_id, quote.parent_id, photo.parent_id) == (None, zipped.id, zipped.id)
        assert (quote.text_source, photo.text_source) == ("text_layer", "ocr")
        assert "58,88" in photo.text
        assert demo_store.blobs.get(photo.sha256) == (DOCS / "statement-photo.jpg").read_bytes()
        assert photo.size == len(demo_store.blobs.get(photo.sha256))
        assert {d.dossier_id for d in documents} == {contact.dossier_id}


async def test_extract_resumes_with_children_still_pending(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    from sqlalchemy import delete

    from models.tables import Document
    from tests.intake.files import email_with, zip_of

    inner = email_with("Facture", "Ci-joint", {"note.txt": ("text/plain", b"AS-2026-000001")})
    archive = zip_of({"fwd.eml": inner, "lisez-moi.txt": b"Bonjour"})
    accepted = await demo_store.accept_contact(
        _mail(
            "m12@example.org",
            "Documents",
            "Voir l'archive",
            InboundAttachment("envoi.zip", "application/zip", archive),
        ),
        b"raw",
    )
    runner = _runner(demo_store, ocr, relay)
    await runner.run_pending()
    # As if the process had died once the archive was recorded, before its members were read:
    # the archive's children pending, theirs not yet known.
    async with demo_store.sessions() as session, session.begin():
        await session.execute(delete(Document).where(Document.depth == 2))
        await session.execute(
            update(Document).where(Document.depth == 1).values(status="pending", text="")
        )
        await session.execute(update(Contact).values(step="extract", status="received"))
        await session.execute(update(Job).where(Job.kind == "contact").values(status="pending"))
    await runner.run_pending()
    async with demo_store.sessions() as session:
        documents = (
            await session.scalars(
                select(Document)
                .where(Document.contact_id == accepted.contact_id)
                .order_by(Document.position)
            )
        ).all()
        assert [(d.filename, d.depth, d.status) for d in documents] == [
            ("envoi.zip", 0, "ok"),
            ("fwd.eml", 1, "ok"),
            ("lisez-moi.txt", 1, "ok"),
            ("note.txt", 2, "ok"),
        ]
        assert documents[3].parent_id == documents[1].id
        contact = await session.get_one(Contact, accepted.contact_id)
        assert contact.match_rule == "reference AS-2026-000001 in document note.txt"


async def test_the_contact_as_a_whole_has_an_unpacking_budget(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    from models.tables import Document
    from tests.intake.files import zip_of

    settings = load_settings(
        environ={},
        smtp_relay=f"{relay.host}:{relay.port}",
        home="unused",
        archive_max_members=2,
    )
    first = InboundAttachment(
        "a.zip", "application/zip", zip_of({"1.txt": b"un", "2.txt": b"deux"})
    )
    second = InboundAttachment("b.zip", "application/zip", zip_of({"3.txt": b"trois"}))
    accepted = await demo_store.accept_contact(
        _mail(
            "m13@example.org",
            "AS-2026-000001",
            "Bonjour, voici les justificatifs de mon dossier dans deux archives.",
            first,
            second,
        ),
        b"raw",
    )
    await build_runner(settings, demo_store, ocr).run_pending()
    async with demo_store.sessions() as session:
        documents = (
            await session.scalars(
                select(Document)
                .where(Document.contact_id == accepted.contact_id)
                .order_by(Document.position)
            )
        ).all()
        assert [(d.filename, d.status) for d in documents] == [
            ("a.zip", "ok"),
            ("b.zip", "refused"),
            ("1.txt", "ok"),
            ("2.txt", "ok"),
        ]
        assert documents[1].reason == (
            "archive limit: the contact would have 3 unpacked files, over the 2-file limit;"
            " not unpacked"
        )
        contact = await session.get_one(Contact, accepted.contact_id)
        # "un" and "deux" are too short to tell a document type: review, not a guess.
        assert (contact.step, contact.status) == ("done", "needs_review")
        assert (
            contact.status_reason is not None and "1.txt: type uncertain" in contact.status_reason
        )


async def test_matched_steps_go_on_in_a_job_holding_the_dossier_lock(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    """As on PostgreSQL workers: once the dossier is known, evaluate and respond run in a job
    that holds ``dossier:N``, so two contacts of one dossier never run them at once."""
    accepted = await demo_store.accept_contact(
        _mail("locked@example.org", "AS-2026-000001", "Bonjour, voici ma facture."), b"raw"
    )
    runner = _runner(demo_store, ocr, relay)
    pipeline = runner.handlers[CONTACT_JOB]
    assert isinstance(pipeline, ContactPipeline)
    runner.handlers[CONTACT_JOB] = ContactPipeline(replace(pipeline.ctx, dossier_locks=True))
    await runner.run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        contact_jobs = (
            await session.execute(
                select(Job.lock_key, Job.status)
                .where(Job.kind == CONTACT_JOB, Job.subject_id == contact.id)
                .order_by(Job.id)
            )
        ).all()
    assert contact.step == "done" and contact.dossier_id is not None
    assert [tuple(row) for row in contact_jobs] == [
        (None, "done"),
        (f"dossier:{contact.dossier_id}", "done"),
    ]
    assert len(_acks(relay)) == 1


async def test_a_mail_stored_raw_by_the_smtp_session_is_unpacked_first(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    """The session read the headers only; the unpack step makes the contact the full parse
    of the same bytes makes, documents included, and the rest of intake follows."""
    mail = EmailMessage()
    mail["From"] = "Jean Dupont <jean.dupont@example.org>"
    mail["To"] = "sinistres@guichet.localhost"
    mail["Subject"] = "Dossier AS-2026-000001"
    mail["Message-ID"] = "<raw-1@example.org>"
    mail["Date"] = "Mon, 02 Nov 2026 09:30:00 +0100"
    mail.set_content("Bonjour,\nvoici la facture du taxi.\n")
    pdf = (DOCS / "quote-text-layer.pdf").read_bytes()
    mail.add_attachment(pdf, maintype="application", subtype="pdf", filename="facture.pdf")
    raw = mail.as_bytes()
    accepted, early = await ingest_email(
        demo_store, raw, Envelope(sender="jean.dupont@example.org")
    )
    assert early.raw_only and early.attachments == ()
    full = parse_email(raw, envelope_sender="jean.dupont@example.org")
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert (contact.step, contact.subject, contact.text) == ("unpack", full.subject, "")

    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        await session.refresh(contact, ["documents", "dossier"])
        assert (contact.step, contact.status) == ("done", "processed")
        assert contact.dossier is not None and contact.dossier.ref == "AS-2026-000001"
        assert (contact.text, contact.recipients, contact.sent_at) == (
            full.text,
            list(full.recipients),
            full.sent_at,
        )
        [document] = contact.documents
        assert (document.filename, document.status) == ("facture.pdf", "ok")
        assert demo_store.blobs.get(document.sha256) == pdf
    assert len(_acks(relay)) == 1


async def test_a_raw_contact_no_unpacker_knows_is_parked_with_the_reason(
    demo_store: Store, ocr: OcrPool, relay: Relay
) -> None:
    raw_sms = InboundContact(
        channel="sms", natural_key="SM-raw", sender="+33612345678", raw_only=True
    )
    accepted = await demo_store.accept_contact(raw_sms, b"Body=Bonjour")
    await _runner(demo_store, ocr, relay).run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
    assert contact.status == "failed"
    assert "nothing unpacks raw sms contacts" in str(contact.status_reason)


@pytest.mark.parametrize(
    ("attached", "after_unpacking"),
    [(False, ("classify", "processing")), (True, ("extract", "received"))],
)
async def test_unpacking_a_text_mail_does_the_extract_step_too(
    demo_store: Store, ocr: OcrPool, relay: Relay, attached: bool, after_unpacking: tuple[str, str]
) -> None:
    """A mail with nothing to read goes from unpacking straight to classification (the extract
    step would only have marked it processing, in a transaction of its own); one with a file
    goes to extract. Either way the rest of intake follows to the acknowledgement."""
    mail = EmailMessage()
    mail["From"] = "Jean Dupont <jean.dupont@example.org>"
    mail["To"] = "sinistres@guichet.localhost"
    mail["Subject"] = "Dossier AS-2026-000001"
    mail["Message-ID"] = f"<raw-text-{attached}@example.org>"
    mail.set_content("Bonjour,\nje vous envoie la facture du taxi.\n")
    if attached:
        pdf = (DOCS / "quote-text-layer.pdf").read_bytes()
        mail.add_attachment(pdf, maintype="application", subtype="pdf", filename="facture.pdf")
    accepted, _ = await ingest_email(
        demo_store, mail.as_bytes(), Envelope(sender="jean.dupont@example.org")
    )
    runner = _runner(demo_store, ocr, relay)
    handler = runner.handlers[CONTACT_JOB]
    assert isinstance(handler, ContactPipeline)

    recorded = await unpack(handler.ctx, accepted.contact_id)
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
    assert (contact.step, contact.status) == after_unpacking
    assert recorded == contact.step
    # Run again (a replayed job): nothing changes, the step says where the contact is.
    assert await unpack(handler.ctx, accepted.contact_id) == contact.step

    await runner.run_pending()
    async with demo_store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
    assert contact.step == "done" and contact.status in ("processed", "needs_review")
    assert len(_acks(relay)) == 1
