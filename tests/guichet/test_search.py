"""Full-text search on SQLite FTS5 and PostgreSQL: accents, ranking, safe snippets, filters,
hostile queries, documents' text, index kept up to date by the database; the API and the page."""

from __future__ import annotations

from datetime import UTC, date, datetime

import aiohttp
import pytest
from sqlalchemy import delete, select

from guichet.search import (
    Filters,
    SearchError,
    fts5_query,
    highlight,
    marked_snippet,
    parse_query,
    search,
)
from models.inbound import InboundAttachment, InboundContact
from models.store import Store
from models.tables import Contact, Delivery, Document
from tests.guichet.site import serve_site


async def _contact(
    store: Store,
    key: str,
    *,
    subject: str = "",
    text: str = "",
    sender: str = "client@example.org",
    channel: str = "email",
    received: datetime | None = None,
    status: str | None = None,
    document_text: str | None = None,
) -> int:
    """A contact through the store's one way in; then what intake would have written."""
    attachments: tuple[InboundAttachment, ...] = ()
    if document_text is not None:
        attachments = (
            InboundAttachment(f"{key}.pdf", "application/pdf", b"%PDF-1.4 " + key.encode()),
        )
    accepted = await store.accept_contact(
        InboundContact(
            channel=channel,
            natural_key=key,
            sender=sender,
            subject=subject,
            text=text,
            attachments=attachments,
        ),
        key.encode(),
    )
    async with store.sessions() as session, session.begin():
        contact = await session.get(Contact, accepted.contact_id)
        assert contact is not None
        if received is not None:
            contact.received_at = received
        if status is not None:
            contact.status = status
        if document_text is not None:
            # The text arrives later, by extraction: an UPDATE the index must follow.
            document = await session.scalar(
                select(Document).where(Document.contact_id == contact.id)
            )
            assert document is not None
            document.text = document_text
    return accepted.contact_id


async def _ids(store: Store, query: str, filters: Filters | None = None, **kw: int) -> list[int]:
    async with store.sessions() as session:
        results = await search(session, query, filters or Filters(), **kw)
    return [hit.contact_id for hit in results.hits]


def test_queries_keep_words_and_drop_syntax() -> None:
    assert fts5_query(parse_query('facture "frais de taxi" hôp*')) == (
        '"facture" AND "frais de taxi" AND "hôp" *'
    )
    assert fts5_query(parse_query("AS-2026-000123")) == '"AS 2026 000123"'
    assert fts5_query(parse_query('NEAR(a b) OR "x AND ) * ( : ^ -')) == (
        '"NEAR a" AND "b" AND "OR" AND "x" AND "AND"'
    )
    assert parse_query('" * ( ) :') == []
    with pytest.raises(SearchError):
        parse_query("mot " * 200)


def test_highlight_escapes_everything_but_the_marks() -> None:
    assert highlight("<script>\ue000alert\ue001</script>") == (
        "&lt;script&gt;<mark>alert</mark>&lt;/script&gt;"
    )
    # Stray or unbalanced markers never leave an unclosed tag.
    assert highlight("\ue001a\ue000b\ue000c") == "a<mark>bc</mark>"


def test_python_snippets_mark_what_fts5_matches() -> None:
    terms = parse_query("hopital factur*")
    text = (
        "Bonjour. " + "mot " * 30 + "Voici les Factures de l'Hôpital Nord, à régler. " + "fin " * 30
    )
    snippet = marked_snippet(("Sans rapport", text), terms, words=8)
    assert snippet == "…Voici les \ue000Factures\ue001 de l'\ue000Hôpital\ue001 Nord, à…"
    assert marked_snippet(("rien ici",), terms) == ""


async def test_accents_and_case_do_not_matter(store: Store) -> None:
    wanted = await _contact(store, "a", subject="Facture hôpital", text="Séjour à l'Hôpital Nord")
    await _contact(store, "b", subject="Remorquage", text="Dépanneuse sur l'A7")
    assert await _ids(store, "facture hopital") == [wanted]
    assert await _ids(store, "FACTURE HÔPITAL") == [wanted]
    assert await _ids(store, "sejour") == [wanted]
    assert await _ids(store, "depanneuse a7") != [wanted]


async def test_dossier_references_and_emails_are_found(store: Store) -> None:
    wanted = await _contact(
        store, "r", subject="Votre dossier AS-2026-000123", sender="jean.dupont@example.org"
    )
    await _contact(store, "o", subject="Votre dossier AS-2026-000124")
    assert await _ids(store, "AS-2026-000123") == [wanted]
    assert await _ids(store, "as-2026-000123") == [wanted]
    assert await _ids(store, "jean.dupont@example.org") == [wanted]


async def test_subject_ranks_above_a_passing_mention(store: Store) -> None:
    mention = await _contact(
        store,
        "m",
        subject="Question",
        text="Bonjour, je vous écris au sujet de mon voyage. " * 5 + "Il y a aussi un taxi.",
    )
    strong = await _contact(store, "s", subject="Facture taxi", text="Ci-joint le reçu du taxi.")
    assert await _ids(store, "taxi") == [strong, mention]


async def test_snippets_are_escaped_and_highlighted(store: Store) -> None:
    await _contact(
        store,
        "x",
        subject="Réclamation",
        text='<script>alert("x")</script> <img src=x onerror=alert(1)> remboursement urgent',
    )
    async with store.sessions() as session:
        results = await search(session, "remboursement")
    snippet = results.hits[0].snippet_html
    assert "<mark>remboursement</mark>" in snippet
    # The only markup is ours; the message's tags are text (PostgreSQL's headline drops them).
    assert "<" not in snippet.replace("<mark>", "").replace("</mark>", "")
    assert "onerror=alert(1)&gt;" in snippet


