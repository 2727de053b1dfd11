"""Web chat in a real browser (Chromium through Playwright): the page, reloads, uploads, live
replies, and the widget embedded in a page of another origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from channels.chat import RETRY_AFTER_SECONDS, ChatLimits
from models.store import Store
from models.tables import Contact
from tests.channels.test_chat import PHOTO, ChatServer
from tests.conftest import CHROMIUM, free_port, unwritable, writable

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The browser tests check what the page does; the store runs on both back ends elsewhere."""
    return f"sqlite+aiosqlite:///{tmp_path / 'guichet.sqlite3'}"


@pytest.fixture
async def server(store: Store) -> AsyncIterator[ChatServer]:
    async with ChatServer(store, ChatLimits(max_upload_bytes=5_000_000)) as srv:
        yield srv


async def contacts_with_documents(store: Store) -> list[Contact]:
    async with store.sessions() as session:
        rows = await session.scalars(
            select(Contact)
            .where(Contact.channel == "chat")
            .options(selectinload(Contact.documents))
            .order_by(Contact.id)
        )
        return list(rows.all())


async def start_conversation(page: Page, name: str, email: str) -> None:
    await page.get_by_label("Nom").fill(name)
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_role("button", name="Commencer").click()
    await expect(page.get_by_label("Votre message")).to_be_visible()


async def write(page: Page, text: str) -> None:
    await page.get_by_label("Votre message").fill(text)
    await page.get_by_label("Votre message").press("Enter")
    sent = page.locator(".gc-visitor", has_text=text)
    await expect(sent.locator(".gc-state")).to_have_text("reçu")


async def test_page_message_is_stored_and_the_conversation_survives_a_reload(
    server: ChatServer, page: Page
) -> None:
    await page.goto(f"{server.url}/chat")
    await expect(page.locator("html")).to_have_attribute("lang", "fr")
    await expect(page.get_by_role("log")).to_have_attribute("aria-live", "polite")
    await start_conversation(page, "Jean Dupont", "jean.dupont@example.org")
    await write(page, "Bonjour, ma valise est perdue.")

    [first] = await contacts_with_documents(server.store)
    assert (first.sender, first.sender_name, first.text) == (
        "jean.dupont@example.org",
        "Jean Dupont",
        "Bonjour, ma valise est perdue.",
    )

    await page.reload()
    # The history is back, with no pre-chat form: the same conversation goes on.
    await expect(page.locator(".gc-visitor", has_text="ma valise est perdue")).to_be_visible()
    await expect(page.locator(".gc-prechat")).to_be_hidden()
    await write(page, "Elle contenait mon ordinateur.")
    first, second = await contacts_with_documents(server.store)
    conversation = first.natural_key.split(":")[0]
    assert second.natural_key.startswith(f"{conversation}:")
    assert second.sender == "jean.dupont@example.org"
    await expect(page.locator(".gc-visitor")).to_have_count(2)


async def test_photo_upload_becomes_a_contact_with_the_document(
    server: ChatServer, page: Page
) -> None:
    await page.goto(f"{server.url}/chat")
    await start_conversation(page, "Amina Benali", "amina.benali@example.net")
    photo_input = page.locator("input[type=file][capture]")
    await expect(photo_input).to_have_attribute("accept", "image/*,application/pdf")
    await page.locator("#gc-file").set_input_files(PHOTO)
    sent = page.locator(".gc-visitor", has_text=PHOTO.name)
    await expect(sent.locator(".gc-state")).to_have_text("reçu")
    [contact] = await contacts_with_documents(server.store)
    [document] = contact.documents
    assert (document.filename, document.declared_type) == (PHOTO.name, "image/jpeg")
    assert server.store.blobs.get(document.sha256) == PHOTO.read_bytes()


async def test_reply_from_the_outbox_is_shown_live_in_english(
    server: ChatServer, browser: Browser
) -> None:
    context = await browser.new_context(locale="en-GB")
    try:
        page = await context.new_page()
        await page.goto(f"{server.url}/chat")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await page.get_by_label("Name").fill("David O'Connor")
        await page.get_by_label("Phone").fill("+447700900123")
        await page.get_by_role("button", name="Start").click()
        await page.get_by_label("Your message").fill("Where is my tow truck?")
        await page.get_by_role("button", name="Send").click()
        sent = page.locator(".gc-visitor", has_text="tow truck")
        await expect(sent.locator(".gc-state")).to_have_text("received")

        [contact] = await contacts_with_documents(server.store)
        assert contact.sender == "+447700900123"
        reply_id = await server.reply_for(contact.id, "The tow truck is on its way.")
        delivered = await server.deliver(reply_id)
        assert delivered.status == "sent"
        await expect(page.locator(".gc-guichet")).to_have_text(
            "GuichetThe tow truck is on its way."
        )
        # The reply is part of the conversation's history too.
        await page.reload()
        await expect(page.locator(".gc-guichet", has_text="on its way")).to_have_count(1)
    finally:
        await context.close()


