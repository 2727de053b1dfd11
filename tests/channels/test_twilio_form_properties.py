"""Properties of the Twilio webhook: any correctly signed form, whatever its fields, gets a 2xx
or a 4xx with a reason (never a 5xx, which Twilio would retry for ever), and a 2xx means the
message and its raw form are stored once."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from channels.twilio_sms import INBOUND_PATH, STATUS_PATH, TwilioAccount, TwilioWebhooks
from models import migrate
from models.blobs import BlobStore
from models.db import create_engine
from models.store import Store
from models.tables import Contact

PUBLIC_URL = "https://guichet.example.org"
TOKEN = "0123456789abcdef0123456789abcdef"
EXAMPLES = itertools.count()
CI = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@dataclass
class Webhook:
    """The real adapter behind aiohttp's test server, on a loop of its own so that hypothesis
    (synchronous) can call it once per example without a new database each time."""

    portal: BlockingPortal
    store: Store
    server: TestServer
    http: aiohttp.ClientSession

    def post(self, path: str, form: list[tuple[str, str]], sign: bool = True) -> tuple[int, str]:
        body = urlencode(form).encode()
        # Sign what the adapter will read back from the body, duplicates and all.
        params = MultiDict(parse_qsl(body.decode(), keep_blank_values=True))
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC_URL + path, params)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Twilio-Signature"] = signature
        return self.portal.call(self._post, path, body, headers)

    def post_raw(self, path: str, body: bytes) -> tuple[int, str]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            PUBLIC_URL + path, {}
        )
        return self.portal.call(self._post, path, body, headers)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        url = self.server.make_url(path)
        async with self.http.post(url, data=io.BytesIO(body), headers=headers) as r:
            return r.status, await r.text()

    def contacts(self, natural_key: str) -> int:
        return self.portal.call(self._contacts, natural_key)

    async def _contacts(self, natural_key: str) -> int:
        async with self.store.sessions() as session:
            count = await session.scalar(
                select(func.count()).where(
                    Contact.channel == "sms", Contact.natural_key == natural_key
                )
            )
        return int(count or 0)

    def raw_of(self, natural_key: str) -> bytes:
        return self.portal.call(self._raw_of, natural_key)

    async def _raw_of(self, natural_key: str) -> bytes:
        async with self.store.sessions() as session:
            digest = await session.scalar(
                select(Contact.raw_sha256).where(
                    Contact.channel == "sms", Contact.natural_key == natural_key
                )
            )
        assert digest is not None
        return await self.store.raw_content(digest)


async def _open(database_url: str, blobs: Path) -> tuple[Store, TestServer, aiohttp.ClientSession]:
    await asyncio.to_thread(migrate.upgrade, database_url)
    store = Store(create_engine(database_url), BlobStore(blobs))
    app = web.Application()
    adapter = TwilioWebhooks(
        store, TwilioAccount("AC" + "0" * 32, TOKEN), PUBLIC_URL, status_wait_seconds=0
    )
    app.router.add_routes(adapter.routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return store, server, aiohttp.ClientSession()


async def _close(hook: Webhook) -> None:
    await hook.http.close()
    await hook.server.close()
    await hook.store.close()


@pytest.fixture
def webhook(database_url: str, tmp_path: Path) -> Iterator[Webhook]:
    with start_blocking_portal() as portal:
        store, server, http = portal.call(_open, database_url, tmp_path / "blobs")
        hook = Webhook(portal, store, server, http)
        try:
            yield hook
        finally:
            portal.call(_close, hook)


_sid = st.one_of(
    st.from_regex(r"SM[0-9a-f]{32}", fullmatch=True),
    st.text(min_size=1, max_size=40),
    st.text(min_size=480, max_size=700),
)
_junk = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "-1", "NaN", "1e3", "٣", "9" * 5000, "0x10", " 2 ", "11", "\x00"]),
)
_phone = st.one_of(
    st.sampled_from(["+33612345678", "0612345678", "+1 415 555 0100", "", "+", "00"]),
    st.text(max_size=40),
    st.text(min_size=300, max_size=500),
)
_field_name = st.one_of(
    st.sampled_from(["Body", "NumMedia", "MediaUrl0", "MediaContentType0", "From", "To"]),
    st.text(min_size=1, max_size=20),
)


@st.composite
def forms(draw: st.DrawFn) -> list[tuple[str, str]]:
    form: list[tuple[str, str]] = []
    if draw(st.booleans()) or draw(st.booleans()):
        form.append((draw(st.sampled_from(["MessageSid", "SmsMessageSid"])), draw(_sid)))
    form += [("From", draw(_phone)), ("To", draw(_phone))]
    form.append(("Body", draw(st.text(max_size=2000))))
    form.append(("NumMedia", draw(_junk)))
    form += draw(st.lists(st.tuples(_field_name, _junk), max_size=6))
    return form


def _check(hook: Webhook, form: list[tuple[str, str]], status: int, text: str) -> None:
    assert status < 500, (status, text)
    if status >= 400:
        assert text.strip(), status
        return
    assert status == 200
    fields = MultiDict(form)
    sid = fields.get("MessageSid") or fields.get("SmsMessageSid")
    assert sid
    assert hook.contacts(sid) == 1
    assert hook.raw_of(sid) == urlencode(form).encode()


@CI
@given(forms())
@example([("MessageSid", "SMnul"), ("From", "+33612345678"), ("Body", "a\x00b")])
@example([("MessageSid", "S" * 600), ("From", "+33612345678"), ("Body", "long sid")])
@example([("MessageSid", "SMlongfrom"), ("From", "1" * 400), ("Body", "long sender")])
@example([("MessageSid", "SMlongto"), ("From", "+33612345678"), ("To", "2" * 400)])
@example([("MessageSid", "SMmedia"), ("NumMedia", "9" * 5000), ("MediaUrl0", "file:///")])
@example([("MessageSid", ""), ("SmsMessageSid", ""), ("Body", "no sid")])
def test_any_signed_form_is_stored_or_refused_with_a_reason(
    webhook: Webhook, form: list[tuple[str, str]]
) -> None:
    # The database lives across examples: a fresh prefix keeps each example's SID its own.
    example_no = next(EXAMPLES)
    form = [(k, f"{example_no}{v}" if k.endswith("MessageSid") and v else v) for k, v in form]
    status, text = webhook.post(INBOUND_PATH, form)
    _check(webhook, form, status, text)
    # Twilio redelivers when unsure: a second copy is accepted and stores nothing new.
    again, _ = webhook.post(INBOUND_PATH, form)
    assert again == status
    _check(webhook, form, status, text)


@CI
@given(forms(), st.sampled_from(["", "delivered", "failed", "x" * 300, "\x00"]), _junk)
def test_any_signed_status_callback_answers_without_error(
    webhook: Webhook, form: list[tuple[str, str]], state: str, error_code: str
) -> None:
    form = [*form, ("MessageStatus", state), ("ErrorCode", error_code)]
    status, text = webhook.post(STATUS_PATH, form)
    assert status in (200, 400), (status, text)
    assert text.strip()


def test_unsigned_or_undecodable_forms_are_refused_with_a_reason(webhook: Webhook) -> None:
    form = [("MessageSid", "SMunsigned"), ("Body", "bonjour")]
    assert webhook.post(INBOUND_PATH, form, sign=False) == (403, "invalid X-Twilio-Signature\n")
    assert webhook.post_raw(INBOUND_PATH, b"MessageSid=SM\xff\xfe&Body=x")[0] == 403
    assert webhook.contacts("SMunsigned") == 0


def test_a_huge_body_is_refused_before_anything_is_stored(webhook: Webhook) -> None:
    # aiohttp's request size cap (1 MiB) answers 413 before the adapter reads anything.
    form = [("MessageSid", "SMhuge"), ("Body", "x" * (2 * 1024 * 1024))]
    status, text = webhook.post(INBOUND_PATH, form)
    assert status == 413 and text.strip()
    assert webhook.contacts("SMhuge") == 0
    # Just under the cap, the message is kept whole.
    form = [("MessageSid", "SMbig"), ("Body", "é" * 150_000)]
    status, text = webhook.post(INBOUND_PATH, form)
    _check(webhook, form, status, text)
