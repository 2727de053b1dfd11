"""SMS and MMS through Twilio: signed webhooks in, media downloads, REST sender, opt-outs."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import mimetypes
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import phonenumbers
import urllib3
from aiohttp import web
from multidict import MultiDict
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.rest import Client

from channels.base import DeliveryError
from models import jobs
from models.blobs import BlobStoreError, InsufficientStorage
from models.clock import utcnow
from models.inbound import InboundContact
from models.jobs import CONTACT_JOB, ClaimedJob
from models.store import Envelope, Store, audit
from models.tables import Contact, Document, Job, OutboundMessage, SmsOptOut

log = logging.getLogger(__name__)

CHANNEL = "sms"
MEDIA_JOB = "twilio_media"
INBOUND_PATH = "/channels/twilio/sms"
STATUS_PATH = "/channels/twilio/status"
#: Twilio sends nothing back when the answer is empty; replies leave through the outbox.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
#: Twilio accepts at most 10 media per message; a form claiming more is not trusted further.
MAX_MEDIA = 10
MAX_REDIRECTS = 5
#: What a 503 asks the caller to wait before trying again (disk nearly full, store down).
RETRY_AFTER_SECONDS = 60
#: What a webhook may carry into the store: Twilio SIDs are 34 characters, states one word;
#: anything else is refused with a 400 rather than failing on a column size.
_SID = re.compile(r"[A-Za-z0-9_-]{1,60}")
_STATE = re.compile(r"[a-z_-]{1,30}")
_MAX_ERROR_CODE = 20
_MAX_ADDRESS = 320

#: Whole-message keywords, compared without case, accents or surrounding punctuation.
STOP_KEYWORDS = frozenset(
    {"stop", "arret", "stop sms", "desabonner", "stopall", "unsubscribe", "stop all"}
)
START_KEYWORDS = frozenset({"start", "unstop"})
OPT_OUT_REASON = "SMS opt-out keyword"
OPT_IN_REASON = "SMS opt-in keyword"


# Every webhook carries our own number, and a beneficiary writes many times: parsing the same
# strings again was 4-5 % of a front's time under a flood of SMS.
@functools.lru_cache(maxsize=4096)
def e164(raw: str) -> str:
    """A phone number in E.164 (``+33612345678``); what cannot be read is kept as given."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "FR")
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(number):
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def opt_keyword(body: str) -> str | None:
    """``"stop"`` or ``"start"`` when the whole message is one of the keywords, else None."""
    decomposed = unicodedata.normalize("NFKD", body)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    words = " ".join(re.findall(r"\w+", plain))
    if words in STOP_KEYWORDS:
        return "stop"
    if words in START_KEYWORDS:
        return "start"
    return None


def _text(value: str) -> str:
    return value.replace("\x00", "")


def media_count(form: MultiDict[str]) -> int:
    try:
        return max(0, min(int(form.get("NumMedia", "0") or "0"), MAX_MEDIA))
    except ValueError:
        return 0


@dataclass(frozen=True)
class MediaHosts:
    """The hosts media may come from: ``host`` (on the scheme's default port) or ``host:port``.

    Every URL, the first and each redirect, is checked here before any request is made: a
    webhook body names the URLs, and Guichet must never be made to fetch anything else (SSRF).
    """

    allowed: frozenset[tuple[str, int | None]]

    @classmethod
    def parse(cls, setting: str) -> MediaHosts:
        allowed: set[tuple[str, int | None]] = set()
        for item in setting.split(","):
            item = item.strip().lower()
            if not item:
                continue
            host, sep, port = item.rpartition(":")
            if sep and port.isdigit():
                allowed.add((host, int(port)))
            else:
                allowed.add((item, None))
        return cls(frozenset(allowed))

    def why_refused(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"media URL scheme {parts.scheme!r} is not http(s)"
        host = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            return "media URL has an invalid port"
        if parts.username or parts.password:
            return "media URL carries credentials of its own"
        default = 443 if parts.scheme == "https" else 80
        if (host, port or default) in self.allowed:
            return None
        if port in (None, default) and (host, None) in self.allowed:
            return None
        return f"media host {parts.netloc} is not one of Twilio's media hosts"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    auth_token: str

    def validator(self) -> RequestValidator:
        return RequestValidator(self.auth_token)


def verified_form(
    account: TwilioAccount, public_url: str, path_qs: str, headers: dict[str, str], body: bytes
) -> MultiDict[str] | None:
    """The webhook's form when its ``X-Twilio-Signature`` is right for the public URL, else
    None. Twilio signs the URL it called, which is the proxy's, not ours."""
    signature = headers.get(SIGNATURE_HEADER.lower(), "")
    if not signature:
        return None
    try:
        form = MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return None
    url = public_url.rstrip("/") + path_qs
    algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER.lower()))
    if not account.validator().validate(url, form, signature, algorithm):
        return None
    return form