async def host_site(port: int, guichet_url: str) -> web.AppRunner:
    """Another site, on another origin, that embeds the widget with one script tag."""
    html = (
        "<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>Assureur</title>"
        "</head><body><h1>Mon espace assuré</h1>"
        f"<script src='{guichet_url}/channels/chat/widget.js' async></script></body></html>"
    )

    async def home(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", home)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_widget_on_another_origin_chats_uploads_and_gets_replies(
    server: ChatServer, page: Page
) -> None:
    port = free_port()
    site = await host_site(port, server.url)
    try:
        # "localhost" and "127.0.0.1" are different origins: every call is cross-origin.
        await page.goto(f"http://localhost:{port}/")
        launcher = page.get_by_role("button", name="Écrire à l'assistance")
        await expect(launcher).to_have_attribute("aria-expanded", "false")
        # Keyboard only: open, and Escape closes back onto the button.
        await launcher.focus()
        await page.keyboard.press("Enter")
        await expect(launcher).to_have_attribute("aria-expanded", "true")
        await expect(page.get_by_label("Nom")).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(page.locator("#gc-panel")).to_be_hidden()
        await expect(launcher).to_be_focused()
        await launcher.click()

        await start_conversation(page, "Jean Dupont", "jean.dupont@example.org")
        await write(page, "Bonjour depuis le site de mon assureur.")
        await page.locator("#gc-photo").set_input_files(PHOTO)
        uploaded = page.locator(".gc-visitor", has_text=PHOTO.name)
        await expect(uploaded.locator(".gc-state")).to_have_text("reçu")

        message, upload = await contacts_with_documents(server.store)
        assert message.text == "Bonjour depuis le site de mon assureur."
        assert [d.filename for d in upload.documents] == [PHOTO.name]
        reply_id = await server.reply_for(message.id, "Nous avons bien reçu votre photo.")
        assert (await server.deliver(reply_id)).status == "sent"
        await expect(page.locator(".gc-guichet", has_text="votre photo")).to_be_visible()
    finally:
        await site.cleanup()


async def test_a_forgotten_conversation_asks_for_a_new_one(
    server: ChatServer, browser: Browser
) -> None:
    context: BrowserContext = await browser.new_context(locale="fr-FR")
    try:
        page = await context.new_page()
        await page.goto(f"{server.url}/chat")
        key = f"guichet-chat-token:{server.url}"
        await page.evaluate("([k]) => localStorage.setItem(k, 'forged-token')", [key])
        await page.reload()
        await expect(page.get_by_role("status")).to_contain_text("n'est plus reconnue")
        await expect(page.get_by_role("button", name="Commencer")).to_be_visible()
        assert await page.evaluate("([k]) => localStorage.getItem(k)", [key]) is None
        await start_conversation(page, "", "")
        await write(page, "Nouvelle conversation")
        [contact] = await contacts_with_documents(server.store)
        assert contact.sender.startswith("chat:")
    finally:
        await context.close()


async def test_what_the_store_cannot_take_is_sent_again_when_the_server_says(
    server: ChatServer, page: Page
) -> None:
    """A message and an upload refused with ``not_stored`` (503) say so and wait for the
    server's ``retry_after`` before the same is sent again: taken once the store works."""
    await page.goto(f"{server.url}/chat")
    await start_conversation(page, "Jean Dupont", "jean.dupont@example.org")
    blobs = server.store.blobs.root
    unwritable(blobs)
    try:
        await page.get_by_label("Votre message").fill("Bonjour, voici ma facture.")
        await page.get_by_label("Votre message").press("Enter")
        await page.locator("#gc-file").set_input_files(PHOTO)
        waiting = f"pas encore enregistré, nouvel essai dans {RETRY_AFTER_SECONDS} s"
        message = page.locator(".gc-visitor", has_text="voici ma facture")
        upload = page.locator(".gc-visitor", has_text=PHOTO.name)
        await expect(message.locator(".gc-state")).to_have_text(waiting)
        await expect(upload.locator(".gc-state")).to_have_text(waiting)
        assert await server.contacts() == []
    finally:
        writable(blobs)
    # Nothing to do on the page: it sends both again after the delay.
    await expect(message.locator(".gc-state")).to_have_text("reçu", timeout=20_000)
    await expect(upload.locator(".gc-state")).to_have_text("reçu", timeout=20_000)
    stored = await contacts_with_documents(server.store)
    assert sorted((c.text, len(c.documents)) for c in stored) == [
        ("", 1),
        ("Bonjour, voici ma facture.", 0),
    ]
