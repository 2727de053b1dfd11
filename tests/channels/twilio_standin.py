"""A local stand-in of Twilio's REST API, media hosts and webhook calls, on loopback.

Twilio cannot be reached from the test machines, so this plays its documented side of the
exchange: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth and
Twilio's error bodies, media URLs that redirect (307) to a separate "CDN" server, and signed
webhooks (inbound messages, status callbacks) computed with the real ``RequestValidator``.
An ``Outage`` makes the Messages API fail until it is lifted: server errors, or requests that
hang past the client's timeout, before or after the message was created.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from models.clock import utcnow
from responders.sms import measure

API_VERSION = "2010-04-01"
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def twilio_error(status: int, code: int, message: str) -> web.Response:
    """Twilio's JSON error body, as its REST API returns it."""
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


#: Twilio's error codes and messages for the server-side statuses of its REST API.
SERVER_ERRORS = {
    429: (20429, "Too Many Requests"),
    500: (20500, "An internal server error has occurred"),
    502: (20502, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
}


def server_error(status: int) -> web.Response:
    code, message = SERVER_ERRORS[status]
    return twilio_error(status, code, message)


@dataclass(frozen=True)
class Outage:
    """How ``Messages.json`` fails, every time, until the stand-in's ``outage`` is None.

    ``error``: Twilio's error body with ``status``, nothing created. ``hang``: no answer for
    ``seconds`` (the client times out first), nothing created. ``hang_after_create``: the
    message is created, then the answer hangs: Twilio took it but the client never hears so.
    ``garbled_after_create``: the message is created, and the ``201`` that comes back is not
    Twilio's JSON (a proxy on the way answered in its place).
    """

    kind: Literal["error", "hang", "hang_after_create", "garbled_after_create"] = "error"
    status: int = 500
    seconds: float = 30.0


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class RecordedRequest:
    method: str
    path: str
    authorization: str | None
    #: When it arrived (monotonic clock), to see the client's backoff between tries.
    at: float = field(default_factory=time.monotonic)


@dataclass
class Medium:
    content: bytes
    content_type: str
    #: Where the API's media URL redirects; None for the stand-in's own CDN.
    redirect_to: str | None = None
    #: Serve without Content-Length, so only streaming can find out the size.
    chunked: bool = False
    #: Status the CDN answers instead of the bytes (a 500 to test retries).
    cdn_status: int = 200


@dataclass
class TwilioStandIn:
    """The API server and the CDN server; what each received is kept for assertions."""

    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    messages: list[dict[str, Any]] = field(default_factory=list)
    api_requests: list[RecordedRequest] = field(default_factory=list)
    cdn_requests: list[RecordedRequest] = field(default_factory=list)
    #: HTTP statuses the next Messages.json calls answer with, before serving normally.
    fail_next: list[int] = field(default_factory=list)
    #: A lasting fault of Messages.json (after ``fail_next``), until set back to None.
    outage: Outage | None = None
    #: Requests that answered with the outage's error or hung: what the client went through.
    faulted: list[RecordedRequest] = field(default_factory=list)
    #: Headers of the last answer to a webhook (Retry-After on a 503).
    webhook_headers: dict[str, str] = field(default_factory=dict)
    media: dict[str, Medium] = field(default_factory=dict)
    api: TestServer | None = None
    cdn: TestServer | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        api = web.Application()
        api.router.add_post(
            f"/{API_VERSION}/Accounts/{{account}}/Messages.json", self._create_message
        )
        api.router.add_get(
            f"/{API_VERSION}/Accounts/{{account}}/Messages/{{message}}/Media/{{media}}",
            self._media_redirect,
        )
        cdn = web.Application()
        cdn.router.add_get("/media/{media}", self._cdn_media)
        self.api = TestServer(api, host="127.0.0.1")
        self.cdn = TestServer(cdn, host="127.0.0.1")
        await self.api.start_server()
        await self.cdn.start_server()

    async def close(self) -> None:
        # Hanging requests give up now, so that the servers can close.
        self._released.set()
        for server in (self.api, self.cdn):
            if server is not None:
                await server.close()

    @property
    def api_base(self) -> str:
        assert self.api is not None
        return str(self.api.make_url("")).rstrip("/")

    @property
    def media_hosts(self) -> str:
        """The setting that allows the API's and the CDN's host:port, as in production."""
        assert self.api is not None and self.cdn is not None
        return f"127.0.0.1:{self.api.port},127.0.0.1:{self.cdn.port}"

    def service_env(self, public_url: str, our_number: str) -> dict[str, str]:
        """The settings that point a ``guichet serve`` at this stand-in, as at Twilio."""
        return {
            "GUICHET_PUBLIC_URL": public_url,
            "GUICHET_TWILIO_ACCOUNT_SID": self.account_sid,
            "GUICHET_TWILIO_AUTH_TOKEN": self.auth_token,
            "GUICHET_TWILIO_FROM": our_number,
            "GUICHET_TWILIO_API_BASE": self.api_base,
            "GUICHET_TWILIO_MEDIA_HOSTS": self.media_hosts,
        }

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _create_message(self, request: web.Request) -> web.Response:
        recorded = RecordedRequest("POST", request.path, request.headers.get("Authorization"))
        self.api_requests.append(recorded)
        if not self._authorized(request) or request.match_info["account"] != self.account_sid:
            return twilio_error(401, 20003, "Authenticate")
        if self.fail_next:
            return server_error(self.fail_next.pop(0))
        outage = self.outage
        if outage is not None and not outage.kind.endswith("_after_create"):
            self.faulted.append(recorded)
            if outage.kind == "error":
                return server_error(outage.status)
            await self._hang(outage.seconds)
            return server_error(503)
        created = await self._create(request)
        if outage is not None and created.status == 201:
            self.faulted.append(recorded)
            if outage.kind == "garbled_after_create":
                return web.Response(status=201, text="<html>502 Bad Gateway</html>")
            await self._hang(outage.seconds)
        return created

    async def _hang(self, seconds: float) -> None:
        """Hold the answer back, as an overloaded API or a broken path does."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), seconds)

    async def _create(self, request: web.Request) -> web.Response:
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        media_urls = [str(url) for url in form.getall("MediaUrl", [])]
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls:
            return twilio_error(400, 21602, "Message body is required.")
        sid = new_sid("SM")
        now = format_datetime(utcnow())
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        resource = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": str(sender) if sender else None,
            "messaging_service_sid": str(service) if service else None,
            "num_media": str(len(media_urls)),
            "num_segments": str(max(1, measure(body).segments)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # With a Messaging Service, Twilio first accepts, then picks a sender and queues.
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
        self.messages.append(
            {
                **resource,
                "form": {key: str(value) for key, value in form.items()},
                "media_urls": media_urls,
            }
        )
        return web.json_response(resource, status=201)

    def add_medium(self, medium: Medium, message_sid: str | None = None) -> str:
        """Publish a medium; returns its URL on the API host, as Twilio puts in MediaUrlN."""
        media_sid = new_sid("ME")
        self.media[media_sid] = medium
        message = message_sid or new_sid("MM")
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message}/Media/{media_sid}"
        assert self.api is not None
        return str(self.api.make_url(path))

    async def _media_redirect(self, request: web.Request) -> web.Response:
        self.api_requests.append(
            RecordedRequest("GET", request.path, request.headers.get("Authorization"))
        )
        # Accounts with "HTTP basic authentication for media" on: the case Guichet supports.
        if not self._authorized(request):
            return twilio_error(401, 20003, "Authenticate")
        medium = self.media.get(request.match_info["media"])
        if medium is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        assert self.cdn is not None
        target = medium.redirect_to or str(
            self.cdn.make_url(f"/media/{request.match_info['media']}?Expires=60&Signature=x")
        )
        raise web.HTTPTemporaryRedirect(target)

    async def _cdn_media(self, request: web.Request) -> web.StreamResponse:
        self.cdn_requests.append(
            RecordedRequest("GET", request.path, request.headers.get("Authorization"))
        )
        medium = self.media.get(request.match_info["media"])
        if medium is None:
            raise web.HTTPNotFound()
        if medium.cdn_status != 200:
            raise web.HTTPInternalServerError(text="CDN failure")
        if not medium.chunked:
            return web.Response(body=medium.content, content_type=medium.content_type)
        response = web.StreamResponse(headers={"Content-Type": medium.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(medium.content), 16 * 1024):
            try:
                await response.write(medium.content[start : start + 16 * 1024])
            except ConnectionResetError:
                break  # The client stopped reading at its limit, as it should.
        return response

    def sign(self, url: str, params: MultiDict[str]) -> str:
        return str(RequestValidator(self.auth_token).compute_signature(url, params))

    async def webhook(
        self,
        target: str,
        params: MultiDict[str],
        *,
        signed_url: str | None = None,
        signature: str | None = None,
    ) -> tuple[int, str, str]:
        """POST a webhook as Twilio does: form-encoded, signed over the URL Twilio was given
        (``signed_url``: the public one behind the proxy), sent to ``target``."""
        headers = {
            "X-Twilio-Signature": signature or self.sign(signed_url or target, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(target, data=list(params.items()), headers=headers) as response,
        ):
            self.webhook_headers = dict(response.headers)
            return response.status, response.content_type, await response.text()

    def inbound_sms(
        self, sender: str, to: str, body: str, media: Sequence[tuple[str, str]] = ()
    ) -> MultiDict[str]:
        """The form of an incoming message webhook (``media``: (URL, content type) pairs)."""
        sid = new_sid("MM" if media else "SM")
        params = MultiDict(
            [
                ("ToCountry", "FR"),
                ("SmsMessageSid", sid),
                ("NumMedia", str(len(media))),
                ("SmsSid", sid),
                ("SmsStatus", "received"),
                ("Body", body),
                ("To", to),
                ("NumSegments", "1"),
                ("MessageSid", sid),
                ("AccountSid", self.account_sid),
                ("From", sender),
                ("ApiVersion", API_VERSION),
            ]
        )
        for n, (url, content_type) in enumerate(media):
            params.add(f"MediaContentType{n}", content_type)
            params.add(f"MediaUrl{n}", url)
        return params

    async def send_status(
        self, sid: str, status: str, error_code: str | None = None
    ) -> tuple[int, str, str]:
        """Call the message's StatusCallback as Twilio does when its state changes."""
        message = next(m for m in self.messages if m["sid"] == sid)
        callback = message["form"]["StatusCallback"]
        params = MultiDict(
            [
                ("SmsSid", sid),
                ("SmsStatus", status),
                ("MessageStatus", status),
                ("To", message["to"]),
                ("MessageSid", sid),
                ("AccountSid", self.account_sid),
                ("From", message["from"] or "+33700000000"),
                ("ApiVersion", API_VERSION),
            ]
        )
        if error_code:
            params.add("ErrorCode", error_code)
        return await self.webhook(callback, params)
