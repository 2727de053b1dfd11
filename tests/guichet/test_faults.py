"""Faults: storage unwritable or full, the database dropping its connections, kill -9 mid-flood."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import sqlalchemy
from aiohttp import web
from multidict import MultiDict
from sqlalchemy.engine import make_url

from channels.chat import TOKEN_HEADER, ChatLimits, WebChat
from channels.edi import EdiAdapter, EdiIntake
from channels.email_smtp import SmtpIntake, ingest_email, smtp_factory
from channels.twilio_sms import INBOUND_PATH, TwilioAccount, TwilioWebhooks
from guichet.api import create_app
from guichet.parts import open_store
from guichet.settings import load_settings
from models import migrate
from models.blobs import InsufficientStorage
from models.db import sync_url
from models.store import Store
from models.tables import Contact
from tests.channels.twilio_standin import TwilioStandIn
from tests.conftest import DATA, Relay, free_port, unwritable, writable
from tests.guichet.service import DOMAIN, GuichetProcess

EDI = (DATA / "edi" / "edi-0001.edi").read_bytes()
PUBLIC_URL = "https://guichet.example.org"
OUR_NUMBER = "+33757000000"
#: Far above any disk's free space: every new contact is refused for lack of room.
HUGE = 10**18
#: A new claim: acknowledged, and nothing else is due (a status question would be answered too).
CLAIM = "Ma voiture est tombée en panne sur l'autoroute A7, pouvez-vous envoyer une dépanneuse ?"
#: The message sent before a flood, whose acknowledgement shows the workers are running.
PROBE = "99-0"


def mail(message_id: str, sender: str, subject: str = "Question") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"sinistres@{DOMAIN}"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content(f"Bonjour,\n\n{CLAIM}\n")
    return msg.as_bytes(policy=SMTP_POLICY)


# --- storage faults on every channel, in process ------------------------------------------


@dataclass
class Channels:
    """SMTP intake, Twilio webhooks, web chat and EDI upload over one store, on loopback."""

    store: Store
    smtp_port: int
    http: str
    twilio: TwilioStandIn

    async def smtp(self, raw: bytes) -> tuple[int, bytes]:
        def conversation() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
                client.ehlo()
                client.mail("jean.dupont@example.org")
                client.rcpt(f"sinistres@{DOMAIN}")
                return client.data(raw)

        return await asyncio.to_thread(conversation)

    async def sms(self, params: MultiDict[str]) -> tuple[int, str]:
        status, _, _ = await self.twilio.webhook(
            self.http + INBOUND_PATH, params, signed_url=PUBLIC_URL + INBOUND_PATH
        )
        return status, self.twilio.webhook_headers.get("Retry-After", "")

    async def upload(self, token: str) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("id", "u-1")
        form.add_field("file", b"%PDF-1.4\n%ticket\n", filename="ticket.pdf")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.http}/channels/chat/upload", data=form, headers={TOKEN_HEADER: token}
            ) as response,
        ):
            return response.status, await response.json()

    async def edi(self) -> tuple[int, str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.http}/channels/edi", data=EDI) as response,
        ):
            return response.status, response.headers.get("Retry-After", ""), await response.json()

    async def chat_token(self) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{self.http}/channels/chat/ws") as ws,
        ):
            await ws.send_json({"type": "start", "email": "visiteur@example.org"})
            started = await asyncio.wait_for(ws.receive_json(), 10)
            return str(started["token"])


@pytest.fixture
async def channels(store: Store, tmp_path: Path) -> AsyncIterator[Channels]:
    twilio = TwilioStandIn()
    sms = TwilioWebhooks(store, TwilioAccount(twilio.account_sid, twilio.auth_token), PUBLIC_URL)
    chat = WebChat(store, lambda: None, ChatLimits())
    edi = EdiAdapter(EdiIntake(store, tmp_path / "edi-out"))
    runner = web.AppRunner(create_app(store, [*sms.routes(), *chat.routes(), *edi.routes()]))
    await runner.setup()
    http_port, smtp_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        smtp_factory(SmtpIntake(store, (DOMAIN,)), DOMAIN, 1 << 20), "127.0.0.1", smtp_port
    )
    try:
        yield Channels(store, smtp_port, f"http://127.0.0.1:{http_port}", twilio)
    finally:
        smtp.close()
        await smtp.wait_closed()
        await runner.cleanup()


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("fault", ["unwritable", "disk full"])
async def test_storage_fault_is_a_temporary_refusal_on_every_channel(
    channels: Channels, store: Store, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = await channels.chat_token()
    sms = channels.twilio.inbound_sms("+33612345678", OUR_NUMBER, "Ma voiture est en panne")
    raw = mail("fault-1@example.org", "jean.dupont@example.org")
    root = store.blobs.root
    if fault == "unwritable":
        unwritable(root)
    else:
        store.blobs.min_free_bytes = HUGE

    code, reply = await channels.smtp(raw)
    expected = (451, b"4.3.0") if fault == "unwritable" else (452, b"4.3.1")
    assert (code, reply[:5]) == expected, reply
    assert await channels.sms(sms) == (503, "60")
    status, upload = await channels.upload(token)
    assert (status, upload["code"]) == (503, "not_stored")
    status, retry_after, body = await channels.edi()
    assert (status, retry_after) == (503, "60"), body
    async with store.sessions() as session:
        assert await session.scalar(sqlalchemy.select(sqlalchemy.func.count(Contact.id))) == 0
    if fault == "disk full":
        # Refused before any byte was written, not half-stored and cleaned up after.
        assert files_under(root) == []
        # Whoever reads the log learns why, and what to do about it.
        said = {r.name for r in caplog.records if "kept free (setting min_free_bytes)" in r.message}
        assert {"channels.email_smtp", "channels.twilio_sms", "channels.edi"} <= said

    # Once the fault is gone, each sender's retry is taken, as one contact each.
    if fault == "unwritable":
        writable(root)
    else:
        store.blobs.min_free_bytes = 0
    assert (await channels.smtp(raw))[0] == 250
    assert await channels.sms(sms) == (200, "")
    assert (await channels.upload(token))[0] == 200
    assert (await channels.edi())[0] == 202
    # Raw bytes committed with their contacts reach the blob folder too.
    await store.settle_staged()
    async with store.sessions() as session:
        contacts = (await session.scalars(sqlalchemy.select(Contact))).all()
        assert sorted(c.channel for c in contacts) == ["chat", "edi", "email", "sms"]
        for contact in contacts:
            await session.refresh(contact, ["documents"])
            digests = [contact.raw_sha256, *(d.sha256 for d in contact.documents)]
            assert all(d and store.blobs.exists(d) for d in digests), contact.channel


# --- the whole service: what is stored, processed and answered, once ----------------------


def database_state(url: str) -> dict[str, Any]:
    """Contacts and replies as the service left them, read with a plain connection."""
    engine = sqlalchemy.create_engine(sync_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as db:
            contacts = db.execute(
                sqlalchemy.text(
                    "SELECT id, channel, natural_key, sender, status, step FROM contact"
                )
            ).all()
            replies = db.execute(
                sqlalchemy.text(
                    "SELECT contact_id, purpose, status, recipient, message_id, provider_id,"
                    " send_after FROM outbound_message"
                )
            ).all()
    finally:
        engine.dispose()
    return {"contacts": contacts, "replies": replies}


def settled(state: dict[str, Any]) -> bool:
    """Every contact went through intake and every reply due now reached a final state."""
    return all(c.step == "done" for c in state["contacts"]) and all(
        r.status not in ("queued", "sending") for r in state["replies"] if r.send_after is None
    )


async def wait_settled(url: str, service: GuichetProcess, count: int) -> dict[str, Any]:
    state: dict[str, Any] = {}
    try:
        async with asyncio.timeout(60):
            while True:
                state = await asyncio.to_thread(database_state, url)
                if len(state["contacts"]) >= count and settled(state):
                    return state
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(
            f"not settled: {state!r}\nservice log tail:\n{service.log.read_text()[-4000:]}"
        ) from None


def check_mail_each_once(state: dict[str, Any], keys: set[str], relay: Relay) -> None:
    """``check_each_once`` for email: the relay received no Message-ID twice."""
    relayed = [str(message["Message-ID"]) for _, message in relay.received]
    assert len(relayed) == len(set(relayed))
    check_each_once(state, keys, lambda reply: relayed.count(f"<{reply.message_id}>"))


def check_each_once(
    state: dict[str, Any], keys: set[str], delivered: Callable[[Any], int], workers: int = 2
) -> None:
    """Each key is one contact, through intake; each reply due now left exactly once or, when
    the kill caught it in the hand-off, at most once and marked uncertain for a person."""
    contacts = state["contacts"]
    assert sorted(c.natural_key for c in contacts) == sorted(keys)
    assert {c.status for c in contacts} <= {"processed", "needs_review"}
    replies = [r for r in state["replies"] if r.send_after is None]
    acknowledged = [r.contact_id for r in replies if r.purpose == "acknowledgement"]
    assert sorted(acknowledged) == sorted(c.id for c in contacts)
    for reply in replies:
        if reply.status == "uncertain":
            assert delivered(reply) <= 1, reply
        else:
            assert (reply.status, delivered(reply)) == ("sent", 1), reply
    assert sum(1 for r in replies if r.status == "uncertain") <= workers


@dataclass
class Flood:
    """Clients sending new messages until told to stop; what each one got back."""

    answers: dict[str, int | None] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def accepted(self) -> int:
        return sum(1 for code in self.answers.values() if code is not None and code < 300)

    async def wait_accepted(self, count: int) -> None:
        await self.wait_for(lambda: self.accepted() >= count)

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not ready():
                self.answered.clear()
                await self.answered.wait()


async def flood(
    send: Callable[[str], Awaitable[int]],
    clients: int,
    kill_when: Callable[[Flood], bool],
    kill: Callable[[], None],
    pause: float = 0.1,
) -> Flood:
    """``clients`` tasks call ``send`` with new keys; ``kill`` runs once ``kill_when`` holds.
    A client stops at its first unanswered message (the server is gone)."""
    state = Flood()

    async def client(k: int) -> None:
        for n in range(10_000):
            key = f"{k}-{n}"
            state.answers[key] = None
            try:
                state.answers[key] = await send(key)
            except (TimeoutError, OSError, aiohttp.ClientError):
                return
            state.answered.set()
            if state.stop.is_set():
                return
            # Steady, not as fast as the loop can go: the workers must keep up enough to be
            # acknowledging when the kill lands, not only queueing.
            await asyncio.sleep(pause)

    tasks = [asyncio.create_task(client(k)) for k in range(clients)]
    await state.wait_for(lambda: kill_when(state))
    kill()
    state.stop.set()
    await asyncio.gather(*tasks)
    return state


async def eventually(ready: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for what another process does, seen only through its effects."""
    for _ in range(int(timeout / 0.05)):
        if ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still not so after {timeout}s")


