"""IMAP intake against a real Dovecot: store first, then flag, move or delete; resync; refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from imapclient.exceptions import LoginError
from sqlalchemy import func, select

from channels.email_imap import (
    ImapAdapter,
    MailboxConfig,
    MailboxConfigError,
    MailboxPoller,
    parse_mailboxes,
)
from channels.email_smtp import parse_or_keep
from guichet.settings import DEFAULT_CONFIG, SettingsError, load_settings
from guichet.wiring import build_channels
from guichet.workers import WorkerPool
from models import migrate
from models.blobs import BlobStore
from models.store import Store
from models.tables import Contact, Delivery, ImapFolderState, ImapRefusedMail
from tests.channels.dovecot import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER, Dovecot
from tests.conftest import DATA, Relay
from tests.guichet.service import GuichetProcess

PDF = DATA / "documents" / "quote-text-layer.pdf"
#: Storage is what differs between the databases: the behaviour of the IMAP side is tested once.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def mail(message_id: str, subject: str = "Devis garage", *, pdf: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jean Dupont <jean.dupont@example.org>"
    msg["To"] = "sinistres@guichet.localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0100"
    msg.set_content("Bonjour,\n\nVeuillez trouver ci-joint le devis du garage.\n")
    if pdf:
        msg.add_attachment(
            PDF.read_bytes(), maintype="application", subtype="pdf", filename="devis.pdf"
        )
    return msg.as_bytes(policy=SMTP)


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    server = Dovecot(tmp_path / "dovecot")
    try:
        server.start()
        yield server
    except BaseException:
        print(server.tail())
        raise
    finally:
        server.close()


def config(dovecot: Dovecot, **overrides: Any) -> MailboxConfig:
    table: dict[str, Any] = {
        "name": "claims",
        "host": dovecot.host,
        "port": dovecot.port,
        "tls": "none",
        "user": USER,
        "password": PASSWORD,
        "address": "sinistres@guichet.localhost",
        "timeout_seconds": 5,
        "backoff_max_seconds": 1,
        **overrides,
    }
    (mailbox,) = parse_mailboxes([table], environ={})
    return mailbox


MakePoller = Callable[..., MailboxPoller]


@pytest.fixture
async def poller(store: Store) -> AsyncIterator[MakePoller]:
    """Makes pollers on the test's store, and stops them all so their threads end with it."""
    made: list[MailboxPoller] = []

    def make(mailbox: MailboxConfig, max_bytes: int = 1_000_000, **kwargs: Any) -> MailboxPoller:
        made.append(MailboxPoller(mailbox, store, max_message_bytes=max_bytes, **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for item in made:
            await item.stop()


def server_view(dovecot: Dovecot, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
    """UID -> flags of every mail in ``folder``, read through a separate connection."""
    with dovecot.client() as client:
        if not client.folder_exists(folder):
            return {}
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        if not uids:
            return {}
        return {uid: tuple(data[b"FLAGS"]) for uid, data in client.fetch(uids, ["FLAGS"]).items()}


async def count(store: Store, query: Any) -> int:
    async with store.sessions() as session:
        return int(await session.scalar(query) or 0)


async def contacts(store: Store) -> int:
    return await count(store, select(func.count()).select_from(Contact))


async def contacts_are(store: Store, expected: int) -> bool:
    return await contacts(store) == expected


async def passes_beyond(reader: MailboxPoller, passes: int) -> bool:
    return reader.passes >= passes


async def all_passed_once(adapter: ImapAdapter) -> bool:
    return all(p.passes >= 1 for p in adapter.pollers)


async def failures_reach(reader: MailboxPoller, failures: int) -> bool:
    return reader.failures >= failures


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> float:
    """Seconds until ``check`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# --- settings ---


def test_parse_mailboxes_reads_every_key_and_the_password_from_the_environment() -> None:
    (mailbox,) = parse_mailboxes(
        [
            {
                "name": "sinistres",
                "host": "imap.example.org",
                "user": "sinistres@example.org",
                "password_env": "IMAP_PASSWORD",
                "folders": ["INBOX", "Factures"],
                "action": "move",
                "move_to": "Traités",
                "poll_seconds": 30,
                "idle": False,
            }
        ],
        environ={"IMAP_PASSWORD": "from-env"},
    )
    assert mailbox.password == "from-env"
    assert mailbox.port == 993 and mailbox.tls == "implicit"
    assert mailbox.folders == ("INBOX", "Factures")
    assert mailbox.address == "sinistres@example.org"
    assert (mailbox.action, mailbox.move_to, mailbox.idle) == ("move", "Traités", False)
    assert "from-env" not in repr(mailbox)
    assert parse_mailboxes(None) == []
    (starttls,) = parse_mailboxes(
        [{"host": "h", "user": "u", "token": "t", "tls": "starttls"}], environ={}
    )
    assert (starttls.name, starttls.port, starttls.token) == ("u@h", 143, "t")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"host": "h"}, "array of tables"),
        ([{"name": "a", "user": "u", "password": "p"}], "mailbox 'a': host: is required"),
        ([{"name": "a", "host": "h", "user": "u"}], "mailbox 'a': password:"),
        (
            [{"name": "a", "host": "h", "user": "u", "password": "p", "token": "t"}],
            "exactly one",
        ),
        (
            [{"name": "a", "host": "h", "user": "u", "password_env": "NOPE"}],
            "password_env: environment variable NOPE is not set",
        ),
        ([{"name": "a", "host": "h", "user": "u", "password": "p", "colour": 1}], "colour"),
        (
            [{"name": "a", "host": "h", "user": "u", "password": "p", "action": "move"}],
            "move_to: is required",
        ),
        (
            [{"name": "a", "host": "h", "user": "u", "password": "p", "action": "burn"}],
            "action: must be one of flag, move, delete",
        ),
        ([{"name": "a", "host": "h", "user": "u", "password": "p", "port": "x"}], "port"),
        ([{"name": "a", "host": "h", "user": "u", "password": "p", "folders": []}], "folders"),
        (
            [
                {"name": "a", "host": "h", "user": "u", "password": "p"},
                {"name": "a", "host": "h2", "user": "u", "password": "p"},
            ],
            "used twice",
        ),
    ],
)
def test_parse_mailboxes_names_the_mailbox_and_key_at_fault(raw: object, message: str) -> None:
    with pytest.raises(MailboxConfigError, match=message):
        parse_mailboxes(raw, environ={})


async def test_errors_name_a_secret_key_but_never_show_its_value(tmp_path: Path) -> None:
    settings = tmp_path / "guichet.toml"
    settings.write_text('[[imap]]\nname = "a"\nhost = "h"\nuser = "u"\npassword = 12345678\n')
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'g.sqlite3'}", tmp_path / "blobs")
    try:
        with pytest.raises(SettingsError) as caught:
            build_channels(load_settings(settings, environ={}), store, lambda: None)
    finally:
        await store.close()
    assert "mailbox 'a': password: expected text, got a number" in str(caught.value)
    assert "12345678" not in str(caught.value)
    for key, value in [
        ("password", 3.14159),
        ("password", ["hunter2"]),
        ("token", {"value": "hunter2"}),
        ("password_env", 12345678),
        ("token_env", True),
    ]:
        table = {"name": "a", "host": "h", "user": "u", key: value}
        with pytest.raises(MailboxConfigError, match=f"'a': {key}: expected text, got ") as err:
            parse_mailboxes([table], environ={})
        assert str(value) not in str(err.value) and "hunter2" not in str(err.value)
    # A harmless key's value is still shown: it helps to find the mistake.
    with pytest.raises(MailboxConfigError, match="port: expected a number, got '993'"):
        parse_mailboxes([{"host": "h", "user": "u", "password": "p", "port": "993"}], environ={})


async def test_wiring_adds_one_adapter_and_turns_bad_tables_into_settings_errors(
    tmp_path: Path,
) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'g.sqlite3'}", tmp_path / "blobs")
    try:
        good = tmp_path / "good.toml"
        good.write_text(
            '[guichet]\nhome = "var"\n\n'
            '[[imap]]\nname = "a"\nhost = "h"\nuser = "u"\npassword = "p"\n\n'
            '[[imap]]\nname = "b"\nhost = "h"\nuser = "v"\npassword = "p"\n'
        )
        parts = build_channels(load_settings(good, environ={}), store, lambda: None)
        (imap,) = [a for a in parts.adapters if isinstance(a, ImapAdapter)]
        assert [p.config.name for p in imap.pollers] == ["a", "b"]
        assert imap.routes() == []
        bad = tmp_path / "bad.toml"
        bad.write_text('[[imap]]\nname = "a"\nhost = "h"\nuser = "u"\n')
        with pytest.raises(SettingsError, match="mailbox 'a'"):
            build_channels(load_settings(bad, environ={}), store, lambda: None)
        default = build_channels(load_settings(environ={}), store, lambda: None)
        assert not any(isinstance(a, ImapAdapter) for a in default.adapters)
    finally:
        await store.close()


# --- against Dovecot ---


async def test_mails_are_stored_with_attachments_then_flagged(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    dovecot.append(mail("one@example.org"))
    dovecot.append(mail("two@example.org", pdf=False))
    woken: list[int] = []
    reader = poller(config(dovecot), wake=lambda: woken.append(1))

    result = await reader.run_once()

    assert (result.stored, result.duplicates, result.refused) == (2, 0, 0)
    assert woken
    async with store.sessions() as session:
        stored = (await session.scalars(select(Contact).order_by(Contact.id))).all()
        assert [c.message_id for c in stored] == ["one@example.org", "two@example.org"]
        # Stored raw, as from SMTP: intake's first step unpacks the attachment.
        assert [c.step for c in stored] == ["unpack", "unpack"]
        raw = await store.raw_content(stored[0].raw_sha256 or "", session)
        [attachment] = parse_or_keep(raw, None).attachments
        assert (attachment.filename, attachment.content) == ("devis.pdf", PDF.read_bytes())
        delivery = await session.scalar(select(Delivery).where(Delivery.contact_id == stored[0].id))
        assert delivery is not None
        assert delivery.peer.startswith(f"imap://{USER}@127.0.0.1:{dovecot.port}/INBOX;")
        assert delivery.envelope_recipients == ["sinistres@guichet.localhost"]
        state = await session.get(ImapFolderState, ("claims", "INBOX"))
        assert state is not None and state.last_uid == 2
    assert all(b"\\Seen" in flags for flags in server_view(dovecot).values())

    again = await reader.run_once()
    assert (again.stored, again.duplicates) == (0, 0)
    assert await contacts(store) == 2


@SQLITE_ONLY
async def test_xoauth2_token_logs_in(store: Store, dovecot: Dovecot, poller: MakePoller) -> None:
    dovecot.append(mail("oauth@example.org", pdf=False))
    mailbox = config(dovecot, password="", token=dovecot.token(USER))
    assert (await poller(mailbox).run_once()).stored == 1
    refused = config(dovecot, password="", token=dovecot.token(USER, valid_seconds=-60))
    with pytest.raises(LoginError):
        await poller(refused).run_once()


@SQLITE_ONLY
@pytest.mark.parametrize("action", ["move", "delete"])
async def test_move_and_delete_take_the_mail_off_the_folder(
    store: Store, dovecot: Dovecot, action: str, poller: MakePoller
) -> None:
    dovecot.append(mail("a@example.org"))
    dovecot.append(mail("b@example.org"))
    extra = {"move_to": "Traités"} if action == "move" else {}
    result = await poller(config(dovecot, action=action, **extra)).run_once()
    assert result.stored == 2
    assert server_view(dovecot) == {}
    assert len(server_view(dovecot, "Traités")) == (2 if action == "move" else 0)
    assert await contacts(store) == 2


async def test_store_failure_leaves_the_mail_untouched_and_it_is_taken_next_pass(
    store: Store, dovecot: Dovecot, tmp_path: Path, poller: MakePoller
) -> None:
    dovecot.append(mail("kept@example.org"))
    reader = poller(config(dovecot, action="move", move_to="Traités"))
    blobs = store.blobs
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the blob folder should be")
    store.blobs = BlobStore(blocker / "blobs")

    failed = await reader.run_once()

    assert failed.stored == 0 and failed.deferred and "UID 1" in failed.deferred[0]
    assert await contacts(store) == 0
    assert list(server_view(dovecot).values()) == [()]  # still there, not even \Seen
    assert server_view(dovecot, "Traités") == {}

    store.blobs = blobs
    retried = await reader.run_once()
    assert (retried.stored, retried.deferred) == (1, [])
    assert server_view(dovecot) == {}
    assert len(server_view(dovecot, "Traités")) == 1


async def test_uidvalidity_change_resyncs_without_duplicate_contacts(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    for n in (1, 2):
        dovecot.append(mail(f"m{n}@example.org"), folder="Sinistres")
    reader = poller(config(dovecot, folders=["Sinistres"]))
    assert (await reader.run_once()).stored == 2
    async with store.sessions() as session:
        before = await session.get(ImapFolderState, ("claims", "Sinistres"))
        assert before is not None
        old_validity = before.uidvalidity

    # Dovecot derives UIDVALIDITY from the clock: wait so the new folder gets another one.
    await asyncio.sleep(1.1)
    with dovecot.client() as client:
        client.delete_folder("Sinistres")
    for n in (1, 2, 3):
        dovecot.append(mail(f"m{n}@example.org"), folder="Sinistres")

    result = await reader.run_once()

    assert (result.stored, result.duplicates) == (1, 2)
    assert await contacts(store) == 3
    assert await count(store, select(func.count()).where(Delivery.duplicate.is_(True))) == 2
    assert await count(store, select(func.sum(Contact.duplicate_count))) == 2
    async with store.sessions() as session:
        after = await session.get(ImapFolderState, ("claims", "Sinistres"))
        assert after is not None
        assert after.uidvalidity != old_validity and after.last_uid == 3


@SQLITE_ONLY
async def test_oversized_mail_is_recorded_once_and_left_on_the_server(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    dovecot.append(mail("big@example.org"))  # the PDF makes it far bigger than the limit
    dovecot.append(mail("small@example.org", pdf=False))
    reader = poller(config(dovecot), max_bytes=5_000)

    first = await reader.run_once()
    second = await reader.run_once()

    assert (first.stored, first.refused) == (1, 1)
    assert (second.stored, second.refused) == (0, 0)
    (refused,) = await reader.refused()
    assert (refused.folder, refused.uid) == ("INBOX", 1)
    assert "over the limit of 5000" in refused.reason and refused.size and refused.size > 5000
    assert server_view(dovecot)[1] == ()  # untouched
    assert await contacts(store) == 1


@SQLITE_ONLY
async def test_mail_the_server_cannot_read_is_set_aside_after_a_few_dropped_connections(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    dovecot.append(mail("corrupt@example.org", pdf=False))
    dovecot.append(mail("fine@example.org", pdf=False))
    # Truncate the first mail's file behind Dovecot's back: its size no longer matches the one
    # in the file name, and Dovecot closes the connection on every FETCH of its body.
    (corrupt,) = [
        p for p in (dovecot.root / "mail").rglob("*,S=*") if b"corrupt@" in p.read_bytes()
    ]
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    reader = poller(config(dovecot, poll_seconds=0.2, idle=False))

    await reader.start()
    await eventually(lambda: contacts_are(store, 1), timeout=20)

    (refused,) = await reader.refused()
    assert refused.uid == 1 and "dropped the connection on each of 3 FETCHes" in refused.reason
    passes = reader.passes
    await eventually(lambda: passes_beyond(reader, passes + 2))
    assert len(await reader.refused()) == 1
    assert reader.failures == 0  # no more reconnecting: it is not retried in a loop


@SQLITE_ONLY
async def test_idle_delivers_a_new_mail_at_once(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    woken = asyncio.Event()
    reader = poller(config(dovecot, poll_seconds=60), wake=woken.set)
    await reader.start()
    await eventually(lambda: passes_beyond(reader, 1))
    await asyncio.sleep(0.3)  # let it settle into IDLE

    await asyncio.to_thread(dovecot.append, mail("idle@example.org"))
    took = await eventually(lambda: contacts_are(store, 1), timeout=10)

    assert took < 5  # far below the 60 s poll: IDLE told us
    assert woken.is_set()
    assert list(server_view(dovecot).values()) == [(b"\\Seen",)]


@SQLITE_ONLY
async def test_polling_without_idle_takes_new_mail(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    reader = poller(config(dovecot, idle=False, poll_seconds=0.3))
    await reader.start()
    await eventually(lambda: passes_beyond(reader, 1))
    await asyncio.to_thread(dovecot.append, mail("polled@example.org"))
    await eventually(lambda: contacts_are(store, 1))
    passes = reader.passes
    await eventually(lambda: passes_beyond(reader, passes + 2))
    assert await contacts(store) == 1


@SQLITE_ONLY
async def test_reconnects_after_dovecot_restarts(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    reader = poller(config(dovecot, poll_seconds=60))
    await reader.start()
    await eventually(lambda: passes_beyond(reader, 1))

    await asyncio.to_thread(dovecot.restart)
    await asyncio.to_thread(dovecot.append, mail("after-restart@example.org"))

    await eventually(lambda: contacts_are(store, 1), timeout=20)
    assert reader.connections >= 2


@SQLITE_ONLY
async def test_two_mailboxes_at_once_and_stop_ends_idle_promptly(
    store: Store, dovecot: Dovecot
) -> None:
    adapter = ImapAdapter(
        store,
        [
            config(dovecot),
            config(dovecot, name="providers", user=OTHER_USER, password=OTHER_PASSWORD),
        ],
        max_message_bytes=1_000_000,
    )
    await adapter.start()
    try:
        await asyncio.to_thread(dovecot.append, mail("to-claims@example.org"))
        await asyncio.to_thread(
            dovecot.append, mail("to-providers@example.org"), "INBOX", OTHER_USER, OTHER_PASSWORD
        )
        await eventually(lambda: contacts_are(store, 2), timeout=20)
        await eventually(lambda: all_passed_once(adapter))
    finally:
        started = time.monotonic()
        await adapter.stop()
    assert time.monotonic() - started < 3
    async with store.sessions() as session:
        states = (await session.scalars(select(ImapFolderState))).all()
        assert sorted((s.mailbox, s.last_uid) for s in states) == [
            ("claims", 1),
            ("providers", 1),
        ]
    assert await count(store, select(func.count()).select_from(ImapRefusedMail)) == 0


# --- end to end through ``guichet serve`` ---


@pytest.mark.slow
async def test_mail_in_an_imap_mailbox_is_processed_by_the_service(
    tmp_path: Path, dovecot: Dovecot, relay: Relay
) -> None:
    settings_file = tmp_path / "guichet.toml"
    settings_file.write_text(
        DEFAULT_CONFIG.read_text()
        + "\n[[imap]]\n"
        + 'name = "sinistres"\n'
        + f'host = "{dovecot.host}"\nport = {dovecot.port}\ntls = "none"\n'
        + f'user = "{USER}"\npassword_env = "GUICHET_TEST_IMAP_PASSWORD"\n'
        + "poll_seconds = 30\n"
    )
    service = GuichetProcess(
        tmp_path / "home",
        relay.port,
        {"GUICHET_CONFIG": str(settings_file), "GUICHET_TEST_IMAP_PASSWORD": PASSWORD},
    )
    service.home.mkdir()
    loaded = service.cli("demo")
    assert loaded.returncode == 0, loaded.stderr
    await service.start()
    try:
        raw = mail("e2e-imap@example.org", "Facture pour le dossier AS-2026-000001")
        await asyncio.to_thread(dovecot.append, raw)
        listed: list[dict[str, Any]] = []

        async def listed_once() -> bool:
            listed[:] = (await service.get("/api/contacts"))["contacts"]
            return bool(listed)

        await eventually(listed_once, timeout=60)
        (contact_id,) = [c["id"] for c in listed]
        contact = await service.wait_contact(contact_id, ("processed",))
        assert contact["dossier_ref"] == "AS-2026-000001"
        assert contact["channel"] == "email"
        [document] = contact["documents"]
        assert document["filename"] == "devis.pdf"
        assert list(server_view(dovecot).values()) == [(b"\\Seen",)]
    finally:
        service.stop()
    assert "IMAP mailbox sinistres: mail UID 1 in 'INBOX' stored as contact" in (
        service.log.read_text()
    )


@SQLITE_ONLY
async def test_a_folder_that_cannot_be_opened_does_not_stop_the_others(
    store: Store, dovecot: Dovecot, poller: MakePoller
) -> None:
    dovecot.append(mail("fine@example.org", pdf=False))
    reader = poller(config(dovecot, folders=["Missing", "INBOX"]))
    result = await reader.run_once()
    assert result.stored == 1
    assert len(result.deferred) == 1 and result.deferred[0].startswith("Missing: cannot open")


@SQLITE_ONLY
async def test_refused_login_is_retried_with_backoff_and_logged(
    store: Store, dovecot: Dovecot, poller: MakePoller, caplog: pytest.LogCaptureFixture
) -> None:
    reader = poller(config(dovecot, password="wrong"))
    await reader.start()
    await eventually(lambda: failures_reach(reader, 2), timeout=10)
    assert reader.connections == 0
    assert "IMAP mailbox claims: LoginError" in caplog.text
    assert "reconnecting in" in caplog.text


async def test_scaled_out_a_mailbox_is_a_periodic_task_of_the_worker_pool(
    tmp_path: Path, postgres_url: str, dovecot: Dovecot
) -> None:
    """On PostgreSQL no front reads the mailbox; the worker pool polls it, one pass at a time
    whatever the number of workers, and the mail becomes a contact once."""
    settings_file = tmp_path / "guichet.toml"
    settings_file.write_text(
        f'[guichet]\nhome = "{tmp_path / "home"}"\n\n'
        f'[[imap]]\nname = "claims"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'tls = "none"\nuser = "{USER}"\npassword = "{PASSWORD}"\npoll_seconds = 1\n'
    )
    settings = load_settings(settings_file, environ={"GUICHET_DATABASE_URL": postgres_url})
    await asyncio.to_thread(migrate.upgrade, postgres_url)
    store = Store.open(postgres_url, tmp_path / "blobs")
    parts = build_channels(settings, store, lambda: None)
    assert not any(isinstance(a, ImapAdapter) for a in parts.adapters)
    assert [(p.name, p.cron) for p in parts.periodic] == [("imap_claims", "* * * * * */1")]
    # Two pools, as two worker processes would be: the mail is still read once.
    pools = [
        WorkerPool(store, postgres_url, {}, periodic=parts.periodic),
        WorkerPool(store, postgres_url, {}, periodic=parts.periodic),
    ]
    try:
        for pool in pools:
            await pool.start()
        await asyncio.to_thread(dovecot.append, mail("scaled@example.org"))
        await eventually(lambda: contacts_are(store, 1), timeout=20)
        await asyncio.sleep(2.5)
        assert await contacts(store) == 1
        assert await count(store, select(func.count()).select_from(Delivery)) == 1
    finally:
        for pool in pools:
            await pool.stop(grace_seconds=2)
        await store.close()
