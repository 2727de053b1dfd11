"""The application on loopback behind its real door, with API tokens for named users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from guichet import auth
from guichet.access import Access
from guichet.api import create_app
from guichet.settings import PROJECT_ROOT
from models.store import Store
from tests.conftest import free_port


@dataclass
class Site:
    url: str
    store: Store
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self, method: str, path: str, body: Any = None, *, user: str | None = None
    ) -> tuple[int, Any]:
        """One JSON request as ``user`` (the first user by default) with their API token."""
        token = self.tokens[user or next(iter(self.tokens))]
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as client,
            client.request(method, f"{self.url}{path}", json=body) as response,
        ):
            return response.status, await response.json()


@asynccontextmanager
async def serve_site(
    store: Store,
    users: Sequence[tuple[str, str]] = (("marie", "gestionnaire"),),
    routes: Sequence[web.AbstractRouteDef] = (),
) -> AsyncIterator[Site]:
    """Serve ``create_app`` with access control; each (username, role) gets an API token."""
    site = Site("", store)
    async with store.sessions() as session, session.begin():
        for username, role in users:
            await auth.add_user(session, username, f"{username} password", role=role)
            site.tokens[username] = await auth.create_token(session, username)
    access = Access(store, PROJECT_ROOT / "templates", secure_cookies=False)
    runner = web.AppRunner(create_app(store, routes, access))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    site.url = f"http://127.0.0.1:{port}"
    try:
        yield site
    finally:
        await runner.cleanup()