def sqlite_url(service: GuichetProcess) -> str:
    return f"sqlite+aiosqlite:///{service.home / 'guichet.sqlite3'}"


async def kill_mid_flood(
    service: GuichetProcess,
    send: Callable[[str], Awaitable[int]],
    ok: int,
    answered: Callable[[], int],
) -> tuple[set[str], dict[str, Any]]:
    """Probe, flood with 4 clients, SIGKILL once mail is taken in, processed and answered at
    once, restart, send again what got no answer; the keys sent and the settled state."""
    # The first answer out says the workers are up: the kill then lands mid-pipeline.
    assert await send(PROBE) == ok
    await eventually(lambda: answered() >= 1)
    sent = await flood(
        send,
        clients=4,
        kill_when=lambda flood: flood.accepted() >= 12 and answered() >= 3,
        kill=service.kill,
    )
    unanswered = [k for k, code in sent.answers.items() if code is None]
    assert unanswered and all(code in (ok, None) for code in sent.answers.values())
    await service.start()
    # A client (or Twilio) that heard nothing sends again: taken once, stored before or not.
    for key in unanswered:
        assert await send(key) == ok
    keys = {PROBE, *sent.answers}
    return keys, await wait_settled(sqlite_url(service), service, len(keys))


@pytest.mark.slow
async def test_kill_during_an_smtp_flood(tmp_path: Path, relay: Relay) -> None:
    service = GuichetProcess(tmp_path / "home", relay.port)
    await service.start()

    async def send(key: str) -> int:
        sender = f"flood-{key}@example.org"
        code, _ = await service.send(mail(f"{key}@flood.example", sender), mail_from=sender)
        return code

    try:
        keys, state = await kill_mid_flood(service, send, 250, lambda: len(relay.received))
    finally:
        service.stop()
    check_mail_each_once(state, {f"email:{key}@flood.example" for key in keys}, relay)


