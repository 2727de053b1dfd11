"""The inbox in a real browser (Chromium through Playwright): sign in, triage a contact to a
dossier, correct a document type, reply from a template, approve a held refusal, live updates,
and a hostile email that stays inert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, Request, expect

from models.inbound import InboundContact
from models.store import Store
from tests.conftest import CHROMIUM
from tests.guichet.site import Site, serve_site
from tests.guichet.test_actions import Seeded, seed
from tests.responders.flow import REF, load_demo

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The browser tests check what the page does; the store runs on both back ends elsewhere."""
    return f"sqlite+aiosqlite:///{tmp_path / 'guichet.sqlite3'}"


@pytest.fixture
async def site(store: Store) -> AsyncIterator[tuple[Site, Seeded]]:
    await load_demo(store)
    seeded = await seed(store)
    async with serve_site(store, [("marie", "gestionnaire")]) as site:
        yield site, seeded


async def sign_in(page: Page, url: str, next_: str = "") -> None:
    await page.goto(f"{url}/login?next={next_}")
    await page.get_by_label("Identifiant").fill("marie")
    await page.get_by_label("Mot de passe").fill("marie password")
    await page.get_by_role("button", name="Se connecter").click()
    await page.wait_for_load_state()


async def test_hostile_email_shows_inert(site: tuple[Site, Seeded], page: Page) -> None:
    api, seeded = site
    requested: list[str] = []

    def record(request: Request) -> None:
        requested.append(request.url)

    page.on("request", record)
    refused: list[str] = []
    page.on(
        "console",
        lambda message: refused.append(message.text) if message.type == "error" else None,
    )
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await sign_in(page, api.url, f"/inbox/contacts/{seeded.contact_id}")
    await expect(page.locator("#message-html")).to_contain_text("Bonjour, voici ma facture.")
    # Hover and click what the hostile message offered: nothing may run.
    await page.locator("#message-html").get_by_text("fond").hover()
    await page.locator("#message-html").get_by_text("cliquez").click()
    await page.wait_for_timeout(300)
    assert await page.evaluate("window.__pwned") is None
    assert await page.title() != "pwned"
    assert dialogs == []
    # Our own pages need nothing the policy forbids (no inline style or script of ours).
    assert refused == []
    assert requested, "the browser made no request at all"
    strangers = [url for url in requested if not url.startswith(api.url)]
    assert strangers == []
    await expect(page.locator("#message-html img[src*='tracker']")).to_have_count(0)


async def test_triage_correct_reply_and_approve(site: tuple[Site, Seeded], page: Page) -> None:
    api, seeded = site
    c, d = seeded.contact_id, seeded.document_id
    await sign_in(page, api.url)
    await expect(page).to_have_url(f"{api.url}/inbox")
    await expect(page.locator("tr.contact")).to_have_count(1)
    # Keyboard triage: j selects the first contact, Enter opens it.
    await page.keyboard.press("j")
    await expect(page.locator("tr.contact.selected")).to_have_count(1)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{api.url}/inbox/contacts/{c}")

    await page.get_by_label("Rattacher au dossier").fill(REF)
    await page.get_by_role("button", name="Rattacher au dossier").click()
    await expect(page.locator("#dossier")).to_contain_text(REF)

    await page.locator(f"#doc-type-{d}").fill("medical_invoice")
    await page.locator(f"#document-{d}").get_by_role("button", name="Corriger").click()
    await expect(page.locator(f"#document-{d} .doc-type")).to_have_text("medical_invoice")

    await page.locator("#purpose").select_option("status_answer")
    await page.get_by_role("button", name="Répondre").click()
    body = page.get_by_label("Texte de la réponse")
    await expect(body).to_contain_text(REF)
    await body.fill("Bonjour, votre dossier est en cours d'examen. Marie")
    await page.get_by_role("button", name="Envoyer").click()
    await expect(page.locator(".notice")).to_have_text("Réponse mise en file.")

    held = page.locator(f"#reply-{seeded.held_id}")
    await held.get_by_role("button", name="Approuver").click()
    await expect(page.locator(f"#reply-{seeded.held_id} .reply-status")).to_have_text("queued")

    await page.locator("#dossier a").click()
    await expect(page).to_have_url(f"{api.url}/inbox/dossiers/{REF}")
    timeline = page.locator(".timeline")
    await expect(timeline.locator(".timeline-reply")).to_have_count(2)
    await expect(timeline).to_contain_text("status_answer")
    await expect(page.locator(".audit")).to_contain_text("reply.approved")


async def test_new_contacts_appear_and_keys_assign(
    site: tuple[Site, Seeded], page: Page, store: Store
) -> None:
    api, seeded = site
    await sign_in(page, api.url)
    await expect(page.locator("tr.contact")).to_have_count(1)
    await page.wait_for_timeout(500)  # the event stream is open
    await store.accept_contact(
        InboundContact(
            channel="sms", natural_key="SM-live", sender="+33612345678", text="Je suis en panne"
        ),
        b"sms",
    )
    await expect(page.locator("tr.contact")).to_have_count(2, timeout=10_000)
    await expect(page.locator("tr.contact").first).to_contain_text("+33612345678")
    # k/j move, a assigns the selected contact to me, d marks it done.
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    await expect(page.locator(f'tr.contact.selected[data-id="{seeded.contact_id}"]')).to_have_count(
        1
    )
    await page.keyboard.press("a")
    await expect(page.locator(f'tr.contact[data-id="{seeded.contact_id}"]')).to_contain_text(
        "marie"
    )
    await page.keyboard.press("d")
    await expect(page.locator("tr.contact")).to_have_count(1)
    await page.keyboard.press("?")
    await expect(page.locator("#help")).to_be_visible()
