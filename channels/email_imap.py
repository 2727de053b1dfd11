"""Email in from IMAP mailboxes: IDLE or polling, stored through the SMTP path, then flagged."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from channels.email_smtp import ingest_email
from models.blobs import BlobStoreError
from models.store import Envelope, Store
from models.tables import ImapFolderState, ImapRefusedMail

log = logging.getLogger(__name__)

T = TypeVar("T")

Action = Literal["flag", "move", "delete"]
Tls = Literal["implicit", "starttls", "none"]

#: RFC 2177: clients should re-issue IDLE at least every 29 minutes.
MAX_IDLE_SECONDS = 25 * 60
#: How often a thread blocked in IDLE looks whether the service is stopping.
IDLE_CHECK_SECONDS = 0.5
FIRST_BACKOFF_SECONDS = 1.0
#: Connections a single mail's FETCH may break before it is recorded as refused.
FETCH_DROP_LIMIT = 3

#: The connection is gone or unusable: reconnect with backoff.
CONNECTION_ERRORS = (OSError, IMAPClientAbortError, EOFError)


class MailboxConfigError(ValueError):
    """An ``[[imap]]`` table is invalid; the message names the mailbox and the key."""


@dataclass(frozen=True)
class MailboxConfig:
    """One IMAP mailbox to read, from one ``[[imap]]`` table of the settings file."""

    name: str
    host: str
    user: str
    port: int = 993
    tls: Tls = "implicit"
    #: Extra CA certificates to trust (a private mail server); "" for the system's.
    ca_file: str = ""
    password: str = field(default="", repr=False)
    #: An OAuth2 access token: XOAUTH2 instead of LOGIN.
    token: str = field(default="", repr=False)
    folders: tuple[str, ...] = ("INBOX",)
    action: Action = "flag"
    flag: str = "\\Seen"
    move_to: str = ""
    #: The address mail to this mailbox is sent to, recorded as the delivery's recipient.
    address: str = ""
    idle: bool = True
    poll_seconds: float = 60.0
    timeout_seconds: float = 30.0
    backoff_max_seconds: float = 300.0


_KEYS = {
    "name",
    "host",
    "port",
    "tls",
    "ca_file",
    "user",
    "password",
    "password_env",
    "token",
    "token_env",
    "folders",
    "action",
    "flag",
    "move_to",
    "address",
    "idle",
    "poll_seconds",
    "timeout_seconds",
    "backoff_max_seconds",
}


def parse_mailboxes(raw: object, environ: Mapping[str, str] | None = None) -> list[MailboxConfig]:
    """The ``[[imap]]`` tables of the settings file, checked and typed.

    Raises ``MailboxConfigError`` naming the mailbox and the key at fault.
    """
    environ = os.environ if environ is None else environ
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        raise MailboxConfigError("imap: write each mailbox as an array of tables, [[imap]]")
    if not isinstance(raw, list):
        raise MailboxConfigError(f"imap: expected [[imap]] tables, got {type(raw).__name__}")
    mailboxes = [_parse_one(position, table, environ) for position, table in enumerate(raw)]
    seen: set[str] = set()
    for mailbox in mailboxes:
        if mailbox.name in seen:
            raise MailboxConfigError(
                f"imap mailbox {mailbox.name!r}: name is used twice; give each mailbox its own"
            )
        seen.add(mailbox.name)
    return mailboxes


#: Keys read by ``_Table.secret``: a secret and the variable naming it. Their values are never
#: shown in an error, which ends up on stderr and in logs, only their kind.
_SECRET_KEYS = frozenset({"password", "password_env", "token", "token_env"})

_KINDS = {
    bool: "true or false",
    int: "a number",
    float: "a number",
    str: "text",
    list: "a list",
    dict: "a table",
}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), f"a {type(value).__name__}")


class _Table:
    """Typed reads from one ``[[imap]]`` table, with errors naming mailbox and key."""

    def __init__(self, label: str, table: Mapping[str, Any]) -> None:
        self.label = label
        self.table = table

    def error(self, key: str, message: str) -> MailboxConfigError:
        return MailboxConfigError(f"imap mailbox {self.label}: {key}: {message}")

    @staticmethod
    def got(key: str, value: object) -> str:
        """What an error says it found: the value itself, or for a secret only its kind."""
        return f"got {_kind(value)}" if key in _SECRET_KEYS else f"got {value!r}"

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if value is None:
            raise self.error(key, "is required")
        if not isinstance(value, str):
            raise self.error(key, f"expected text, {self.got(key, value)}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, {self.got(key, value)}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low:g} and {high:g}, {self.got(key, value)}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, {self.got(key, value)}")
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, {self.got(key, value)}")
        return value

    def secret(self, key: str, environ: Mapping[str, str]) -> str:
        """``key`` itself, or the environment variable named by ``key_env``."""
        direct = self.text(key, "")
        variable = self.text(f"{key}_env", "")
        if direct and variable:
            raise self.error(key, f"give {key} or {key}_env, not both")
        if not variable:
            return direct
        value = environ.get(variable, "")
        if not value:
            raise self.error(f"{key}_env", f"environment variable {variable} is not set")
        return value


def _parse_one(position: int, table: object, environ: Mapping[str, str]) -> MailboxConfig:
    if not isinstance(table, Mapping):
        raise MailboxConfigError(f"imap mailbox #{position + 1}: expected a table")
    provisional = table.get("name") or f"#{position + 1}"
    t = _Table(repr(provisional) if isinstance(provisional, str) else str(provisional), table)
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise t.error(unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    host = t.text("host")
    user = t.text("user")
    name = t.text("name", f"{user}@{host}")
    if not name or len(name) > 100:
        raise t.error("name", "must be 1 to 100 characters")
    tls = t.choice("tls", "implicit", ("implicit", "starttls", "none"))
    password = t.secret("password", environ)
    token = t.secret("token", environ)
    if bool(password) == bool(token):
        raise t.error("password", "give a password (or password_env) or a token, exactly one")
    folders_raw = table.get("folders", ["INBOX"])
    if isinstance(folders_raw, str):
        folders_raw = [folders_raw]
    if (
        not isinstance(folders_raw, list)
        or not folders_raw
        or not all(isinstance(f, str) and f.strip() for f in folders_raw)
    ):
        raise t.error("folders", f"expected a non-empty list of folder names, got {folders_raw!r}")
    folders = tuple(dict.fromkeys(f.strip() for f in folders_raw))
    action = t.choice("action", "flag", ("flag", "move", "delete"))
    move_to = t.text("move_to", "").strip()
    if action == "move" and not move_to:
        raise t.error("move_to", 'is required with action = "move"')
    if action == "move" and move_to in folders:
        raise t.error("move_to", "must not be one of the folders read")
    flag = t.text("flag", "\\Seen").strip()
    if not flag or any(c in flag for c in ' ()[]{}"%*'):
        raise t.error("flag", f"not an IMAP flag or keyword: {flag!r}")
    ca_file = t.text("ca_file", "")
    if ca_file and not os.path.isfile(ca_file):
        raise t.error("ca_file", f"no such file {ca_file}")
    default_port = 993 if tls == "implicit" else 143
    return MailboxConfig(
        name=name,
        host=host,
        user=user,
        port=int(t.number("port", default_port, 1, 65535)),
        tls=tls,  # type: ignore[arg-type]  # checked against the choices above
        ca_file=ca_file,
        password=password,
        token=token,
        folders=folders,
        action=action,  # type: ignore[arg-type]  # checked against the choices above
        flag=flag,
        move_to=move_to,
        address=t.text("address", user if "@" in user else ""),
        idle=t.flag("idle", True),
        poll_seconds=t.number("poll_seconds", 60.0, 0.1, 86400),
        timeout_seconds=t.number("timeout_seconds", 30.0, 1, 3600),
        backoff_max_seconds=t.number("backoff_max_seconds", 300.0, 1, 86400),
    )


@dataclass
class PassResult:
    """What one pass over a mailbox's folders did."""

    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    #: Why the pass stopped short of a folder's end (a store failure), if it did.
    deferred: list[str] = field(default_factory=list)