def twilio_service(home: Path, relay: Relay, twilio: TwilioStandIn) -> GuichetProcess:
    service = GuichetProcess(home, relay.port)
    service.env.update(twilio.service_env(f"http://127.0.0.1:{service.http_port}", OUR_NUMBER))
    return service


@pytest.mark.slow
async def test_kill_during_a_twilio_webhook_flood(
    tmp_path: Path, relay: Relay, standin: TwilioStandIn
) -> None:
    service = twilio_service(tmp_path / "home", relay, standin)
    await service.start()
    target = f"http://127.0.0.1:{service.http_port}{INBOUND_PATH}"
    forms: dict[str, MultiDict[str]] = {}

    async def send(key: str) -> int:
        if key not in forms:
            k, n = key.split("-")
            # One number per message: the hourly cap of automatic replies never holds one.
            phone = f"+3361{int(k):02d}{int(n):05d}"
            forms[key] = standin.inbound_sms(phone, OUR_NUMBER, CLAIM)
        status, _, _ = await standin.webhook(target, forms[key])
        return status

    try:
        keys, state = await kill_mid_flood(service, send, 200, lambda: len(standin.messages))
    finally:
        service.stop()
    sids = [m["sid"] for m in standin.messages]
    assert len(sids) == len(set(sids))

    sent_sids = {r.provider_id for r in state["replies"] if r.status == "sent"}
    uncertain = {r.recipient for r in state["replies"] if r.status == "uncertain"}
    # Every SMS Twilio took is a reply marked sent, or one to a number with an uncertain reply.
    assert all(m["sid"] in sent_sids or m["to"] in uncertain for m in standin.messages)

    def delivered(reply: Any) -> int:
        if reply.status == "sent":
            return sum(1 for m in standin.messages if m["sid"] == reply.provider_id)
        return sum(
            1 for m in standin.messages if m["to"] == reply.recipient and m["sid"] not in sent_sids
        )

    check_each_once(state, {forms[k]["MessageSid"] for k in keys}, delivered)


