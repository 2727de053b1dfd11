"""The OpenAPI document: it names every JSON route, and no generated request gets a 500."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from guichet import auth
from guichet.access import Access
from guichet.api import create_app
from guichet.openapi import spec
from guichet.settings import PROJECT_ROOT, Settings
from guichet.wiring import build_channels
from models import migrate
from models.inbound import InboundAttachment, InboundContact
from models.reference import load_reference_data, read_reference_file
from models.store import Store
from tests.conftest import free_port

schema = schemathesis.openapi.from_dict(spec())


def _api_paths(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if path.startswith("/api/") and route.method in ("GET", "POST"):
            # aiohttp writes {id:\d{1,9}} where OpenAPI writes {id}.
            for name in ("id", "ref"):
                path = path.replace("{" + name + r":\d{1,9}}", "{" + name + "}")
            found.add((route.method.lower(), path))
    return found


def _app(store: Store, home: Path) -> web.Application:
    """The service's application: its door, the inbox, and every channel's routes."""
    settings = Settings(home=home)
    channels = build_channels(settings, store, lambda: None)
    routes = [route for adapter in channels.adapters for route in adapter.routes()]
    access = Access(store, PROJECT_ROOT / "templates", secure_cookies=False)
    return create_app(store, routes, access, settings)


def test_every_json_route_is_described(tmp_path: Path) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'g.sqlite3'}", tmp_path / "blobs")
    served = _api_paths(_app(store, tmp_path)) - {("get", "/api/openapi.json")}
    described = {(m, p) for p, ops in spec()["paths"].items() for m in ops}
    assert served - described == set()
    # /healthz is described though it is not under /api.
    assert described - served == {("get", "/healthz")}
    asyncio.run(store.close())


async def _prepare(home: Path) -> tuple[Store, str]:
    url = f"sqlite+aiosqlite:///{home / 'guichet.sqlite3'}"
    await asyncio.to_thread(migrate.upgrade, url)
    store = Store.open(url, home / "blobs")
    async with store.sessions() as session, session.begin():
        await load_reference_data(
            session, read_reference_file(PROJECT_ROOT / "config" / "demo.toml")
        )
        await auth.add_user(session, "admin", "admin password", role="admin")
        token = await auth.create_token(session, "admin")
    for n in range(1, 4):
        await store.accept_contact(
            InboundContact(
                channel="email",
                natural_key=f"fuzz-{n}@example.org",
                sender="jean.dupont@example.org",
                subject=f"Dossier AS-2026-000001, envoi {n}",
                text="Bonjour, voici la facture.",
                attachments=(InboundAttachment("facture.pdf", "application/pdf", b"%PDF-1.4"),),
            ),
            b"raw",
        )
    return store, token


@pytest.fixture(scope="module")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real application, behind its door, in a thread of its own: schemathesis calls it
    synchronously while hypothesis drives the examples."""
    home = tmp_path_factory.mktemp("openapi")
    loop = asyncio.new_event_loop()
    ready: Future[tuple[str, str]] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        store, token = await _prepare(home)
        runner = web.AppRunner(_app(store, home))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set_result((f"http://127.0.0.1:{port}", token))
        await stop.wait()
        await runner.cleanup()
        await store.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=120)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(
    case: schemathesis.Case[Any], live_site: tuple[str, str]
) -> None:
    base, token = live_site
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error],
    )