class MailboxPoller:
    """One mailbox: its own thread for the blocking IMAP client, driven from the event loop.

    Each new mail is stored through ``ingest_email`` (the SMTP path) and only then flagged,
    moved or deleted on the server; the folder's last UID is advanced after that, so a crash
    in between makes the next pass take the mail again and the store records a duplicate.
    """

    def __init__(
        self,
        config: MailboxConfig,
        store: Store,
        *,
        max_message_bytes: int,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.store = store
        self.max_message_bytes = max_message_bytes
        self.wake = wake
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"imap-{config.name}")
        self._client: IMAPClient | None = None
        self._stop_thread = threading.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fetch_drops: dict[tuple[str, int, int], int] = {}
        #: Per folder, the highest UID the last SEARCH saw (taken, refused or deferred).
        self._highest_seen: dict[str, int] = {}
        #: Consecutive connection failures, reset by a good pass; connections made so far.
        self.failures = 0
        self.connections = 0
        self.passes = 0

    # --- the blocking side, always on this mailbox's own thread ---

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _connect_blocking(self) -> None:
        c = self.config
        context = ssl.create_default_context(cafile=c.ca_file or None)
        client = IMAPClient(
            c.host,
            port=c.port,
            ssl=c.tls == "implicit",
            ssl_context=context if c.tls == "implicit" else None,
            timeout=c.timeout_seconds,
        )
        try:
            if c.tls == "starttls":
                client.starttls(context)
            if c.token:
                client.oauth2_login(c.user, c.token)
            else:
                client.login(c.user, c.password)
            if c.action == "move" and not client.folder_exists(c.move_to):
                client.create_folder(c.move_to)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        self._client = client

    def _disconnect_blocking(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            # The connection is already broken: just release the socket.
            with contextlib.suppress(Exception):
                client.shutdown()

    def _require_client(self) -> IMAPClient:
        if self._client is None:
            raise IMAPClientAbortError("not connected")
        return self._client

    def _select_blocking(self, folder: str) -> int:
        status = self._require_client().select_folder(folder)
        return int(status[b"UIDVALIDITY"])

    def _new_uids_blocking(self, folder: str, last_uid: int) -> dict[int, int | None]:
        """UIDs above ``last_uid`` with their sizes (``None`` when the server gave none)."""
        client = self._require_client()
        # "n:*" always matches the newest message, even below n: hence the filter.
        found = client.search(["UID", f"{last_uid + 1}:*"])
        self._highest_seen[folder] = max([last_uid, *found])
        uids = sorted(u for u in found if u > last_uid)
        if not uids:
            return {}
        sizes = client.fetch(uids, ["RFC822.SIZE"])
        return {uid: _int_or_none(sizes.get(uid, {}).get(b"RFC822.SIZE")) for uid in uids}

    def _fetch_blocking(self, uid: int) -> bytes | None:
        # PEEK: taking a copy must not mark the mail read; only the action after storing may.
        response = self._require_client().fetch([uid], ["BODY.PEEK[]"]).get(uid, {})
        body = response.get(b"BODY[]")
        return bytes(body) if isinstance(body, bytes | bytearray) else None

    def _act_blocking(self, uid: int) -> None:
        client = self._require_client()
        c = self.config
        if c.action == "flag":
            client.add_flags([uid], [c.flag])
            return
        if c.action == "move" and client.has_capability("MOVE"):
            client.move([uid], c.move_to)
            return
        if c.action == "move":
            client.copy([uid], c.move_to)
        client.add_flags([uid], [b"\\Deleted"])
        if client.has_capability("UIDPLUS"):
            client.expunge([uid])
        else:
            client.expunge()

    def _idle_blocking(self, folder: str, seconds: float) -> bool:
        """Wait in IDLE until the server reports a change (True) or ``seconds`` pass."""
        client = self._require_client()
        status = client.select_folder(folder, readonly=True)
        # Mail that came after the pass's SEARCH is already counted by this SELECT, so IDLE
        # would never announce it: look at UIDNEXT first.
        uidnext = _int_or_none(status.get(b"UIDNEXT"))
        if uidnext is not None and uidnext - 1 > self._highest_seen.get(folder, 0):
            return True
        client.idle()
        try:
            deadline = time.monotonic() + seconds
            while not self._stop_thread.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                responses = client.idle_check(timeout=min(IDLE_CHECK_SECONDS, left))
                # Keep-alives ("* OK Still here") are no news.
                if any(not (isinstance(r, tuple) and r and r[0] == b"OK") for r in responses):
                    return True
            return False
        finally:
            client.idle_done()

    # --- the asynchronous side: storage, state and the reconnecting loop ---

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self) -> None:
        await self._call(self._connect_blocking)
        self.connections += 1
        log.info(
            "IMAP mailbox %s: connected to %s:%d as %s (%s), folders %s",
            self.config.name,
            self.config.host,
            self.config.port,
            self.config.user,
            self.config.tls,
            ", ".join(self.config.folders),
        )

    async def disconnect(self) -> None:
        await self._call(self._disconnect_blocking)

    async def run_once(self) -> PassResult:
        """Connect, take what is new in every folder, disconnect."""
        await self.connect()
        try:
            return await self.sync()
        finally:
            await self.disconnect()

    async def sync(self) -> PassResult:
        """One pass over every folder on the open connection."""
        result = PassResult()
        for folder in self.config.folders:
            if self._stopping.is_set():
                break
            try:
                uidvalidity = await self._call(self._select_blocking, folder)
            except CONNECTION_ERRORS:
                raise
            except IMAPClientError as exc:
                # A folder that cannot be opened (renamed, no rights) must not stop the others.
                log.error(
                    "IMAP mailbox %s: cannot open folder %r: %s", self.config.name, folder, exc
                )
                result.deferred.append(f"{folder}: cannot open: {exc}")
                continue
            await self._sync_folder(folder, uidvalidity, result)
        self.passes += 1
        return result

    async def _sync_folder(self, folder: str, uidvalidity: int, result: PassResult) -> None:
        name = self.config.name
        last_uid = await self._last_uid(folder, uidvalidity)
        for uid, size in (await self._call(self._new_uids_blocking, folder, last_uid)).items():
            if self._stopping.is_set():
                return
            raw, reason = await self._fetch_within_limits(folder, uidvalidity, uid, size)
            if raw is None:
                log.error(
                    "IMAP mailbox %s: mail UID %d in %r left on the server: %s",
                    name,
                    uid,
                    folder,
                    reason,
                )
                await self._refuse(folder, uidvalidity, uid, reason, size)
                result.refused += 1
                continue
            envelope = Envelope(
                peer=self._peer(folder, uidvalidity, uid),
                sender=None,
                recipients=(self.config.address,) if self.config.address else (),
            )
            try:
                accepted, _ = await ingest_email(self.store, raw, envelope)
            except (BlobStoreError, SQLAlchemyError, OSError) as exc:
                # Nothing is done on the server: the mail is taken again at the next pass.
                log.error(
                    "IMAP mailbox %s: could not store mail UID %d in %r, will retry: %s",
                    name,
                    uid,
                    folder,
                    exc,
                )
                result.deferred.append(f"{folder}: UID {uid}: {exc}")
                return
            if accepted.duplicate:
                result.duplicates += 1
            else:
                result.stored += 1
                self.wake()
            await self._act(folder, uid)
            await self._advance(folder, uidvalidity, uid)
            log.info(
                "IMAP mailbox %s: mail UID %d in %r stored as contact %d%s",
                name,
                uid,
                folder,
                accepted.contact_id,
                " (duplicate)" if accepted.duplicate else "",
            )

    async def _fetch_within_limits(
        self, folder: str, uidvalidity: int, uid: int, size: int | None
    ) -> tuple[bytes | None, str]:
        """The mail's bytes, or ``None`` and why it cannot be taken."""
        limit = self.max_message_bytes
        if size is not None and size > limit:
            return None, f"message of {size} bytes is over the limit of {limit}"
        try:
            raw = await self._call(self._fetch_blocking, uid)
        except CONNECTION_ERRORS as exc:
            await self._count_fetch_drop(folder, uidvalidity, uid, size, exc)
            raise
        except IMAPClientError as exc:
            return None, f"FETCH failed: {exc}"
        if raw is None:
            return None, "FETCH returned no body"
        if len(raw) > limit:
            # The server's RFC822.SIZE may be missing or wrong: the bytes are what count.
            return None, f"message of {len(raw)} bytes is over the limit of {limit}"
        return raw, ""

    async def _count_fetch_drop(
        self, folder: str, uidvalidity: int, uid: int, size: int | None, exc: Exception
    ) -> None:
        """A mail the server cannot read (a corrupt file) may drop the connection on every
        FETCH: after a few such drops it is set aside, or it would block the folder for ever."""
        key = (folder, uidvalidity, uid)
        drops = self._fetch_drops[key] = self._fetch_drops.get(key, 0) + 1
        if drops < FETCH_DROP_LIMIT:
            return
        del self._fetch_drops[key]
        reason = f"the server dropped the connection on each of {drops} FETCHes of it ({exc})"
        log.error(
            "IMAP mailbox %s: mail UID %d in %r left on the server: %s",
            self.config.name,
            uid,
            folder,
            reason,
        )
        await self._refuse(folder, uidvalidity, uid, reason, size)

    async def _act(self, folder: str, uid: int) -> None:
        try:
            await self._call(self._act_blocking, uid)
        except CONNECTION_ERRORS:
            raise
        except IMAPClientError as exc:
            # The contact is stored: retrying the action forever would only pile up duplicate
            # deliveries, so the mail stays where it is and the failure is said loudly.
            log.error(
                "IMAP mailbox %s: mail UID %d in %r is stored but the %s action failed: %s",
                self.config.name,
                uid,
                folder,
                self.config.action,
                exc,
            )

    def _peer(self, folder: str, uidvalidity: int, uid: int) -> str:
        """Which mail a delivery came from, in the form of an RFC 5092 IMAP URL."""
        c = self.config
        url = f"imap://{c.user}@{c.host}:{c.port}/{folder};UIDVALIDITY={uidvalidity}/;UID={uid}"
        return url[:200]

    async def _last_uid(self, folder: str, uidvalidity: int) -> int:
        async with self.store.sessions() as session, session.begin():
            state = await session.get(ImapFolderState, (self.config.name, folder))
            if state is None:
                session.add(
                    ImapFolderState(
                        mailbox=self.config.name, folder=folder, uidvalidity=uidvalidity, last_uid=0
                    )
                )
                return 0
            if state.uidvalidity != uidvalidity:
                # The server renumbered the folder: read it all again. Mail already stored
                # comes back as duplicate deliveries of the same contacts (Message-ID key).
                log.warning(
                    "IMAP mailbox %s: folder %r UIDVALIDITY changed from %d to %d; resynchronising",
                    self.config.name,
                    folder,
                    state.uidvalidity,
                    uidvalidity,
                )
                state.uidvalidity = uidvalidity
                state.last_uid = 0
            return state.last_uid

    async def _advance(self, folder: str, uidvalidity: int, uid: int) -> None:
        async with self.store.sessions() as session, session.begin():
            state = await session.get(ImapFolderState, (self.config.name, folder))
            if state is None or state.uidvalidity != uidvalidity:
                return
            state.last_uid = max(state.last_uid, uid)

    async def _refuse(
        self, folder: str, uidvalidity: int, uid: int, reason: str, size: int | None
    ) -> None:
        """Record a mail that cannot be taken, once, and move past it."""
        key = (self.config.name, folder, uidvalidity, uid)
        async with self.store.sessions() as session, session.begin():
            if await session.get(ImapRefusedMail, key) is None:
                session.add(
                    ImapRefusedMail(
                        mailbox=key[0],
                        folder=folder,
                        uidvalidity=uidvalidity,
                        uid=uid,
                        reason=reason,
                        size=size,
                    )
                )
        await self._advance(folder, uidvalidity, uid)

    async def refused(self) -> list[ImapRefusedMail]:
        async with self.store.sessions() as session:
            rows = await session.scalars(
                select(ImapRefusedMail)
                .where(ImapRefusedMail.mailbox == self.config.name)
                .order_by(ImapRefusedMail.folder, ImapRefusedMail.uid)
            )
            return list(rows)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"imap {self.config.name}")

    async def stop(self) -> None:
        self._stopping.set()
        self._stop_thread.set()
        if self._task is not None:
            # IDLE notices the stop within IDLE_CHECK_SECONDS; a blocked read within the timeout.
            done, _ = await asyncio.wait({self._task}, timeout=self.config.timeout_seconds + 5)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self._call(self._disconnect_blocking)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def _run(self) -> None:
        delay = FIRST_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                await self.connect()
                while not self._stopping.is_set():
                    await self.sync()
                    self.failures = 0
                    delay = FIRST_BACKOFF_SECONDS
                    await self._wait_for_news()
            except (*CONNECTION_ERRORS, IMAPClientError) as exc:
                self.failures += 1
                if not self._stopping.is_set():
                    log.warning(
                        "IMAP mailbox %s: %s: %s; reconnecting in %.0fs",
                        self.config.name,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
            except Exception:
                # Never let one mailbox's surprise end its poller: log it and start over.
                self.failures += 1
                log.exception(
                    "IMAP mailbox %s: unexpected error; reconnecting in %.0fs",
                    self.config.name,
                    delay,
                )
            await self._call(self._disconnect_blocking)
            if await self._sleep(delay):
                return
            delay = min(delay * 2, self.config.backoff_max_seconds)

    async def _wait_for_news(self) -> None:
        c = self.config
        client = self._require_client()
        if c.idle and client.has_capability("IDLE"):
            seconds = min(c.poll_seconds, MAX_IDLE_SECONDS)
            await self._call(self._idle_blocking, c.folders[0], seconds)
        else:
            await self._sleep(c.poll_seconds)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the service is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ImapAdapter:
    """All configured mailboxes, each with its own poller; no HTTP routes."""

    name = "imap"

    def __init__(
        self,
        store: Store,
        mailboxes: Sequence[MailboxConfig],
        *,
        max_message_bytes: int,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.pollers = [
            MailboxPoller(m, store, max_message_bytes=max_message_bytes, wake=wake)
            for m in mailboxes
        ]

    def routes(self) -> Sequence[web.RouteDef]:
        return []

    async def start(self) -> None:
        for poller in self.pollers:
            await poller.start()

    async def stop(self) -> None:
        await asyncio.gather(*(poller.stop() for poller in self.pollers))


__all__ = [
    "ImapAdapter",
    "MailboxConfig",
    "MailboxConfigError",
    "MailboxPoller",
    "PassResult",
    "parse_mailboxes",
]
