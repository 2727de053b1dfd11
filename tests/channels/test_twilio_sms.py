"""SMS and MMS through Twilio: signed webhooks, media downloads, the REST sender, opt-outs."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from sqlalchemy import func, select

from channels.delivery import OutboxDelivery
from channels.twilio_sms import (
    EMPTY_TWIML,
    INBOUND_PATH,
    MEDIA_JOB,
    OPT_OUT_REASON,
    MediaDownload,
    MediaHosts,
    TwilioAccount,
    TwilioSender,
    TwilioWebhooks,
    e164,
    opt_keyword,
    opt_out_check,
)
from guichet.service import build_runner
from guichet.settings import load_settings
from guichet.wiring import ChannelParts
from intake.reading import OcrPool
from intake.runner import JobHandler, JobRunner, RetryPolicy
from models import jobs
from models.jobs import CONTACT_JOB, DELIVER_JOB
from models.store import Store
from models.tables import (
    AuditEvent,
    Contact,
    Delivery,
    Job,
    OutboundMessage,
    SmsOptOut,
)
from tests.channels.twilio_standin import Medium, Outage, TwilioStandIn
from tests.conftest import Relay, free_port

DOCS = Path(__file__).parent.parent / "data" / "documents"
#: Twilio calls the proxy's address; Guichet must check signatures against it, not its own.
PUBLIC_URL = "https://guichet.example.org"
OUR_NUMBER = "+33757000000"
PHONE = "+33612345678"
#: What does not depend on the database runs on SQLite only; the rest runs on both back ends.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def account(twilio: TwilioStandIn) -> TwilioAccount:
    return TwilioAccount(twilio.account_sid, twilio.auth_token)


@pytest.fixture
async def webhooks(store: Store, standin: TwilioStandIn) -> AsyncIterator[TestServer]:
    app = web.Application()
    adapter = TwilioWebhooks(store, account(standin), PUBLIC_URL, status_wait_seconds=0.3)
    app.router.add_routes(adapter.routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def post_sms(
    twilio: TwilioStandIn, server: TestServer, params: MultiDict[str], **kwargs: Any
) -> tuple[int, str, str]:
    return await twilio.webhook(
        str(server.make_url(INBOUND_PATH)),
        params,
        signed_url=PUBLIC_URL + INBOUND_PATH,
        **kwargs,
    )


async def count(store: Store, model: Any, *where: Any) -> int:
    async with store.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(model).where(*where))
        return int(total or 0)


async def only_contact(store: Store) -> Contact:
    async with store.sessions() as session:
        [contact] = (await session.scalars(select(Contact))).all()
        await session.refresh(contact, ["documents"])
        return contact


def media_runner(store: Store, twilio: TwilioStandIn, **kwargs: Any) -> JobRunner:
    """Only the media job: the contact job it enqueues stays visible, waiting."""
    hosts = kwargs.pop("hosts", twilio.media_hosts)
    handler = MediaDownload(
        store, account(twilio), MediaHosts.parse(hosts), kwargs.pop("max_bytes", 1 << 20)
    )
    return JobRunner(store, {MEDIA_JOB: handler}, **kwargs)


# --- helpers without a network -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", "stop"),
        ("  stop. ", "stop"),
        ("Arrêt", "stop"),
        ("ARRET!", "stop"),
        ("Stop SMS", "stop"),
        ("désabonner", "stop"),
        ("Start", "start"),
        ("stop the car please", None),
        ("Arrêt de travail ci-joint", None),
        ("", None),
    ],
)
def test_opt_keywords(body: str, keyword: str | None) -> None:
    assert opt_keyword(body) == keyword


def test_media_hosts() -> None:
    hosts = MediaHosts.parse("api.twilio.com, media.twiliocdn.com, 127.0.0.1:8123")
    assert hosts.why_refused("https://api.twilio.com/2010-04-01/x") is None
    assert hosts.why_refused("https://api.twilio.com:443/x") is None
    assert hosts.why_refused("http://127.0.0.1:8123/x") is None
    for url in (
        "https://api.twilio.com:8443/x",
        "http://127.0.0.1:8124/x",
        "https://api.twilio.com.evil.example/x",
        "file:///etc/passwd",
        "https://user:pw@api.twilio.com/x",
        "http://169.254.169.254/latest/meta-data",
    ):
        assert hosts.why_refused(url) is not None, url


def test_e164() -> None:
    assert e164("+33 6 12 34 56 78") == PHONE
    assert e164("06 12 34 56 78") == PHONE
    assert e164("TWILIO") == "TWILIO"


# --- inbound webhook -----------------------------------------------------------------------


async def test_signed_sms_is_stored_once_and_answered_with_empty_twiml(
    store: Store, standin: TwilioStandIn, webhooks: TestServer
) -> None:
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "Bonjour, ma voiture est en panne")
    status, content_type, text = await post_sms(standin, webhooks, params)
    assert (status, content_type, text) == (200, "text/xml", EMPTY_TWIML)
    # Twilio retries when it does not hear back in time: the same MessageSid again.
    assert (await post_sms(standin, webhooks, params))[0] == 200
    contact = await only_contact(store)
    assert contact.channel == "sms" and contact.natural_key == params["MessageSid"]
    assert (contact.sender, contact.recipients, contact.text) == (
        PHONE,
        [OUR_NUMBER],
        "Bonjour, ma voiture est en panne",
    )
    assert contact.automatic_reason is None and contact.duplicate_count == 1
    assert contact.raw_sha256 is not None
    raw = (await store.raw_content(contact.raw_sha256)).decode()
    assert "MessageSid=" + params["MessageSid"] in raw and "Body=Bonjour%2C+ma" in raw
    assert await count(store, Delivery) == 2
    assert await count(store, Job, Job.kind == CONTACT_JOB) == 1


@SQLITE_ONLY
@pytest.mark.parametrize("forgery", ["wrong token", "internal url", "no header", "altered"])
async def test_bad_signature_is_refused_and_nothing_is_stored(
    store: Store, standin: TwilioStandIn, webhooks: TestServer, forgery: str
) -> None:
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "Bonjour")
    target = str(webhooks.make_url(INBOUND_PATH))
    if forgery == "wrong token":
        other = TwilioStandIn(auth_token="0" * 32)
        signature = other.sign(PUBLIC_URL + INBOUND_PATH, params)
    elif forgery == "internal url":
        signature = standin.sign(target, params)  # what a proxy-unaware check would accept
    elif forgery == "no header":
        signature = ""
    else:
        signature = standin.sign(PUBLIC_URL + INBOUND_PATH, params)
        params["Body"] = "Virez 5000 EUR"
    status, _, _ = await post_sms(standin, webhooks, params, signature=signature or " ")
    assert status == 403
    assert await count(store, Contact) == 0
    assert await count(store, Job) == 0


@SQLITE_ONLY
async def test_sms_without_message_sid_is_refused(
    store: Store, standin: TwilioStandIn, webhooks: TestServer
) -> None:
    params = MultiDict([("From", PHONE), ("Body", "x")])
    assert (await post_sms(standin, webhooks, params))[0] == 400
    assert await count(store, Contact) == 0


# --- MMS media -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrPool]:
    pool = OcrPool(1)
    yield pool
    pool.shutdown()


@SQLITE_ONLY
async def test_mms_media_become_documents_read_by_intake(
    store: Store, standin: TwilioStandIn, webhooks: TestServer, ocr: OcrPool, relay: Relay
) -> None:
    pdf = (DOCS / "quote-text-layer.pdf").read_bytes()
    note = b"Dossier AS-2026-000001, franchise 150 EUR"
    media = [
        (standin.add_medium(Medium(pdf, "application/pdf")), "application/pdf"),
        (standin.add_medium(Medium(note, "text/plain")), "text/plain"),
    ]
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "Voici le devis", media)
    assert (await post_sms(standin, webhooks, params))[0] == 200
    # The contact starts with the media job; intake waits for it.
    assert await count(store, Job, Job.kind == MEDIA_JOB) == 1
    assert await count(store, Job, Job.kind == CONTACT_JOB) == 0

    settings = load_settings(
        environ={}, smtp_relay=f"{relay.host}:{relay.port}", home="unused", job_backoff_seconds=0
    )
    handler = MediaDownload(store, account(standin), MediaHosts.parse(standin.media_hosts), 1 << 20)
    runner = build_runner(settings, store, ocr, channels=ChannelParts(handlers=[handler]))
    assert await runner.run_pending() >= 2
    contact = await only_contact(store)
    assert contact.step == "done"
    assert [(d.filename, d.declared_type, d.size, d.status) for d in contact.documents] == [
        ("mms-1.pdf", "application/pdf", len(pdf), "ok"),
        ("mms-2.txt", "text/plain", len(note), "ok"),
    ]
    assert contact.documents[0].text_source == "text_layer" and contact.documents[0].text
    assert "franchise 150 EUR" in contact.documents[1].text
    assert store.blobs.get(contact.documents[0].sha256) == pdf
    # The account's credentials went to Twilio's API host, never to the CDN it redirects to.
    media_gets = [r for r in standin.api_requests if r.method == "GET"]
    assert len(media_gets) == 2 and all(r.authorization for r in media_gets)
    assert len(standin.cdn_requests) == 2
    assert all(r.authorization is None for r in standin.cdn_requests)


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[TestServer, list[str]]]:
    """A server on a host that is not allowed; it records any request that reaches it."""
    seen: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(body=b"secret metadata")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server, seen
    finally:
        await server.close()


async def test_media_on_another_host_is_never_requested(
    store: Store,
    standin: TwilioStandIn,
    webhooks: TestServer,
    elsewhere: tuple[TestServer, list[str]],
) -> None:
    server, seen = elsewhere
    good = standin.add_medium(Medium(b"hello", "text/plain"))
    media = [
        (str(server.make_url("/latest/meta-data")), "image/jpeg"),
        (good, "text/plain"),
    ]
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "photo", media)
    assert (await post_sms(standin, webhooks, params))[0] == 200
    assert await media_runner(store, standin).run_pending() == 1
    assert seen == []
    contact = await only_contact(store)
    refused, fetched = contact.documents
    assert (refused.status, refused.size) == ("refused", 0)
    assert (
        refused.reason == f"media host 127.0.0.1:{server.port} is not one of Twilio's media hosts"
    )
    assert (fetched.status, fetched.size) == ("pending", 5)
    # Intake goes on with what could be fetched, and shows the refusal.
    assert await count(store, Job, Job.kind == CONTACT_JOB, Job.status == "pending") == 1
    assert await count(store, AuditEvent, AuditEvent.action == "media.refused") == 1


@SQLITE_ONLY
async def test_redirect_to_another_host_is_refused(
    store: Store,
    standin: TwilioStandIn,
    webhooks: TestServer,
    elsewhere: tuple[TestServer, list[str]],
) -> None:
    server, seen = elsewhere
    url = standin.add_medium(
        Medium(b"", "image/jpeg", redirect_to=str(server.make_url("/internal")))
    )
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "", [(url, "image/jpeg")])
    assert (await post_sms(standin, webhooks, params))[0] == 200
    await media_runner(store, standin).run_pending()
    assert seen == []
    [document] = (await only_contact(store)).documents
    assert document.status == "refused" and "is not one of Twilio's media hosts" in str(
        document.reason
    )


@SQLITE_ONLY
@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_media_is_too_large(
    store: Store, standin: TwilioStandIn, webhooks: TestServer, chunked: bool
) -> None:
    url = standin.add_medium(Medium(b"x" * 200_000, "image/jpeg", chunked=chunked))
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "", [(url, "image/jpeg")])
    assert (await post_sms(standin, webhooks, params))[0] == 200
    await media_runner(store, standin, max_bytes=50_000).run_pending()
    [document] = (await only_contact(store)).documents
    assert (document.status, document.size) == ("too_large", 0)
    assert "50000-byte limit" in str(document.reason)
    assert await count(store, Job, Job.kind == CONTACT_JOB) == 1


@SQLITE_ONLY
@pytest.mark.parametrize("failure", ["cdn 500", "host down"])
async def test_media_failures_are_retried_then_recorded(
    store: Store, standin: TwilioStandIn, webhooks: TestServer, failure: str
) -> None:
    hosts = standin.media_hosts
    if failure == "cdn 500":
        url = standin.add_medium(Medium(b"x", "image/jpeg", cdn_status=500))
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}/2010-04-01/media"
        hosts += f",127.0.0.1:{port}"
    params = standin.inbound_sms(PHONE, OUR_NUMBER, "", [(url, "image/jpeg")])
    assert (await post_sms(standin, webhooks, params))[0] == 200
    runner = media_runner(store, standin, hosts=hosts, retry=RetryPolicy(3, 0))
    assert await runner.run_pending() == 3
    if failure == "cdn 500":
        assert len(standin.cdn_requests) == 3
    [document] = (await only_contact(store)).documents
    assert document.status == "failed"
    assert str(document.reason).startswith("download failed after 3 attempts: ")
    assert await count(store, Job, Job.kind == MEDIA_JOB, Job.status == "failed") == 1
    assert await count(store, Job, Job.kind == CONTACT_JOB, Job.status == "pending") == 1


# --- outbound ------------------------------------------------------------------------------


async def queue_sms(store: Store, recipient: str, text: str = "Bien reçu") -> int:
    async with store.sessions() as session, session.begin():
        message = OutboundMessage(
            idempotency_key=f"test:{recipient}:{text}",
            purpose="free_reply",
            template="",
            channel="sms",
            language="fr",
            recipient=recipient,
            body_text=text,
            status="queued",
        )
        session.add(message)
        await session.flush()
        jobs.enqueue(session, DELIVER_JOB, message.id)
        return message.id


def delivery_runner(store: Store, sender: TwilioSender, attempts: int = 3) -> JobRunner:
    delivery: JobHandler = OutboxDelivery(store, {"sms": sender}, checks=[opt_out_check])
    return JobRunner(store, {DELIVER_JOB: delivery}, retry=RetryPolicy(attempts, 0))


def sender_for(twilio: TwilioStandIn, sender_id: str = OUR_NUMBER) -> TwilioSender:
    return TwilioSender(
        account(twilio), sender_id, twilio.api_base, PUBLIC_URL + "/channels/twilio/status"
    )


async def outbound(store: Store, message_id: int) -> OutboundMessage:
    async with store.sessions() as session:
        return await session.get_one(OutboundMessage, message_id)


async def test_sms_reaches_twilio_and_status_callbacks_update_it(
    store: Store, standin: TwilioStandIn, webhooks: TestServer
) -> None:
    first = await queue_sms(store, PHONE)
    second = await queue_sms(store, "+33698765432", "Deuxième")
    assert await delivery_runner(store, sender_for(standin)).run_pending() == 2
    sms, other = standin.messages
    assert sms["form"] == {
        "To": PHONE,
        "From": OUR_NUMBER,
        "Body": "Bien reçu",
        "StatusCallback": PUBLIC_URL + "/channels/twilio/status",
    }
    assert re.fullmatch(r"SM[0-9a-f]{32}", sms["sid"]) and sms["status"] == "queued"
    message = await outbound(store, first)
    assert (message.status, message.provider_id) == ("sent", sms["sid"])

    # Twilio calls the public URL; the stand-in reaches our loopback server in its place.
    status_url = str(webhooks.make_url("/channels/twilio/status"))
    for sid in (sms["sid"], other["sid"]):
        next(m for m in standin.messages if m["sid"] == sid)["form"]["StatusCallback"] = status_url
    status_sign = PUBLIC_URL + "/channels/twilio/status"

    async def receipt(sid: str, state: str, code: str | None = None) -> int:
        params = MultiDict([("MessageSid", sid), ("MessageStatus", state)])
        if code:
            params.add("ErrorCode", code)
        status, _, _ = await standin.webhook(status_url, params, signed_url=status_sign)
        return status

    assert await receipt(sms["sid"], "sent") == 200
    assert await receipt(sms["sid"], "delivered") == 200
    assert await receipt(sms["sid"], "delivered") == 200  # Twilio may repeat itself
    message = await outbound(store, first)
    assert message.status == "sent"
    assert [(e.get("status"), e.get("source")) for e in message.events] == [
        ("sent", None),
        ("sent", "twilio"),
        ("delivered", "twilio"),
    ]
    assert await receipt(other["sid"], "undelivered", "30003") == 200
    failed = await outbound(store, second)
    assert failed.status == "failed"
    assert failed.status_reason == "Twilio reports undelivered, error code 30003"
    audit_row = await count(
        store, AuditEvent, AuditEvent.action == "reply.failed", AuditEvent.object_id == str(second)
    )
    assert audit_row == 1
    # A forged receipt changes nothing.
    forged = MultiDict([("MessageSid", sms["sid"]), ("MessageStatus", "failed")])
    assert (await standin.webhook(status_url, forged, signature="bad"))[0] == 403
    assert (await outbound(store, first)).status == "sent"


@SQLITE_ONLY
async def test_receipt_for_an_unknown_message_is_kept_in_the_audit(
    store: Store, standin: TwilioStandIn, webhooks: TestServer
) -> None:
    params = MultiDict([("MessageSid", "SM" + "0" * 32), ("MessageStatus", "delivered")])
    url = str(webhooks.make_url("/channels/twilio/status"))
    signed = PUBLIC_URL + "/channels/twilio/status"
    assert (await standin.webhook(url, params, signed_url=signed))[0] == 200
    async with store.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.action == "reply.status_unmatched")
        )
        assert event is not None and event.object_id == "SM" + "0" * 32
        assert event.after == {"status": "delivered", "error_code": None}
    missing = MultiDict([("MessageSid", "SM" + "0" * 32)])
    assert (await standin.webhook(url, missing, signed_url=signed))[0] == 400


@SQLITE_ONLY
async def test_messaging_service_sid_is_used_instead_of_a_number(
    store: Store, standin: TwilioStandIn
) -> None:
    service = "MG" + "a" * 32
    await queue_sms(store, PHONE)
    await delivery_runner(store, sender_for(standin, service)).run_pending()
    [sms] = standin.messages
    assert sms["form"]["MessagingServiceSid"] == service and "From" not in sms["form"]


@SQLITE_ONLY
async def test_invalid_number_fails_permanently(store: Store, standin: TwilioStandIn) -> None:
    message_id = await queue_sms(store, "12")
    assert await delivery_runner(store, sender_for(standin)).run_pending() == 1
    message = await outbound(store, message_id)
    assert message.status == "failed" and message.attempts == 1
    assert "21211" in str(message.status_reason)
    assert await count(store, Job, Job.status == "done") == 1


@SQLITE_ONLY
async def test_server_errors_are_retried(store: Store, standin: TwilioStandIn) -> None:
    standin.fail_next = [500, 429]
    message_id = await queue_sms(store, PHONE)
    assert await delivery_runner(store, sender_for(standin)).run_pending() == 3
    message = await outbound(store, message_id)
    assert (message.status, message.attempts) == ("sent", 3)
    assert [e["status"] for e in message.events] == ["queued", "queued", "sent"]
    assert "Twilio 500 error 20500" in str(message.events[0]["detail"])
    assert len(standin.messages) == 1


@SQLITE_ONLY
async def test_unreachable_twilio_is_temporary(store: Store, standin: TwilioStandIn) -> None:
    sender = TwilioSender(account(standin), OUR_NUMBER, f"http://127.0.0.1:{free_port()}", None)
    message_id = await queue_sms(store, PHONE)
    await delivery_runner(store, sender, attempts=2).run_pending()
    message = await outbound(store, message_id)
    assert message.status == "failed" and "gave up after 2 attempts" in str(message.status_reason)
    assert "Twilio unreachable" in str(message.status_reason)


@SQLITE_ONLY
async def test_wrong_credentials_are_reported(store: Store, standin: TwilioStandIn) -> None:
    sender = TwilioSender(
        TwilioAccount(standin.account_sid, "nope"), OUR_NUMBER, standin.api_base, None
    )
    message_id = await queue_sms(store, PHONE)
    await delivery_runner(store, sender).run_pending()
    message = await outbound(store, message_id)
    assert message.status == "failed" and "Twilio 401 error 20003" in str(message.status_reason)


async def eventually(ready: Callable[[], bool], timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.02)):
        if ready():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still not so after {timeout}s")


@SQLITE_ONLY
async def test_outage_is_retried_with_backoff_and_sent_once_twilio_recovers(
    store: Store, standin: TwilioStandIn
) -> None:
    standin.outage = Outage("error", 503)
    message_id = await queue_sms(store, PHONE)
    delivery = OutboxDelivery(store, {"sms": sender_for(standin)})
    runner = JobRunner(
        store, {DELIVER_JOB: delivery}, retry=RetryPolicy(10, 0.1), poll_seconds=0.02
    )
    await runner.start()
    try:
        await eventually(lambda: len(standin.faulted) >= 3)
        standin.outage = None
        await eventually(lambda: bool(standin.messages))
    finally:
        await runner.stop()
    message = await outbound(store, message_id)
    assert (message.status, message.provider_id) == ("sent", standin.messages[0]["sid"])
    assert len(standin.messages) == 1
    tries = [e for e in message.events if e["status"] == "queued"]
    assert len(tries) == message.attempts - 1 >= 3
    assert all(e["detail"].startswith("Twilio 503 error 20503: ") for e in tries)
    # Each wait is at least the policy's delay for that attempt: 0.1 s, 0.2 s, 0.4 s…
    times = [r.at for r in standin.faulted]
    for n, (before, after) in enumerate(itertools.pairwise(times[:3])):
        assert after - before >= 0.1 * 2**n * 0.9


@SQLITE_ONLY
@pytest.mark.parametrize("kind", ["hang", "hang_after_create", "garbled_after_create"])
async def test_no_answer_in_time_is_uncertain_and_never_sent_again(
    store: Store,
    standin: TwilioStandIn,
    kind: Literal["hang", "hang_after_create", "garbled_after_create"],
) -> None:
    """No answer, or one the client cannot read: the request may have reached Twilio."""
    async with store.sessions() as session, session.begin():
        contact = Contact(
            direction="inbound", channel="sms", natural_key="SM-x", sender=PHONE, status="processed"
        )
        session.add(contact)
    message_id = await queue_sms(store, PHONE)
    async with store.sessions() as session, session.begin():
        (await session.get_one(OutboundMessage, message_id)).contact_id = contact.id
    standin.outage = Outage(kind, seconds=10)
    sender = TwilioSender(account(standin), OUR_NUMBER, standin.api_base, None, timeout=0.3)
    # The job may be tried 3 times, but once the request may have reached Twilio it never is.
    assert await delivery_runner(store, sender).run_pending() == 1
    message = await outbound(store, message_id)
    assert message.status == "uncertain" and message.attempts == 1
    lost = "ReadTimeout" if kind.startswith("hang") else "JSONDecodeError"
    assert lost in str(message.status_reason)
    assert "check the number's message log" in str(message.status_reason)
    assert len([r for r in standin.api_requests if r.method == "POST"]) == 1
    assert len(standin.messages) == (1 if kind.endswith("_after_create") else 0)
    async with store.sessions() as session:
        flagged = await session.get_one(Contact, contact.id)
        assert flagged.status == "needs_review"
        assert "delivery uncertain" in str(flagged.status_reason)
    assert await count(store, Job, Job.status == "done") == 1


# --- opt-out -------------------------------------------------------------------------------


async def test_stop_and_start_govern_sms_to_the_number(
    store: Store, standin: TwilioStandIn, webhooks: TestServer
) -> None:
    stop = standin.inbound_sms("+33 6 12 34 56 78", OUR_NUMBER, " Arrêt. ")
    assert (await post_sms(standin, webhooks, stop))[0] == 200
    assert (await post_sms(standin, webhooks, stop))[0] == 200  # Twilio's retry
    contact = await only_contact(store)
    # Stored like any message, but marked so that no responder ever answers it.
    assert contact.text == " Arrêt. " and contact.automatic_reason == OPT_OUT_REASON
    async with store.sessions() as session:
        [row] = (await session.scalars(select(SmsOptOut))).all()
        assert (row.phone, row.opted_out, row.keyword, row.contact_id) == (
            PHONE,
            True,
            "Arrêt.",
            contact.id,
        )
        assert row.changed_at is not None
    assert await count(store, AuditEvent, AuditEvent.action == "sms.opt_out") == 1

    queued = await queue_sms(store, PHONE, "Votre dossier")
    await delivery_runner(store, sender_for(standin)).run_pending()
    cancelled = await outbound(store, queued)
    assert cancelled.status == "cancelled" and "opted out of SMS" in str(cancelled.status_reason)
    assert standin.messages == []

    start = standin.inbound_sms(PHONE, OUR_NUMBER, "START")
    assert (await post_sms(standin, webhooks, start))[0] == 200
    # An old STOP retried after the START does not undo it.
    assert (await post_sms(standin, webhooks, stop))[0] == 200
    async with store.sessions() as session:
        assert await session.scalar(select(SmsOptOut.opted_out)) is False
    assert await count(store, AuditEvent, AuditEvent.action == "sms.opt_in") == 1
    again = await queue_sms(store, PHONE, "Votre dossier, encore")
    await delivery_runner(store, sender_for(standin)).run_pending()
    assert (await outbound(store, again)).status == "sent"
    assert [m["to"] for m in standin.messages] == [PHONE]


# --- the whole service ---------------------------------------------------------------------


@pytest.mark.slow
async def test_service_acknowledges_an_sms_through_twilio(
    tmp_path: Path, relay: Relay, standin: TwilioStandIn
) -> None:
    from tests.guichet.service import GuichetProcess

    service = GuichetProcess(tmp_path / "home", relay.port)
    public = f"http://127.0.0.1:{service.http_port}"
    service.env.update(standin.service_env(public, OUR_NUMBER))
    service.home.mkdir()
    loaded = service.cli("demo")
    assert loaded.returncode == 0, loaded.stderr
    await service.start()
    try:
        params = standin.inbound_sms(
            PHONE, OUR_NUMBER, "Bonjour, ou en est mon dossier AS-2026-000001 ?"
        )
        status, _, text = await standin.webhook(public + INBOUND_PATH, params)
        assert (status, text) == (200, EMPTY_TWIML)
        [listed] = (await service.get("/api/contacts"))["contacts"]
        contact = await service.wait_contact(listed["id"], ("processed", "needs_review"))
        assert contact["channel"] == "sms" and contact["dossier_ref"] == "AS-2026-000001"
        acks = [r for r in contact["replies"] if r["purpose"] == "acknowledgement"]
        assert [(r["channel"], r["recipient"], r["status"]) for r in acks] == [
            ("sms", PHONE, "sent")
        ]
        sent = [m for m in standin.messages if m["to"] == PHONE]
        assert sent and all(m["form"]["From"] == OUR_NUMBER for m in sent)
        assert any("nous avons bien recu votre message" in m["body"] for m in sent)
        assert all(m["form"]["StatusCallback"] == public + "/channels/twilio/status" for m in sent)
        delivered = await standin.send_status(sent[0]["sid"], "delivered")
        assert delivered[0] == 200

        stop = standin.inbound_sms(PHONE, OUR_NUMBER, "STOP")
        assert (await standin.webhook(public + INBOUND_PATH, stop))[0] == 200
        contacts = (await service.get("/api/contacts"))["contacts"]
        stop_id = next(c["id"] for c in contacts if c["id"] != listed["id"])
        stopped = await service.wait_contact(stop_id, ("processed", "needs_review"))
        assert stopped["replies"] == []
        assert len(standin.messages) == len(sent)
    finally:
        service.stop()
    store = Store.open(f"sqlite+aiosqlite:///{service.home / 'guichet.sqlite3'}", tmp_path / "b")
    try:
        async with store.sessions() as session:
            message = await session.scalar(
                select(OutboundMessage).where(OutboundMessage.provider_id == sent[0]["sid"])
            )
            assert message is not None
            assert [e["status"] for e in message.events if e.get("source")] == ["delivered"]
            assert await session.scalar(select(SmsOptOut.opted_out)) is True
    finally:
        await store.close()