class TwilioWebhooks:
    """The inbound adapter: ``POST /channels/twilio/sms`` (messages) and ``/status``
    (delivery receipts). Each handler checks the signature, stores, and answers at once."""

    name = "twilio"

    def __init__(
        self,
        store: Store,
        account: TwilioAccount,
        public_url: str,
        wake: Callable[[], None] = lambda: None,
        status_wait_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.account = account
        self.public_url = public_url
        self.wake = wake
        self.status_wait_seconds = status_wait_seconds

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(INBOUND_PATH, self.inbound), web.post(STATUS_PATH, self.status)]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def _form(self, request: web.Request) -> tuple[bytes, MultiDict[str] | None]:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        form = verified_form(self.account, self.public_url, request.raw_path, headers, body)
        if form is None:
            log.warning("Twilio webhook %s from %s: bad signature", request.path, request.remote)
        return body, form

    async def inbound(self, request: web.Request) -> web.Response:
        body, form = await self._form(request)
        if form is None:
            return web.Response(status=403, text="invalid X-Twilio-Signature\n")
        sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
        if not sid:
            return web.Response(status=400, text="MessageSid is missing\n")
        # Refused, not stored: a database error would be a 503 that Twilio retries for ever.
        if not _SID.fullmatch(sid):
            return web.Response(status=400, text="MessageSid is not a Twilio SID\n")
        sender = e164(_text(form.get("From", "")))
        to = e164(_text(form.get("To", "")))
        if len(sender) > _MAX_ADDRESS or len(to) > _MAX_ADDRESS:
            return web.Response(status=400, text="From or To is too long for an address\n")
        # The raw form keeps the NUL; PostgreSQL text columns cannot.
        text = _text(form.get("Body", ""))
        keyword = opt_keyword(text)
        inbound = InboundContact(
            channel=CHANNEL,
            natural_key=sid,
            sender=sender,
            recipients=(to,) if to else (),
            text=text,
            automatic_reason={"stop": OPT_OUT_REASON, "start": OPT_IN_REASON}.get(keyword or ""),
        )
        envelope = Envelope(peer=request.remote or "", sender=sender, recipients=inbound.recipients)
        first_job = MEDIA_JOB if media_count(form) else CONTACT_JOB
        try:
            accepted = await self.store.accept_contact(inbound, body, envelope, first_job)
            if keyword is not None and sender:
                await record_opt_change(self.store, sender, keyword, text, accepted.contact_id)
        except (BlobStoreError, SQLAlchemyError, OSError) as exc:
            # Not acknowledged, so Twilio's retry (or its fallback URL) gets another chance.
            if isinstance(exc, InsufficientStorage):
                log.error("refusing Twilio message %s for now: %s", sid, exc)
                text = "insufficient storage, try again later\n"
            else:
                log.error("could not store Twilio message %s: %s", sid, exc)
                text = "temporary failure storing the message\n"
            return web.Response(
                status=503, text=text, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            )
        self.wake()
        return web.Response(body=EMPTY_TWIML.encode(), content_type="text/xml", charset="utf-8")

    async def status(self, request: web.Request) -> web.Response:
        _, form = await self._form(request)
        if form is None:
            return web.Response(status=403, text="invalid X-Twilio-Signature\n")
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        state = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        if not sid or not state:
            return web.Response(status=400, text="MessageSid and MessageStatus are required\n")
        if not _SID.fullmatch(sid) or not _STATE.fullmatch(state):
            return web.Response(status=400, text="MessageSid or MessageStatus is malformed\n")
        error_code = _text(form.get("ErrorCode", ""))[:_MAX_ERROR_CODE] or None
        # A receipt can overtake the commit that records the SID on the message: wait a little.
        deadline = asyncio.get_running_loop().time() + self.status_wait_seconds
        while True:
            found = await apply_status(self.store, sid, state, error_code)
            if found or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.2)
        if not found:
            async with self.store.sessions() as session, session.begin():
                audit(
                    session,
                    "channel:sms",
                    "reply.status_unmatched",
                    "twilio_message",
                    sid,
                    after={"status": state, "error_code": error_code},
                    note="delivery status for a message Guichet does not know",
                )
        return web.Response(body=EMPTY_TWIML.encode(), content_type="text/xml", charset="utf-8")


