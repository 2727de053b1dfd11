"""Shared fixtures: a store on SQLite and on PostgreSQL, free ports, and a real SMTP relay."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.engine import make_url

from models import migrate
from models.blobs import BlobStore
from models.db import create_engine
from models.store import Store
from tests.channels.twilio_standin import TwilioStandIn

DATA = Path(__file__).parent / "data"
PG_URL = os.environ.get(
    "GUICHET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _postgres_or_skip() -> None:
    """PostgreSQL tests are skipped with a reason on a laptop, but must run in CI."""
    try:
        with psycopg.connect(_libpq(PG_URL), connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {make_url(PG_URL).render_as_string()}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the PostgreSQL tests are required)")
        pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    _postgres_or_skip()
    name = f"guichet_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(PG_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'guichet.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate.upgrade, database_url)
    store = Store(create_engine(database_url), BlobStore(tmp_path / "blobs"))
    try:
        yield store
    finally:
        await store.close()


@dataclass
class Relay:
    """A real SMTP server playing the outbound relay; it keeps what it receives."""

    host: str
    port: int
    received: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    refuse_with: str | None = None
    #: Take the message, then drop the connection before answering (a relay that crashed).
    hang_up_after_data: bool = False
    #: Answer MAIL FROM with 421 once a session has carried this many messages (as relays
    #: that limit messages per session do).
    messages_per_session: int | None = None
    #: The client's address and port of each message received: one per connection used.
    peers: list[str] = field(default_factory=list)
    _carried: dict[int, int] = field(default_factory=dict)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        carried = self._carried.get(id(session), 0)
        if self.messages_per_session is not None and carried >= self.messages_per_session:
            return "421 4.7.0 too many messages in this session"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_with:
            return self.refuse_with
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((envelope, message))
        self.peers.append(str(session.peer))
        self._carried[id(session)] = self._carried.get(id(session), 0) + 1
        self.arrived.set()
        if self.hang_up_after_data and server.transport is not None:
            server.transport.close()
        return "250 2.0.0 relayed"

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        async def enough() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    loop = asyncio.get_running_loop()
    relay = Relay("127.0.0.1", free_port())
    server = await loop.create_server(
        lambda: SMTP(relay, hostname="relay.test", loop=loop), relay.host, relay.port
    )
    try:
        yield relay
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def standin() -> AsyncIterator[TwilioStandIn]:
    """Twilio's REST API and media CDN, as documented (the one allowed stand-in)."""
    twilio = TwilioStandIn()
    await twilio.start()
    try:
        yield twilio
    finally:
        await twilio.close()


#: Debian's Chromium, which the install puts there; the browser tests skip without it.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(locale="fr-FR")
    try:
        yield await context.new_page()
    finally:
        await context.close()


def unwritable(folder: Path) -> None:
    """Make ``folder`` refuse every write, whoever the test runs as.

    A read-only mode is enough for an ordinary user, but root (as in the CI containers) writes
    through permission bits. Then the folder is replaced by a file: creating anything under a
    file fails with ENOTDIR, for root as well. Either way ``writable`` undoes it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return
    probe.unlink()
    folder.chmod(0o755)
    shutil.rmtree(folder)
    folder.write_bytes(b"a file where the blob folder should be\n")


def writable(folder: Path) -> None:
    if folder.is_file():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
