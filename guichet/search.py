"""Full-text search over contacts and documents (SQLite FTS5 or PostgreSQL): JSON and a page.

The SQL below is assembled from fragments written here (the ``noqa: S608``); every value that
comes from a user, the words and the filters, is a bound parameter.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import BindParameter, TextClause, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from guichet.access import identity, language
from guichet.parts import web_pages
from models.store import Store
from models.tables import Contact, UTCDateTime

#: Contact statuses a search may be narrowed to (the pipeline's own, see models.tables.Contact).
STATUSES = ("received", "processing", "processed", "needs_review", "failed")
MAX_QUERY = 500
MAX_TERMS = 12
MAX_LIMIT = 200
#: Words of context around the match in a snippet.
SNIPPET_WORDS = 16
#: Private-use characters mark a match inside a snippet: the text around them is escaped, and
#: only they become <mark>, so nothing from a message can open a tag.
OPEN, CLOSE = "\ue000", "\ue001"
#: PostgreSQL's configuration made by migration 0014 (french, plus unaccent when available).
PG_CONFIG = "guichet_french"
#: A match in a document counts a little less than the same match in the message itself.
DOCUMENT_WEIGHT = 0.8
#: Beyond this many matching contacts or documents, only the newest are ranked (see search).
RANK_CAP = 10_000
#: ts_headline reads the whole text it is given: bound its work on long OCR.
HEADLINE_CHARS = 20_000

_TERM = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"[^\W_]+")


class SearchError(ValueError):
    """A query or filter that cannot be run; the message says why, for the caller."""


@dataclass(frozen=True)
class Term:
    """One thing every result must contain: a word, or a phrase; the last word may be a prefix."""

    words: tuple[str, ...]
    prefix: bool = False
    #: The words as typed (hyphens and all): PostgreSQL's parser must split them the way it
    #: split the indexed text ("AS-2026-000123" is not three plain words to it).
    typed: str = ""


@dataclass(frozen=True)
class Filters:
    channel: str | None = None
    status: str | None = None
    since: date | None = None
    #: Inclusive: the whole day is searched.
    until: date | None = None


NO_FILTERS = Filters()


@dataclass(frozen=True)
class DocumentHit:
    id: int
    filename: str
    snippet_html: str


@dataclass(frozen=True)
class Hit:
    contact_id: int
    score: float
    channel: str
    status: str
    sender: str
    sender_name: str
    subject: str
    received_at: datetime
    dossier_ref: str | None
    #: Escaped text with the matches in <mark>; empty when only a document matched.
    snippet_html: str
    documents: tuple[DocumentHit, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "score": round(self.score, 6),
            "channel": self.channel,
            "status": self.status,
            "sender": self.sender,
            "sender_name": self.sender_name,
            "subject": self.subject,
            "received_at": self.received_at.isoformat(),
            "dossier_ref": self.dossier_ref,
            "snippet_html": self.snippet_html,
            "documents": [
                {"id": d.id, "filename": d.filename, "snippet_html": d.snippet_html}
                for d in self.documents
            ],
        }


@dataclass(frozen=True)
class Results:
    query: str
    total: int
    limit: int
    offset: int
    hits: list[Hit] = field(default_factory=list)


def parse_query(query: str) -> list[Term]:
    """The user's words, never their syntax: quotes make a phrase, a trailing * a prefix, and
    every other character (FTS5 operators, parentheses, NEAR, colons) only separates words."""
    if len(query) > MAX_QUERY:
        raise SearchError(f"the query is longer than {MAX_QUERY} characters")
    terms: list[Term] = []
    # PostgreSQL text cannot hold NUL; no word has one.
    query = query.replace("\x00", " ")
    for match in _TERM.finditer(query):
        phrase, chunk = match.group(1), match.group(2)
        source = phrase if phrase is not None else chunk
        words = tuple(_WORD.findall(source))
        if not words:
            continue
        prefix = phrase is None and chunk.endswith("*") and bool(_WORD.fullmatch(chunk[-2:-1]))
        # "AS-2026-000123" or "l'hôpital": the pieces of one chunk stay together, as a phrase.
        terms.append(Term(words, prefix, source.rstrip("*")))
        if len(terms) > MAX_TERMS:
            raise SearchError(f"the query has more than {MAX_TERMS} terms")
    return terms


def fts5_query(terms: Sequence[Term]) -> str:
    """An FTS5 expression made only of quoted strings: the words hold no quote nor operator."""
    return " AND ".join(
        f'"{" ".join(term.words)}"' + (" *" if term.prefix else "") for term in terms
    )


def _tsquery(terms: Sequence[Term]) -> tuple[str, dict[str, str]]:
    """A PostgreSQL tsquery expression with each term as a bound parameter."""
    parts: list[str] = []
    params: dict[str, str] = {}
    for number, term in enumerate(terms):
        name = f"term{number}"
        if term.prefix:
            # Words are letters and digits only, so quoting them in tsquery syntax is safe.
            quoted = [f"'{word}'" for word in term.words]
            params[name] = " <-> ".join(quoted) + ":*"
            parts.append(f"to_tsquery('{PG_CONFIG}'::regconfig, :{name})")
        else:
            # phraseto_tsquery reads plain text: no operator in it has a meaning.
            params[name] = term.typed or " ".join(term.words)
            parts.append(f"phraseto_tsquery('{PG_CONFIG}'::regconfig, :{name})")
    return "(" + " && ".join(parts) + ")", params


def highlight(snippet: str) -> str:
    """Escape a snippet and turn its match markers, and nothing else, into balanced <mark>s."""
    out: list[str] = []
    inside = False
    for piece in re.split(f"([{OPEN}{CLOSE}])", snippet):
        if piece == OPEN:
            if not inside:
                out.append("<mark>")
                inside = True
        elif piece == CLOSE:
            if inside:
                out.append("</mark>")
                inside = False
        else:
            out.append(html.escape(piece, quote=True))
    if inside:
        out.append("</mark>")
    return "".join(out)


def _fold(word: str) -> str:
    """What FTS5's ``unicode61 remove_diacritics 2`` makes of a word: no accent, no case."""
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def marked_snippet(texts: Sequence[str], terms: Sequence[Term], words: int = SNIPPET_WORDS) -> str:
    """A window of ``words`` words around the first match in the first text that has one, the
    matching words between the markers; "" when no text matches.

    FTS5's own snippet() re-reads the index for every row, which for a prefix over many words
    costs more than the whole ranking; the page's 20 texts are already in memory.
    """
    exact = {_fold(w) for t in terms for w in (t.words[:-1] if t.prefix else t.words)}
    prefixes = tuple(_fold(t.words[-1]) for t in terms if t.prefix)

    def matches(word: str) -> bool:
        folded = _fold(word)
        return folded in exact or bool(prefixes and folded.startswith(prefixes))

    for source in texts:
        tokens = list(_WORD.finditer(source))
        first = next((i for i, token in enumerate(tokens) if matches(token.group())), None)
        if first is None:
            continue
        start = max(0, first - words // 4)
        end = min(len(tokens), start + words)
        out = ["…" if start > 0 else ""]
        position = tokens[start].start()
        for token in tokens[start:end]:
            out.append(source[position : token.start()])
            word = token.group()
            out.append(f"{OPEN}{word}{CLOSE}" if matches(word) else word)
            position = token.end()
        out.append("…" if end < len(tokens) else "")
        return "".join(out)
    return ""


def _filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if filters.channel is not None:
        clauses.append("c.channel = :channel")
        params.append(bindparam("channel", filters.channel))
    if filters.status is not None:
        clauses.append("c.status = :status")
        params.append(bindparam("status", filters.status))
    if filters.since is not None:
        clauses.append("c.received_at >= :since")
        start = datetime.combine(filters.since, time(), tzinfo=UTC)
        params.append(bindparam("since", start, type_=UTCDateTime()))
    if filters.until is not None:
        clauses.append("c.received_at < :until")
        end = datetime.combine(filters.until + timedelta(days=1), time(), tzinfo=UTC)
        params.append(bindparam("until", end, type_=UTCDateTime()))
    return (" AND ".join(clauses) or "1 = 1"), params


def _sqlite_capped_hits(where: str, filtered: bool) -> str:
    """The newest RANK_CAP matching contacts and documents (filters applied), scored: FTS5
    walks its matches by rowid, newest first, and scores only the rows it hands over."""
    join = " JOIN contact c ON c.id = {owner}" if filtered else ""
    condition = f" AND {where}" if filtered else ""
    contact_join = join.format(owner="search_contact.rowid")
    document_join = join.format(owner="d.contact_id")
    return (
        "SELECT * FROM (SELECT search_contact.rowid AS contact_id,"  # noqa: S608
        " -bm25(search_contact, 4.0, 2.0, 2.0, 1.0) AS score"
        f" FROM search_contact{contact_join}"
        f" WHERE search_contact MATCH :query{condition}"
        " ORDER BY search_contact.rowid DESC LIMIT :cap)"
        " UNION ALL"
        " SELECT * FROM (SELECT d.contact_id AS contact_id,"
        f" -{DOCUMENT_WEIGHT} * bm25(search_document, 2.0, 1.0) AS score"
        " FROM search_document JOIN document d ON d.id = search_document.rowid"
        f"{document_join}"
        f" WHERE search_document MATCH :query{condition}"
        " ORDER BY search_document.rowid DESC LIMIT :cap)"
    )


def _ranking_sql(dialect: str, terms: Sequence[Term]) -> tuple[str, str, dict[str, Any]]:
    """The hits of contacts and of documents, each with a score (higher is better)."""
    if dialect == "sqlite":
        hits = (
            "SELECT rowid AS contact_id, -bm25(search_contact, 4.0, 2.0, 2.0, 1.0) AS score"  # noqa: S608
            " FROM search_contact WHERE search_contact MATCH :query"
            " UNION ALL"
            f" SELECT d.contact_id, -{DOCUMENT_WEIGHT} * bm25(search_document, 2.0, 1.0)"
            " FROM search_document JOIN document d ON d.id = search_document.rowid"
            " WHERE search_document MATCH :query"
        )
        return hits, "", {"query": fts5_query(terms)}
    tsquery, params = _tsquery(terms)
    hits = (
        "SELECT c.id AS contact_id, ts_rank(c.search_vector, q.query) AS score"  # noqa: S608
        " FROM contact c, q WHERE c.search_vector @@ q.query"
        " UNION ALL"
        f" SELECT d.contact_id, {DOCUMENT_WEIGHT} * ts_rank(d.search_vector, q.query)"
        " FROM document d, q WHERE d.search_vector @@ q.query"
    )
    return hits, f"q AS (SELECT {tsquery} AS query), ", dict(params)


async def _sqlite_too_many(session: AsyncSession, query: str) -> bool:
    """Whether contacts or documents match more than RANK_CAP rows (counting costs little)."""
    counts = await session.execute(
        text(
            "SELECT (SELECT count(*) FROM search_contact WHERE search_contact MATCH :query),"
            " (SELECT count(*) FROM search_document WHERE search_document MATCH :query)"
        ),
        {"query": query},
    )
    return int(max(counts.one())) > RANK_CAP


async def search(
    session: AsyncSession,
    query: str,
    filters: Filters = NO_FILTERS,
    *,
    limit: int = 20,
    offset: int = 0,
) -> Results:
    """Contacts whose own fields or documents' text hold every term, best first.

    When a query matches more than RANK_CAP contacts or documents (a very common word), only
    the newest RANK_CAP of each are ranked, so that it still answers in a fraction of a second
    on SQLite; the total stays exact.
    """
    terms = parse_query(query)
    if not terms:
        raise SearchError("the query holds no word to search")
    dialect = session.get_bind().dialect.name
    hits_sql, prelude, term_params = _ranking_sql(dialect, terms)
    where, filter_params = _filter_sql(filters)
    filtered = bool(filter_params)
    capped = dialect == "sqlite" and await _sqlite_too_many(session, term_params["query"])
    if capped:
        hits_sql = _sqlite_capped_hits(where, filtered)
        term_params["cap"] = RANK_CAP
    # Joining every hit to its contact costs as much as ranking them: only to filter. Ties go
    # to the newer contact (ids grow with arrival).
    source = "best"
    if filtered and not capped:
        source = f"best JOIN contact c ON c.id = best.contact_id WHERE {where}"
    statement = text(
        f"WITH {prelude}hits AS ({hits_sql}),"  # noqa: S608
        " best AS (SELECT contact_id, max(score) AS score FROM hits GROUP BY contact_id)"
        " SELECT best.contact_id AS id, best.score, count(*) OVER () AS total"
        f" FROM {source}"
        " ORDER BY best.score DESC, best.contact_id DESC"
        " LIMIT :limit OFFSET :offset"
    ).bindparams(*filter_params, limit=limit, offset=offset, **term_params)
    rows = (await session.execute(statement)).all()
    if rows and not capped:
        total = int(rows[0].total)
    elif offset or capped:
        # Every match, unscored: the exact number a capped ranking or an empty page lacks.
        term_params.pop("cap", None)
        matched = (
            "SELECT rowid AS contact_id FROM search_contact WHERE search_contact MATCH :query"
            " UNION SELECT d.contact_id FROM search_document"
            " JOIN document d ON d.id = search_document.rowid"
            " WHERE search_document MATCH :query"
            if dialect == "sqlite"
            else "SELECT c.id AS contact_id FROM contact c, q WHERE c.search_vector @@ q.query"
            " UNION SELECT d.contact_id FROM document d, q WHERE d.search_vector @@ q.query"
        )
        joined = f" JOIN contact c ON c.id = hits.contact_id WHERE {where}" if filtered else ""
        counted = text(
            f"WITH {prelude}hits AS ({matched}) SELECT count(*) FROM hits{joined}"  # noqa: S608
        ).bindparams(*filter_params, **term_params)
        total = int((await session.execute(counted)).scalar_one())
    else:
        total = 0
    ids = [int(row.id) for row in rows]
    scores = {int(row.id): float(row.score) for row in rows}
    contacts = {
        c.id: c
        for c in await session.scalars(
            select(Contact).where(Contact.id.in_(ids)).options(selectinload(Contact.dossier))
        )
    }
    snippets, documents = await _snippets(session, dialect, terms, ids)
    if dialect == "sqlite":
        snippets = {
            c.id: highlight(marked_snippet((c.subject, c.text, c.sender_name, c.sender), terms))
            for c in contacts.values()
        }
    hits = [
        Hit(
            contact_id=contact.id,
            score=scores[contact.id],
            channel=contact.channel,
            status=contact.status,
            sender=contact.sender,
            sender_name=contact.sender_name,
            subject=contact.subject,
            received_at=contact.received_at,
            dossier_ref=contact.dossier.ref if contact.dossier else None,
            snippet_html=snippets.get(contact.id, ""),
            documents=tuple(documents.get(contact.id, ())),
        )
        for contact in (contacts[i] for i in ids if i in contacts)
    ]
    return Results(query=query, total=total, limit=limit, offset=offset, hits=hits)


async def _snippets(
    session: AsyncSession, dialect: str, terms: Sequence[Term], ids: Sequence[int]
) -> tuple[dict[int, str], dict[int, list[DocumentHit]]]:
    """Snippets for one page of results only: they cost far more than the ranking."""
    if not ids:
        return {}, {}
    # SQLite: the contacts' snippets are cut in Python (marked_snippet), the search knows how.
    contact_sql: TextClause | None = None
    document_sql: TextClause
    if dialect == "sqlite":
        params: dict[str, Any] = {"query": fts5_query(terms), "open": OPEN, "close": CLOSE}
        document_sql = text(
            "SELECT d.contact_id, d.id, d.filename,"
            " snippet(search_document, 1, :open, :close, '…', :words) AS snippet"
            " FROM search_document JOIN document d ON d.id = search_document.rowid"
            " WHERE search_document MATCH :query"
            " AND search_document.rowid IN (SELECT id FROM document WHERE contact_id IN :ids)"
            " ORDER BY d.contact_id, d.position, d.id"
        )
        params["words"] = SNIPPET_WORDS
    else:
        tsquery, params = _tsquery(terms)
        options = (
            f"StartSel={OPEN}, StopSel={CLOSE}, MaxWords={SNIPPET_WORDS + 8},"
            f' MinWords={SNIPPET_WORDS // 2}, MaxFragments=2, FragmentDelimiter=" … "'
        )
        params["options"] = options
        contact_sql = text(
            f"WITH q AS (SELECT {tsquery} AS query)"  # noqa: S608
            f" SELECT c.id, ts_headline('{PG_CONFIG}'::regconfig,"
            f" left(c.subject || ' — ' || c.sender_name || ' ' || c.sender || ' — ' || c.text,"
            f" {HEADLINE_CHARS}), q.query, :options) AS snippet"
            " FROM contact c, q WHERE c.id IN :ids AND c.search_vector @@ q.query"
        )
        document_sql = text(
            f"WITH q AS (SELECT {tsquery} AS query)"  # noqa: S608
            " SELECT d.contact_id, d.id, d.filename,"
            f" ts_headline('{PG_CONFIG}'::regconfig, left(d.text, {HEADLINE_CHARS}),"
            " q.query, :options) AS snippet"
            " FROM document d, q WHERE d.contact_id IN :ids AND d.search_vector @@ q.query"
            " ORDER BY d.contact_id, d.position, d.id"
        )
    expanding: BindParameter[list[int]] = bindparam("ids", list(ids), expanding=True)
    snippets: dict[int, str] = {}
    if contact_sql is not None:
        contact_rows = await session.execute(contact_sql.bindparams(expanding, **params))
        snippets = {int(row.id): highlight(row.snippet or "") for row in contact_rows}
    documents: dict[int, list[DocumentHit]] = {}
    document_rows = await session.execute(document_sql.bindparams(expanding, **params))
    for row in document_rows:
        documents.setdefault(int(row.contact_id), []).append(
            DocumentHit(int(row.id), row.filename, highlight(row.snippet or ""))
        )
    return snippets, documents


# --------------------------------------------------------------------------- HTTP


TEXTS = {
    "fr": {
        "title": "Recherche",
        "query": "Rechercher dans les contacts et les documents",
        "channel": "Canal",
        "status": "Statut",
        "since": "Du",
        "until": "Au",
        "any": "Tous",
        "submit": "Rechercher",
        "results": "{total} résultat(s)",
        "none": "Aucun contact ne contient ces mots.",
        "previous": "Page précédente",
        "next": "Page suivante",
        "dossier": "Dossier",
        "documents": "Documents",
        "statuses": {
            "received": "reçu",
            "processing": "en cours",
            "processed": "traité",
            "needs_review": "à vérifier",
            "failed": "en échec",
        },
    },
    "en": {
        "title": "Search",
        "query": "Search contacts and documents",
        "channel": "Channel",
        "status": "Status",
        "since": "From",
        "until": "To",
        "any": "Any",
        "submit": "Search",
        "results": "{total} result(s)",
        "none": "No contact holds these words.",
        "previous": "Previous page",
        "next": "Next page",
        "dossier": "Dossier",
        "documents": "Documents",
        "statuses": {
            "received": "received",
            "processing": "processing",
            "processed": "processed",
            "needs_review": "needs review",
            "failed": "failed",
        },
    },
}
CHANNELS = ("email", "sms", "chat", "edi", "ged")


def _date_param(query: Any, name: str) -> date | None:
    raw = query.get(name) or None
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SearchError(f"{name} must be a date YYYY-MM-DD, got {raw[:40]!r}") from None


def _int_param(query: Any, name: str, default: int, high: int) -> int:
    raw = query.get(name) or str(default)
    if not raw.isdigit() or len(raw) > 9 or not 0 <= int(raw) <= high:
        raise SearchError(f"{name} must be a whole number from 0 to {high}, got {raw[:40]!r}")
    return int(raw)


def filters_from(query: Any) -> Filters:
    """Filters from a request's query string; SearchError names the bad one."""
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise SearchError(f"status must be one of {', '.join(STATUSES)}")
    channel = query.get("channel") or None
    if channel is not None and len(channel) > 20:
        raise SearchError("channel is at most 20 characters")
    since, until = _date_param(query, "from"), _date_param(query, "to")
    if since and until and since > until:
        raise SearchError("from must not be after to")
    return Filters(channel=channel, status=status, since=since, until=until)


class SearchViews:
    """``GET /api/search`` (JSON) and ``GET /inbox/search`` (the page); both behind the door."""

    def __init__(self, store: Store, templates_dir: Path) -> None:
        self.store = store
        self.pages = web_pages(templates_dir, strict=False)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/api/search", self.api), web.get("/inbox/search", self.page)]

    async def _run(self, request: web.Request) -> Results:
        query = request.query
        q = query.get("q", "").strip()
        if not q:
            raise SearchError("q is required: the words to search")
        filters = filters_from(query)
        limit = _int_param(query, "limit", 20, MAX_LIMIT) or 1
        offset = _int_param(query, "offset", 0, 10**8)
        async with self.store.sessions() as session:
            return await search(session, q, filters, limit=limit, offset=offset)

    async def api(self, request: web.Request) -> web.Response:
        identity(request)
        try:
            results = await self._run(request)
        except SearchError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(
            {
                "query": results.query,
                "total": results.total,
                "limit": results.limit,
                "offset": results.offset,
                "hits": [hit.as_json() for hit in results.hits],
            }
        )

    async def page(self, request: web.Request) -> web.Response:
        who = identity(request)
        lang = language(request)
        error = None
        results = None
        if request.query.get("q", "").strip():
            try:
                results = await self._run(request)
            except SearchError as exc:
                error = str(exc)
        values = {k: request.query.get(k, "") for k in ("q", "channel", "status", "from", "to")}
        pages: dict[str, str] = {}
        if results is not None:
            base = {k: v for k, v in values.items() if v} | {"limit": str(results.limit)}
            if results.offset > 0:
                back = max(0, results.offset - results.limit)
                pages["previous"] = "/inbox/search?" + urlencode(base | {"offset": str(back)})
            if results.offset + len(results.hits) < results.total:
                ahead = results.offset + results.limit
                pages["next"] = "/inbox/search?" + urlencode(base | {"offset": str(ahead)})
        body = self.pages.get_template("search.html").render(
            lang=lang,
            t=TEXTS[lang],
            user=who,
            values=values,
            channels=CHANNELS,
            statuses=STATUSES,
            results=results,
            error=error,
            pages=pages,
        )
        response = web.Response(text=body, content_type="text/html", status=400 if error else 200)
        response.headers["Cache-Control"] = "no-store"
        return response


def routes(store: Store, templates_dir: Path) -> list[web.AbstractRouteDef]:
    return SearchViews(store, templates_dir).routes()