async def record_opt_change(
    store: Store, phone: str, keyword: str, text: str, contact_id: int
) -> None:
    """Record STOP or START for ``phone``; idempotent for Twilio's retries of one message."""
    opted_out = keyword == "stop"
    async with store.sessions() as session, session.begin():
        row = await session.scalar(
            select(SmsOptOut).where(SmsOptOut.phone == phone).with_for_update()
        )
        if row is not None and row.contact_id is not None and row.contact_id >= contact_id:
            return
        before = None if row is None else {"opted_out": row.opted_out, "keyword": row.keyword}
        if row is None:
            row = SmsOptOut(phone=phone)
            session.add(row)
        row.opted_out = opted_out
        row.keyword = text.strip()[:40]
        row.changed_at = utcnow()
        row.contact_id = contact_id
        await session.flush()
        audit(
            session,
            "channel:sms",
            "sms.opt_out" if opted_out else "sms.opt_in",
            "sms_opt_out",
            row.id,
            before=before,
            after={"phone": phone, "opted_out": opted_out, "contact_id": contact_id},
            note=f"keyword {row.keyword!r} from {phone}",
        )


async def is_opted_out(session: AsyncSession, phone: str) -> bool:
    found = await session.scalar(select(SmsOptOut.opted_out).where(SmsOptOut.phone == phone))
    return bool(found)


async def opt_out_check(session: AsyncSession, message: OutboundMessage) -> str | None:
    """Pre-send check: no SMS leaves for a number that said STOP and not START since."""
    if message.channel != CHANNEL:
        return None
    if await is_opted_out(session, e164(message.recipient)):
        return (
            f"{message.recipient} opted out of SMS (STOP): no SMS is sent to it until it "
            "sends START, replies by a person included"
        )
    return None


#: Twilio's delivery states that mean the message will not arrive.
FAILED_STATES = frozenset({"undelivered", "failed"})


async def apply_status(store: Store, sid: str, state: str, error_code: str | None) -> bool:
    """Record one delivery receipt on the outbound message with provider id ``sid``; False
    when no such message exists (yet)."""
    async with store.sessions() as session, session.begin():
        message = await session.scalar(
            select(OutboundMessage)
            .where(OutboundMessage.provider_id == sid, OutboundMessage.channel == CHANNEL)
            .with_for_update()
        )
        if message is None:
            return False
        event = {"source": "twilio", "status": state, "detail": error_code or sid}
        if any(
            {k: e.get(k) for k in ("source", "status", "detail")} == event for e in message.events
        ):
            return True  # Twilio repeats receipts; one event per state is enough.
        message.events = [*message.events, {"at": utcnow().isoformat(), **event}]
        before = {"status": message.status, "reason": message.status_reason}
        if state in FAILED_STATES:
            message.status = "failed"
            message.status_reason = f"Twilio reports {state}, error code {error_code or 'none'}"
        audit(
            session,
            "channel:sms",
            "reply.failed" if state in FAILED_STATES else f"reply.{state}",
            "outbound_message",
            message.id,
            before=before,
            after={"status": message.status, "reason": message.status_reason},
            note=f"Twilio {sid}: {state}" + (f" ({error_code})" if error_code else ""),
        )
        return True


