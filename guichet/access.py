"""The door of the web application: the login page, and a middleware that lets through only
public channel endpoints, a valid session (with its CSRF token on changes) or an API token."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from guichet import auth
from guichet.parts import web_pages
from models.store import Store

SESSION_COOKIE = "guichet_session"
LOGIN_COOKIE = "guichet_login"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Reached by the outside world without a login: channel webhooks and the chat (each checks
#: its own credentials: Twilio's signature, the chat token), the health check, the login page.
PUBLIC = ("/login", "/healthz", "/channels/", "/chat", "/static/")
#: Channel endpoints that are not public all the same: providers post EDI with an API token.
PRIVATE_CHANNELS = ("/channels/edi",)
#: Path prefixes and the least role that may use them.
ROLE_PREFIXES: Mapping[str, str] = {"/admin/": "admin", "/api/admin/": "admin"}

IDENTITY = web.RequestKey("identity", auth.Identity)

TEXTS = {
    "fr": {
        "title": "Connexion",
        "username": "Identifiant",
        "password": "Mot de passe",
        "submit": "Se connecter",
        "wrong": "Identifiant ou mot de passe incorrect.",
        "throttled": "Trop d'essais : réessayez dans quelques minutes.",
        "expired": "Le formulaire a expiré : veuillez recommencer.",
    },
    "en": {
        "title": "Sign in",
        "username": "Username",
        "password": "Password",
        "submit": "Sign in",
        "wrong": "Wrong username or password.",
        "throttled": "Too many attempts: try again in a few minutes.",
        "expired": "The form expired: please try again.",
    },
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def language(request: web.Request) -> str:
    """French unless the browser puts English before it."""
    for part in request.headers.get("Accept-Language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in TEXTS:
            return code
    return "fr"


def identity(request: web.Request) -> auth.Identity:
    """The caller, set by the middleware on every non-public route."""
    try:
        return request[IDENTITY]
    except KeyError:
        raise web.HTTPUnauthorized(text="authentication required") from None


def require(request: web.Request, role: str) -> auth.Identity:
    who = identity(request)
    if not who.may(role):
        raise web.HTTPForbidden(text=f"this needs the {role} role")
    return who


class Access:
    """Login handlers and the middleware, sharing the store, the pages and the throttle."""

    def __init__(self, store: Store, templates_dir: Path, *, secure_cookies: bool) -> None:
        self.store = store
        self.secure = secure_cookies
        self.throttle = auth.LoginThrottle()
        self.pages = web_pages(templates_dir)
        self.static_dir = templates_dir / "web" / "static"

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/login", self.login_form),
            web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.static("/static", self.static_dir),
        ]

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if auth.any_of(PUBLIC, request.path) and not auth.any_of(PRIVATE_CHANNELS, request.path):
            return await handler(request)
        who = await self._identify(request)
        if who is None:
            return self._refuse(request)
        if who.via == "session" and request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER)
            if given is None and request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                given = str((await request.post()).get("csrf_token", ""))
            if not auth.same_secret(given, who.csrf_token):
                raise web.HTTPForbidden(text="missing or wrong CSRF token")
        for prefix, role in ROLE_PREFIXES.items():
            if request.path.startswith(prefix) and not who.may(role):
                raise web.HTTPForbidden(text=f"this needs the {role} role")
        request[IDENTITY] = who
        return await handler(request)

    async def _identify(self, request: web.Request) -> auth.Identity | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        async with self.store.sessions() as session, session.begin():
            if scheme.lower() == "bearer" and token.strip():
                return await auth.token_identity(session, token.strip())
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                return await auth.session_identity(session, cookie)
        return None

    @staticmethod
    def _refuse(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/") or request.method not in SAFE_METHODS:
            return web.json_response(
                {"error": "authentication required: a session or an API token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="guichet"'},
            )
        target = request.path_qs
        raise web.HTTPSeeOther(f"/login?next={quote(target, safe='')}")

    # ------------------------------------------------------------------ login and logout

    def _page(self, request: web.Request, status: int = 200, **values: Any) -> web.Response:
        lang = language(request)
        # Keep the browser's token when it has one: a second login page (another tab, a stray
        # request redirected here) must not invalidate the form already on screen.
        csrf = request.cookies.get(LOGIN_COOKIE, "")
        if len(csrf) < 32:
            csrf = secrets.token_urlsafe(24)
        body = self.pages.get_template("login.html").render(
            lang=lang,
            t=TEXTS[lang],
            csrf_token=csrf,
            next=values.get("next", ""),
            username=values.get("username", ""),
            error=values.get("error"),
        )
        response = web.Response(text=body, content_type="text/html", status=status)
        # Double-submit cookie: a form posted from another site cannot know this value.
        response.set_cookie(
            LOGIN_COOKIE, csrf, httponly=True, samesite="Strict", secure=self.secure, path="/login"
        )
        _no_store(response)
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        return self._page(request, next=_local(request.query.get("next", "")))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        username = str(form.get("username", "")).strip()
        password = str(form.get("password", ""))
        target = _local(str(form.get("next", "")))
        texts = TEXTS[language(request)]
        if not auth.same_secret(str(form.get("csrf_token", "")), request.cookies.get(LOGIN_COOKIE)):
            return self._page(request, 403, next=target, username=username, error=texts["expired"])
        address = request.remote or ""
        if self.throttle.blocked(username, address):
            return self._page(
                request, 429, next=target, username=username, error=texts["throttled"]
            )
        async with self.store.sessions() as session, session.begin():
            user = await auth.check_password(session, username, password)
            if user is None:
                self.throttle.failed(username, address)
                return self._page(
                    request, 401, next=target, username=username, error=texts["wrong"]
                )
            token, _ = await auth.open_session(session, user)
        self.throttle.succeeded(username, address)
        response = web.HTTPSeeOther(target or "/inbox")
        response.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
            path="/",
            max_age=int(auth.SESSION_LIFETIME.total_seconds()),
        )
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        # Reached through the middleware (not public): the session and its CSRF token checked.
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            async with self.store.sessions() as session, session.begin():
                await auth.close_session(session, token)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response


def _local(target: str) -> str:
    """Only a path of ours may be a redirect target (no open redirect to another site)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _no_store(response: web.StreamResponse) -> None:
    response.headers["Cache-Control"] = "no-store"
