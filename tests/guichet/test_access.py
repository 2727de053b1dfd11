"""Login, sessions, CSRF, API tokens and roles, through the real application on loopback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from guichet import auth
from guichet.access import LOGIN_COOKIE, SESSION_COOKIE, Access
from guichet.api import create_app
from guichet.settings import PROJECT_ROOT
from models.store import Store
from models.tables import AuditEvent, User, WebSession
from tests.conftest import free_port


@dataclass
class Site:
    url: str
    store: Store
    access: Access


async def _admin_ping(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def site(store: Store) -> AsyncIterator[Site]:
    async with store.sessions() as session, session.begin():
        await auth.add_user(session, "lea", "correct horse", display_name="Léa Moreau")
        await auth.add_user(session, "root", "admin pass", role="admin")
    access = Access(store, PROJECT_ROOT / "templates", secure_cookies=False)
    routes = [
        web.get("/api/admin/ping", _admin_ping),
        web.post("/channels/edi", _admin_ping),
        web.post("/channels/twilio/sms", _admin_ping),
    ]
    app = create_app(store, routes, access)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Site(f"http://127.0.0.1:{port}", store, access)
    finally:
        await runner.cleanup()


def _client() -> aiohttp.ClientSession:
    # An unsafe cookie jar keeps cookies for a bare IP address, as a browser does for localhost.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _login(
    client: aiohttp.ClientSession, site: Site, username: str, password: str, next_: str = ""
) -> aiohttp.ClientResponse:
    async with client.get(f"{site.url}/login", params={"next": next_}) as page:
        html = await page.text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token is not None
    return await client.post(
        f"{site.url}/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": token.group(1),
            "next": next_,
        },
        allow_redirects=False,
    )


async def test_without_login_the_api_says_401_and_pages_send_to_login(site: Site) -> None:
    async with _client() as client:
        async with client.get(f"{site.url}/api/contacts") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "authentication required" in (await response.json())["error"]
        async with client.get(f"{site.url}/inbox?channel=sms", allow_redirects=False) as page:
            assert page.status == 303
            location = urlsplit(page.headers["Location"])
            assert location.path == "/login"
            assert parse_qs(location.query) == {"next": ["/inbox?channel=sms"]}
        # Public: health check, login page, channel endpoints.
        async with client.get(f"{site.url}/healthz") as health:
            assert health.status == 200
        async with client.get(f"{site.url}/static/guichet.css") as css:
            assert css.status == 200


async def test_login_sets_a_safe_session_cookie_and_opens_the_api(site: Site) -> None:
    async with _client() as client:
        response = await _login(client, site, "Lea", "correct horse", "/api/contacts")
        assert response.status == 303
        assert response.headers["Location"] == "/api/contacts"
        cookie = response.cookies[SESSION_COOKIE]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Lax"
        assert cookie["path"] == "/"
        async with client.get(f"{site.url}/api/contacts") as api:
            assert api.status == 200
    async with site.store.sessions() as session:
        actions = (await session.scalars(select(AuditEvent.action))).all()
    assert "user.login" in actions


async def test_wrong_password_unknown_user_and_forged_form_are_refused(site: Site) -> None:
    async with _client() as client:
        wrong = await _login(client, site, "lea", "wrong horse")
        assert wrong.status == 401
        assert "Identifiant ou mot de passe incorrect." in await wrong.text()
        unknown = await _login(client, site, "nobody", "correct horse")
        assert unknown.status == 401
        assert SESSION_COOKIE not in wrong.cookies and SESSION_COOKIE not in unknown.cookies
    # A form posted from another site has no login cookie to match its token.
    async with _client() as client:
        forged = await client.post(
            f"{site.url}/login",
            data={"username": "lea", "password": "correct horse", "csrf_token": "guess"},
            allow_redirects=False,
        )
        assert forged.status == 403 and SESSION_COOKIE not in forged.cookies


async def test_a_second_login_page_does_not_expire_the_first_form(site: Site) -> None:
    async with _client() as client:
        async with client.get(f"{site.url}/login") as first:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await first.text())
        assert token is not None
        # Another tab, or the browser's favicon request redirected to the login page.
        async with client.get(f"{site.url}/favicon.ico") as stray:
            assert stray.url.path == "/login"
        response = await client.post(
            f"{site.url}/login",
            data={"username": "lea", "password": "correct horse", "csrf_token": token.group(1)},
            allow_redirects=False,
        )
        assert response.status == 303


async def test_open_redirects_are_not_followed(site: Site) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        async with _client() as client:
            response = await _login(client, site, "lea", "correct horse", target)
            assert response.headers["Location"] == "/inbox"


async def test_guessing_is_throttled_even_with_the_right_password(site: Site) -> None:
    async with _client() as client:
        for _ in range(5):
            assert (await _login(client, site, "lea", "guess")).status == 401
        blocked = await _login(client, site, "lea", "correct horse")
        assert blocked.status == 429
        assert "Trop d&#39;essais" in await blocked.text()
        # Another account from the same address is not locked out by her mistakes.
        assert (await _login(client, site, "root", "admin pass")).status == 303


async def test_a_session_must_send_its_csrf_token_to_change_anything(site: Site) -> None:
    async with _client() as client:
        await _login(client, site, "lea", "correct horse")
        async with client.post(f"{site.url}/api/outbox/1/approve") as no_token:
            assert no_token.status == 403
            assert "CSRF" in await no_token.text()
        async with site.store.sessions() as session:
            [csrf] = (await session.scalars(select(WebSession.csrf_token))).all()
        async with client.post(
            f"{site.url}/api/outbox/1/approve", headers={"X-CSRF-Token": csrf}
        ) as with_token:
            assert with_token.status == 404  # past the door: no such reply
        async with client.post(f"{site.url}/logout", data={"csrf_token": csrf}) as out:
            assert out.status == 200 and str(out.url).endswith("/login")
        async with client.get(f"{site.url}/api/contacts") as after:
            assert after.status == 401


async def test_api_tokens_need_no_csrf_and_die_with_their_user(site: Site) -> None:
    async with site.store.sessions() as session, session.begin():
        token = await auth.create_token(session, "lea", label="crm")
    assert token.startswith(auth.TOKEN_PREFIX)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as client:
        async with client.get(f"{site.url}/api/contacts") as ok:
            assert ok.status == 200
        async with client.post(f"{site.url}/api/outbox/1/approve") as change:
            assert change.status == 404
        async with site.store.sessions() as session, session.begin():
            await auth.disable_user(session, "lea")
        async with client.get(f"{site.url}/api/contacts") as revoked:
            assert revoked.status == 401
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer gch_made_up"}) as client,
        client.get(f"{site.url}/api/contacts") as forged,
    ):
        assert forged.status == 401


async def test_channel_endpoints_are_public_except_edi_uploads(site: Site) -> None:
    async with _client() as client:
        # Twilio's webhook checks its own signature; the door lets it through.
        async with client.post(f"{site.url}/channels/twilio/sms") as webhook:
            assert webhook.status == 200
        # Providers post invoices with an API token of theirs.
        async with client.post(f"{site.url}/channels/edi", data=b"UNA") as anonymous:
            assert anonymous.status == 401
    async with site.store.sessions() as session, session.begin():
        token = await auth.create_token(session, "lea", label="provider 62912910111069")
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as client,
        client.post(f"{site.url}/channels/edi", data=b"UNA") as upload,
    ):
        assert upload.status == 200


async def test_admin_routes_are_for_admins_only(site: Site) -> None:
    async with site.store.sessions() as session, session.begin():
        lea = await auth.create_token(session, "lea")
        root = await auth.create_token(session, "root")
    for token, status in ((lea, 403), (root, 200)):
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as client,
            client.get(f"{site.url}/api/admin/ping") as response,
        ):
            assert response.status == status


async def test_new_password_ends_open_sessions(site: Site) -> None:
    async with _client() as client:
        await _login(client, site, "lea", "correct horse")
        async with site.store.sessions() as session, session.begin():
            await auth.set_password(session, "lea", "battery staple")
        async with client.get(f"{site.url}/api/contacts") as after:
            assert after.status == 401
        assert (await _login(client, site, "lea", "battery staple")).status == 303


async def test_login_page_speaks_english_when_asked(site: Site) -> None:
    async with (
        aiohttp.ClientSession(headers={"Accept-Language": "en-GB,en;q=0.9"}) as client,
        client.get(f"{site.url}/login") as page,
    ):
        html = await page.text()
        assert page.cookies[LOGIN_COOKIE]["httponly"] is True
    assert '<html lang="en">' in html and "Sign in" in html
    assert page.headers["Cache-Control"] == "no-store"


async def test_user_rules(store: Store) -> None:
    async with store.sessions() as session, session.begin():
        with pytest.raises(auth.AccessError, match="role"):
            await auth.add_user(session, "x", "long enough", role="boss")
        with pytest.raises(auth.AccessError, match="too short"):
            await auth.add_user(session, "x", "abc")
        with pytest.raises(auth.AccessError, match="letters"):
            await auth.add_user(session, "x y", "long enough")
        user = await auth.add_user(session, "Marc", "long enough")
        assert user.username == "marc" and user.password_hash != "long enough"
        assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
        with pytest.raises(auth.AccessError, match="already exists"):
            await auth.add_user(session, "marc", "other one")
        assert await auth.check_password(session, "MARC", "long enough") is not None
        await auth.disable_user(session, "marc")
        assert await auth.check_password(session, "marc", "long enough") is None
        with pytest.raises(auth.AccessError, match="disabled"):
            await auth.create_token(session, "marc")
        with pytest.raises(auth.AccessError, match="no user"):
            await auth.set_password(session, "ghost", "long enough")
        assert (await session.scalar(select(User.active).where(User.username == "marc"))) is False


def test_throttle_forgets_after_its_window() -> None:
    now = [0.0]
    throttle = auth.LoginThrottle(limit=2, window_seconds=60, clock=lambda: now[0])
    throttle.failed("lea", "1.2.3.4")
    throttle.failed("LEA", "1.2.3.4")
    assert throttle.blocked("lea", "1.2.3.4")
    assert not throttle.blocked("lea", "5.6.7.8")
    now[0] = 61
    assert not throttle.blocked("lea", "1.2.3.4")