class TwilioSender:
    """Outbound SMS through Twilio's REST API; the blocking client runs in a thread."""

    channel = CHANNEL

    def __init__(
        self,
        account: TwilioAccount,
        sender_id: str,
        api_base: str,
        status_callback: str | None,
        timeout: float = 30.0,
    ) -> None:
        self.account = account
        self.sender_id = sender_id
        self.api_base = api_base.rstrip("/")
        self.status_callback = status_callback
        self.timeout = timeout

    async def send(self, message: OutboundMessage) -> str:
        if not message.recipient or not message.body_text.strip():
            raise DeliveryError("an SMS needs a recipient and a text", permanent=True)
        if not self.sender_id:
            raise DeliveryError("no sending number or Messaging Service SID configured")
        return await asyncio.to_thread(self._send, e164(message.recipient), message.body_text)

    def _send(self, to: str, body: str) -> str:
        http = TwilioHttpClient(timeout=self.timeout)
        params: dict[str, str] = {"to": to, "body": body}
        if self.sender_id.startswith("MG"):
            params["messaging_service_sid"] = self.sender_id
        else:
            params["from_"] = self.sender_id
        if self.status_callback:
            params["status_callback"] = self.status_callback
        try:
            client = Client(self.account.account_sid, self.account.auth_token, http_client=http)
            # The one documented knob for the REST host: the API domain's base URL.
            client.api.base_url = self.api_base
            created = client.messages.create(**params)
        except TwilioRestException as exc:
            raise rest_error(exc) from exc
        except OSError as exc:  # requests' errors are OSErrors: connection refused, timeout…
            raise transport_error(exc) from exc
        except Exception as exc:
            # An answer came back that the client could not read (not Twilio's JSON: a proxy
            # answered, a body cut short). The request did reach the API: the SMS may have
            # left, and a second request could send it twice.
            raise DeliveryError(
                f"Twilio's answer could not be read ({type(exc).__name__}: {exc}): the SMS may"
                " have left; check the number's message log before sending it again",
                uncertain=True,
            ) from exc
        finally:
            if http.session is not None:
                http.session.close()
        if not created.sid:
            # Accepted but unnamed: trying again could send it twice, so it stops here.
            raise DeliveryError("Twilio accepted the message but returned no SID", permanent=True)
        return str(created.sid)


def transport_error(exc: OSError) -> DeliveryError:
    """Trying again is safe only when no connection was made (refused, name not found, connect
    timeout): the request cannot have reached Twilio. Once it may have been sent (no answer in
    time, connection lost or TLS broken on the way), Twilio may have taken the message and a
    second request could send the SMS twice: the reply becomes uncertain instead."""
    name = f"{type(exc).__name__}: {exc}"
    # requests wraps urllib3's error: a MaxRetryError for a ConnectTimeoutError (refused and
    # unresolvable are kinds of it) is the one case where no byte of the request left.
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError) and isinstance(
        cause.reason, urllib3.exceptions.ConnectTimeoutError
    ):
        return DeliveryError(f"Twilio unreachable: {name}")
    return DeliveryError(
        f"Twilio's answer was lost ({name}): the request may have reached it and the SMS may"
        " have left; check the number's message log before sending it again",
        uncertain=True,
    )


def rest_error(exc: TwilioRestException) -> DeliveryError:
    """429 and 5xx may pass later; any other 4xx (21211 invalid To, 21610 unsubscribed
    recipient, 21408 region not enabled…) never will."""
    status = int(exc.status)
    reason = f"Twilio {status} error {exc.code}: {exc.msg}"
    return DeliveryError(reason, permanent=400 <= status < 500 and status != 429)


