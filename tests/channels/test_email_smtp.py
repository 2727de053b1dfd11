"""SMTP intake in the event loop: 250 only after commit, 550/552/451, bad mail kept with reasons."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from sqlalchemy import func, select

from channels.email_smtp import SmtpIntake, parse_or_keep, smtp_factory
from models.blobs import BlobStore
from models.store import Accepted, Store
from models.tables import Contact, Delivery, Document
from tests.conftest import free_port

DOMAIN = "guichet.localhost"


class Server:
    def __init__(self, store: Store, port: int) -> None:
        self.store = store
        self.port = port
        self.accepted: list[Accepted] = []

    def send(
        self,
        raw: bytes,
        rcpt: str = f"sinistres@{DOMAIN}",
        mail_from: str = "jean.dupont@example.org",
    ) -> tuple[int, bytes]:
        """Blocking SMTP client conversation; returns the reply to DATA (or the first refusal)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo()
            code, reply = client.mail(mail_from)
            if code != 250:
                return code, reply
            code, reply = client.rcpt(rcpt)
            if code != 250:
                return code, reply
            return client.data(raw)

    async def asend(self, raw: bytes, **kwargs: str) -> tuple[int, bytes]:
        return await asyncio.to_thread(self.send, raw, **kwargs)


@pytest.fixture
async def server(store: Store) -> AsyncIterator[Server]:
    port = free_port()
    srv = Server(store, port)
    handler = SmtpIntake(store, (DOMAIN,), on_accepted=srv.accepted.append)
    loop = asyncio.get_running_loop()
    tcp = await loop.create_server(smtp_factory(handler, DOMAIN, 200_000), "127.0.0.1", port)
    try:
        yield srv
    finally:
        tcp.close()
        await tcp.wait_closed()


def _mail(message_id: str = "<m1@example.org>", subject: str = "Dossier AS-2026-000001") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jean Dupont <jean.dupont@example.org>"
    msg["To"] = f"sinistres@{DOMAIN}"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content("Bonjour, voici ma facture.")
    msg.add_attachment(
        b"%PDF-1.4\n%fake\n", maintype="application", subtype="pdf", filename="facture.pdf"
    )
    return msg.as_bytes(policy=SMTP)


async def _count(store: Store, table: type) -> int:
    async with store.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_250_means_stored(server: Server) -> None:
    code, reply = await server.asend(_mail())
    assert code == 250, reply
    [accepted] = server.accepted
    assert reply.decode() == f"2.0.0 OK: queued as contact {accepted.contact_id}"
    async with server.store.sessions() as session:
        contact = await session.get_one(Contact, accepted.contact_id)
        assert (contact.sender, contact.subject, contact.message_id) == (
            "jean.dupont@example.org",
            "Dossier AS-2026-000001",
            "m1@example.org",
        )
        raw = await server.store.raw_content(contact.raw_sha256 or "", session)
        assert b"Message-ID: <m1@example.org>" in raw
        # The session read the headers only: intake's first step unpacks the body, from the
        # bytes kept, into the same contact the full parse would have made.
        assert contact.step == "unpack" and contact.text == ""
        assert await session.scalar(select(Document)) is None
        unpacked = parse_or_keep(raw, "jean.dupont@example.org")
        assert (unpacked.natural_key, unpacked.sender) == (
            contact.natural_key,
            contact.sender,
        )
        assert [a.filename for a in unpacked.attachments] == ["facture.pdf"]
        delivery = await session.scalar(select(Delivery))
        assert delivery is not None
        assert delivery.envelope_recipients == [f"sinistres@{DOMAIN}"]
        assert delivery.envelope_sender == "jean.dupont@example.org"


async def test_same_message_twice_is_a_duplicate(server: Server) -> None:
    await server.asend(_mail())
    code, reply = await server.asend(_mail())
    assert code == 250
    assert b"already received as contact" in reply
    assert await _count(server.store, Contact) == 1
    assert await _count(server.store, Delivery) == 2


async def test_never_an_open_relay(server: Server) -> None:
    code, reply = await server.asend(_mail(), rcpt="victim@elsewhere.example")
    assert code == 550
    assert b"Relaying denied" in reply
    assert await _count(server.store, Contact) == 0


async def test_oversized_message_gets_552_and_nothing_stored(server: Server) -> None:
    big = _mail() + (b"x" * 76 + b"\r\n") * 3500
    code, _ = await server.asend(big)
    assert code == 552
    assert await _count(server.store, Contact) == 0
    code, _ = await server.asend(_mail("<after@example.org>"))
    assert code == 250  # the server goes on


async def test_null_return_path_marks_the_contact_automatic(server: Server) -> None:
    code, _ = await server.asend(_mail("<bounce@example.org>"), mail_from="")
    assert code == 250
    async with server.store.sessions() as session:
        contact = await session.scalar(select(Contact))
        assert contact is not None and contact.automatic_reason is not None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"From: a@example.org\r\nSubject: cass\xc3\xa9\xe9\xff\r\nMessage-ID: <bad1@x>\r\n"
            b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            b"--b1\r\nContent-Type: text/plain\r\n\r\n"
            b"pas de fin\r\n",
            id="8-bit-header-and-missing-closing-boundary",
        ),
        pytest.param(
            b"From: a@example.org\r\nMessage-ID: <bad2@x>\r\nContent-Type: multipart/mixed\r\n\r\n"
            b"no boundary at all\r\n",
            id="multipart-without-boundary",
        ),
        pytest.param(
            b"From: a@example.org\r\nMessage-ID: <bad3@x>\r\n"
            b"Content-Type: text/plain; charset=x-nonsense\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
            id="undecodable-charset-and-broken-base64",
        ),
        pytest.param(b"garbage without any header at all\r\n\xff\xfe\r\n", id="no-headers"),
    ],
)
async def test_malformed_mail_is_stored_with_its_defects(server: Server, raw: bytes) -> None:
    code, reply = await server.asend(raw)
    assert code == 250, reply
    async with server.store.sessions() as session:
        contact = await session.scalar(select(Contact))
        assert contact is not None
        assert (await server.store.raw_content(contact.raw_sha256 or "", session)).replace(
            b"\r\n", b"\n"
        ).strip() == raw.replace(b"\r\n", b"\n").strip()
    code, _ = await server.asend(_mail("<next@example.org>"))
    assert code == 250


async def test_unwritable_blob_folder_answers_451_and_stores_nothing(
    server: Server, tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the blob folder should be")
    server.store.blobs = BlobStore(blocked)
    code, reply = await server.asend(_mail())
    assert code == 451
    assert b"try again later" in reply
    assert await _count(server.store, Contact) == 0


async def test_low_disk_answers_452_and_stores_nothing(server: Server) -> None:
    blobs = server.store.blobs
    # The margin is above the disk's real free space: as if it were nearly full.
    blobs.min_free_bytes = blobs.free_bytes() + 10**12
    code, reply = await server.asend(_mail())
    assert (code, reply) == (452, b"4.3.1 Insufficient system storage, please try again later")
    assert await _count(server.store, Contact) == 0
    assert not blobs.root.exists() or not any(p.is_file() for p in blobs.root.rglob("*"))
    blobs.min_free_bytes = 0
    code, _ = await server.asend(_mail())
    assert code == 250