async def test_documents_text_is_found_and_shown(store: Store) -> None:
    owner = await _contact(
        store,
        "d",
        subject="Pièces jointes",
        text="Voici les documents.",
        document_text="COMPTE RENDU D'HOSPITALISATION du 12/11/2026, Clinique Saint-Éloi",
    )
    async with store.sessions() as session:
        results = await search(session, "clinique saint eloi")
    assert [hit.contact_id for hit in results.hits] == [owner]
    (document,) = results.hits[0].documents
    assert document.filename == "d.pdf"
    assert "<mark>Clinique</mark>" in document.snippet_html
    assert "<mark>Éloi</mark>" in document.snippet_html


async def test_a_contact_changed_after_the_index_was_built_is_found(store: Store) -> None:
    contact_id = await _contact(store, "late", subject="Premier envoi", text="rien")
    assert await _ids(store, "rapatriement") == []
    async with store.sessions() as session, session.begin():
        contact = await session.get(Contact, contact_id)
        assert contact is not None
        contact.text = "Demande de rapatriement sanitaire"
    assert await _ids(store, "rapatriement") == [contact_id]
    assert await _ids(store, "rien") == []
    async with store.sessions() as session, session.begin():
        await session.execute(delete(Delivery).where(Delivery.contact_id == contact_id))
        await session.execute(delete(Contact).where(Contact.id == contact_id))
    assert await _ids(store, "rapatriement") == []


async def test_filters_and_pages(store: Store) -> None:
    early = await _contact(
        store, "e1", subject="Franchise", received=datetime(2026, 11, 2, 10, tzinfo=UTC)
    )
    late_sms = await _contact(
        store,
        "e2",
        subject="Franchise",
        channel="sms",
        sender="+33600000000",
        received=datetime(2026, 11, 20, 23, 59, tzinfo=UTC),
        status="needs_review",
    )
    assert await _ids(store, "franchise", Filters(channel="sms")) == [late_sms]
    assert await _ids(store, "franchise", Filters(status="needs_review")) == [late_sms]
    assert await _ids(store, "franchise", Filters(until=date(2026, 11, 19))) == [early]
    assert await _ids(store, "franchise", Filters(since=date(2026, 11, 20))) == [late_sms]
    assert await _ids(store, "franchise", Filters(until=date(2026, 11, 20))) == [late_sms, early]
    async with store.sessions() as session:
        second = await search(session, "franchise", limit=1, offset=1)
        beyond = await search(session, "franchise", limit=1, offset=5)
    assert [h.contact_id for h in second.hits] == [early] and second.total == 2
    assert beyond.hits == [] and beyond.total == 2


async def test_very_common_words_rank_the_newest_and_count_them_all(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [
        await _contact(store, f"c{n}", subject="Assistance", text="bonjour", channel=channel)
        for n, channel in enumerate(["email", "sms", "email", "sms", "email"])
    ]
    with_document = await _contact(
        store, "doc", subject="Pièce", text="voir pièce", document_text="bonjour madame"
    )
    monkeypatch.setattr("guichet.search.RANK_CAP", 2)
    async with store.sessions() as session:
        everything = await search(session, "bonjour", limit=10)
        sms = await search(session, "bonjour", Filters(channel="sms"), limit=10)
    assert everything.total == 6
    found = {hit.contact_id for hit in everything.hits}
    assert with_document in found and ids[-1] in found
    assert sms.total == 2
    assert {hit.contact_id for hit in sms.hits} == {ids[1], ids[3]}


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"facture',
        "facture)",
        "(((",
        "NEAR(facture taxi, 2)",
        "facture AND OR NOT",
        "*",
        "fac*ture*",
        "subject:facture",
        "^facture",
        "-facture",
        "'; DROP TABLE contact; --",
        "facture\x00taxi",
        "le la les",
        "ω ∑ 🚑",
    ],
)
async def test_nasty_queries_answer_cleanly(store: Store, query: str) -> None:
    await _contact(store, "n", subject="Facture taxi", text="le taxi de l'aéroport")
    async with store.sessions() as session:
        try:
            results = await search(session, query)
        except SearchError:
            return
    assert results.total == len(results.hits)


async def test_api_and_page_behind_the_door(store: Store) -> None:
    wanted = await _contact(store, "w", subject="Facture hôpital <b>urgent</b>", text="à payer")
    async with serve_site(store) as site:
        status, body = await site.call("GET", "/api/search?q=facture%20hopital")
        assert status == 200
        assert [h["contact_id"] for h in body["hits"]] == [wanted]
        assert body["total"] == 1
        assert "<mark>Facture</mark>" in body["hits"][0]["snippet_html"]
        status, body = await site.call("GET", "/api/search?q=%22%28%2A")
        assert status == 400 and "no word" in body["error"]
        status, body = await site.call("GET", "/api/search?q=x&status=nope")
        assert status == 400 and "status" in body["error"]
        status, body = await site.call("GET", "/api/search?q=x&from=2026-13-01")
        assert status == 400 and "from" in body["error"]
        headers = {"Authorization": f"Bearer {site.tokens['marie']}"}
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{site.url}/api/search?q=facture") as anonymous:
                assert anonymous.status == 401
            async with client.get(
                f"{site.url}/inbox/search?q=facture+hopital", headers=headers
            ) as page:
                assert page.status == 200
                html = await page.text()
        assert f'href="/inbox/contacts/{wanted}"' in html
        assert "&lt;b&gt;urgent&lt;/b&gt;" in html and "<b>urgent" not in html
        assert "<mark>" in html