class MediaDownload:
    """Job handler for ``twilio_media``: fetch an MMS's media into the store as documents,
    then start the contact's intake.

    Media URLs are read again from the raw webhook body kept with the contact. Each medium is
    committed as a document as soon as it is fetched (or refused), so a replayed job resumes
    with the next one. Network errors raise, and the runner retries with its backoff; once it
    gives up, ``on_parked`` records what is left as failed and starts intake all the same.
    """

    kind = MEDIA_JOB

    def __init__(
        self,
        store: Store,
        account: TwilioAccount,
        hosts: MediaHosts,
        max_bytes: int,
        wake: Callable[[], None] = lambda: None,
        timeout: float = 60.0,
    ) -> None:
        self.store = store
        self.account = account
        self.hosts = hosts
        self.max_bytes = max_bytes
        self.wake = wake
        self.timeout = timeout

    async def _media(
        self, session: AsyncSession, contact_id: int
    ) -> tuple[list[tuple[int, str, str]], set[int]]:
        """The contact's (index, URL, declared type) and the indexes already recorded."""
        digest = await session.scalar(select(Contact.raw_sha256).where(Contact.id == contact_id))
        positions = set(
            (
                await session.scalars(
                    select(Document.position).where(Document.contact_id == contact_id)
                )
            ).all()
        )
        raw = await self.store.raw_content(digest, session) if digest else b""
        form = MultiDict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        media = [
            (n, form.get(f"MediaUrl{n}", ""), form.get(f"MediaContentType{n}", ""))
            for n in range(media_count(form))
        ]
        return media, positions

    async def run(self, job: ClaimedJob) -> None:
        async with self.store.sessions() as session:
            media, done = await self._media(session, job.subject_id)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for index, url, declared in media:
                if index in done:
                    continue
                fetched = await self._fetch(http, url)
                await self._record(job.subject_id, index, url, declared, fetched)
        await self._start_intake(job.subject_id)

    async def _fetch(self, http: aiohttp.ClientSession, url: str) -> Fetched:
        """Follow redirects by hand so that each hop is checked against the allowed hosts,
        and send the account's credentials only to the origin Twilio named first."""
        first = _origin(url)
        credentials = {
            "Authorization": aiohttp.encode_basic_auth(
                self.account.account_sid, self.account.auth_token
            )
        }
        for _ in range(MAX_REDIRECTS + 1):
            refused = self.hosts.why_refused(url) if url else "no media URL given"
            if refused is not None:
                return Fetched("refused", refused)
            async with http.get(
                url, allow_redirects=False, headers=credentials if _origin(url) == first else None
            ) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    if not location:
                        return Fetched("failed", f"HTTP {response.status} without Location")
                    url = urljoin(url, location)
                    continue
                if response.status >= 500 or response.status == 429:
                    raise MediaTemporaryError(f"media host answered HTTP {response.status}")
                if response.status != 200:
                    return Fetched("failed", f"media host answered HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > self.max_bytes:
                    return Fetched(
                        "too_large",
                        f"{declared} bytes announced, over the {self.max_bytes}-byte limit;"
                        " not downloaded",
                    )
                content = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    content += chunk
                    if len(content) > self.max_bytes:
                        return Fetched(
                            "too_large",
                            f"over the {self.max_bytes}-byte limit; download stopped",
                        )
                return Fetched("pending", None, bytes(content), response.content_type)
        return Fetched("refused", f"more than {MAX_REDIRECTS} redirects")

    async def _record(
        self, contact_id: int, index: int, url: str, declared: str, fetched: Fetched
    ) -> None:
        digest = await asyncio.to_thread(self.store.blobs.put, fetched.content)
        content_type = declared or fetched.content_type or "application/octet-stream"
        async with self.store.sessions() as session, session.begin():
            document = Document(
                contact_id=contact_id,
                position=index,
                filename=media_filename(index, content_type),
                declared_type=content_type[:200],
                sha256=digest,
                size=len(fetched.content),
                status=fetched.status,
                reason=fetched.reason,
                text_source=None if fetched.status == "pending" else "none",
            )
            session.add(document)
            if fetched.status != "pending":
                await session.flush()
                audit(
                    session,
                    "channel:sms",
                    f"media.{fetched.status}",
                    "document",
                    document.id,
                    note=f"{_redact(url)}: {fetched.reason}",
                )

    async def _start_intake(self, contact_id: int, session: AsyncSession | None = None) -> None:
        if session is None:
            async with self.store.sessions() as session, session.begin():
                await self._enqueue_intake(session, contact_id)
            self.wake()
        else:
            await self._enqueue_intake(session, contact_id)

    @staticmethod
    async def _enqueue_intake(session: AsyncSession, contact_id: int) -> None:
        # A replay after a crash between this commit and the job's completion finds it here.
        queued = await session.scalar(
            select(Job.id).where(Job.kind == CONTACT_JOB, Job.subject_id == contact_id)
        )
        if queued is None:
            jobs.enqueue(session, CONTACT_JOB, contact_id)

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        # Only the runner's session: on SQLite a second one would wait for its write lock.
        media, done = await self._media(session, job.subject_id)
        empty = hashlib.sha256(b"").hexdigest()
        await asyncio.to_thread(self.store.blobs.put, b"")
        for index, url, declared in media:
            if index in done:
                continue
            content_type = declared or "application/octet-stream"
            session.add(
                Document(
                    contact_id=job.subject_id,
                    position=index,
                    filename=media_filename(index, content_type),
                    declared_type=content_type[:200],
                    sha256=empty,
                    size=0,
                    status="failed",
                    reason=f"download failed after {job.attempts} attempts: {error}",
                    text_source="none",
                )
            )
            audit(
                session,
                "channel:sms",
                "media.failed",
                "contact",
                job.subject_id,
                note=f"{_redact(url)}: {error}",
            )
        await self._start_intake(job.subject_id, session)


class MediaTemporaryError(Exception):
    """The media host failed in a way a later attempt may not."""


@dataclass(frozen=True)
class Fetched:
    status: str
    reason: str | None
    content: bytes = b""
    content_type: str = ""


def media_filename(index: int, content_type: str) -> str:
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"mms-{index + 1}{extension}"


def _redact(url: str) -> str:
    """The URL without its query: CDN links carry signed, short-lived tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