# --- the database drops every connection while mail comes in -------------------------------


def terminate_backends(url: str) -> int:
    """What a PostgreSQL restart does to the service: every connection it holds is cut."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.mark.slow
async def test_database_connections_dropped_while_mail_comes_in(
    tmp_path: Path, relay: Relay, postgres_url: str
) -> None:
    service = GuichetProcess(tmp_path / "home", relay.port, {"GUICHET_DATABASE_URL": postgres_url})
    await service.start()
    sent = Flood()
    cuts: list[int] = []

    async def send(key: str) -> int:
        sender = f"drop-{key}@example.org"
        code, _ = await service.send(mail(f"{key}@drop.example", sender), mail_from=sender)
        return code

    async def client(k: int) -> None:
        for n in range(6):
            key = f"{k}-{n}"
            sent.answers[key] = await send(key)
            sent.answered.set()
            await asyncio.sleep(0.05)

    try:
        # Cut only once the workers run, so that intake, jobs and deliveries all lose theirs.
        assert await send(PROBE) == 250
        await relay.wait_for(1)
        clients = [asyncio.create_task(client(k)) for k in range(3)]
        for count in (4, 10):
            await sent.wait_accepted(count)
            cuts.append(await asyncio.to_thread(terminate_backends, postgres_url))
        await asyncio.gather(*clients)
        assert all(cuts), cuts  # the service did hold connections when they were cut
        # 250 or a temporary refusal, never a permanent one or a silent drop.
        assert set(sent.answers.values()) <= {250, 451}, sent.answers
        for key in [k for k, code in sent.answers.items() if code != 250]:
            assert await send(key) == 250
        keys = {PROBE, *sent.answers}
        state = await wait_settled(postgres_url, service, len(keys))
        assert (await service.get("/healthz"))["status"] == "ok"
        listed = await service.get("/api/contacts?limit=50")
        assert len(listed["contacts"]) == len(keys)
    finally:
        service.stop()
    check_mail_each_once(state, {f"email:{key}@drop.example" for key in keys}, relay)


# --- disk space low: the setting -----------------------------------------------------------


async def test_min_free_bytes_comes_from_the_environment_to_the_store(tmp_path: Path) -> None:
    assert load_settings(environ={}).min_free_bytes == 200 * 1024 * 1024
    settings = load_settings(
        environ={"GUICHET_HOME": str(tmp_path / "home"), "GUICHET_MIN_FREE_BYTES": str(HUGE)}
    )
    await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
    store = open_store(settings)
    try:
        raw = mail("low-1@example.org", "jean.dupont@example.org")
        with pytest.raises(InsufficientStorage, match=r"kept free \(setting min_free_bytes\)"):
            await ingest_email(store, raw)
        store.blobs.min_free_bytes = 0
        accepted, _ = await ingest_email(store, raw)
        assert not accepted.duplicate
    finally:
        await store.close()
