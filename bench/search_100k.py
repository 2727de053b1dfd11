"""Full-text search time on 100 000 contacts, per back end, against anchors from the same run.

Usage: .venv/bin/python bench/search_100k.py [--contacts N] [--rounds R] [--no-postgres]

Builds a database of synthetic contacts in French (subjects, bodies, senders, and a document
with text for one contact in two) through the real migrations, so the index is filled by the
same triggers or generated columns as in production. Then, per query, it times Guichet's
``search`` (ranking, filters, a page of 20 with snippets) and two anchors measured in the same
run on the same data: a bare ``LIKE`` scan (what one writes without a full-text index) and the
raw full-text query with no wrapper (FTS5 ``MATCH ... ORDER BY rank`` or ``@@`` with
``ts_rank``). Prints median and p95 in milliseconds and the ratios. Target: p95 < 200 ms.
PostgreSQL is at GUICHET_TEST_POSTGRES_URL (default postgres@127.0.0.1/test); a scratch
database is created there and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from guichet.search import Filters, fts5_query, parse_query, search
from models import migrate
from models.blobs import BlobStore
from models.db import create_engine as create_async_engine
from models.db import sync_url
from models.store import Store
from models.tables import Contact, Document

FIRST = ["Jean", "Marie", "Sophie", "Karim", "Lucie", "Thomas", "Nadia", "Pierre", "Léa", "Hugo"]
LAST = ["Dupont", "Martin", "Bernard", "Lefèvre", "Moreau", "Girard", "Roux", "Benali", "Faure"]
CITIES = ["Lyon", "Marseille", "Nantes", "Lille", "Bordeaux", "Toulouse", "Nice", "Rennes"]
SUBJECTS = [
    "Facture hôpital",
    "Demande de remboursement",
    "Remorquage de mon véhicule",
    "Frais de taxi",
    "Rapatriement sanitaire",
    "Question sur mon dossier",
    "Pièces justificatives",
    "Hébergement à l'hôtel",
    "Réclamation",
    "Attestation d'assistance",
    "Panne sur l'autoroute",
    "Annulation de voyage",
]
SENTENCES = [
    "Bonjour, je vous écris au sujet de mon dossier {ref}.",
    "Vous trouverez ci-joint la facture de l'hôpital de {city} pour un montant de {amount} €.",
    "Mon véhicule a été remorqué jusqu'au garage de {city} le {day} novembre.",
    "Le taxi entre l'aéroport et l'hôtel m'a coûté {amount} euros.",
    "Pourriez-vous me dire où en est le remboursement de mes frais médicaux ?",
    "Mon fils a été hospitalisé à la clinique Saint-Éloi de {city}.",
    "Je n'ai toujours pas reçu l'attestation demandée la semaine dernière.",
    "Le dépanneur est intervenu sur l'A7 après une crevaison.",
    "Merci de me rappeler au {phone} dès que possible.",
    "Je joins le compte rendu d'hospitalisation et l'ordonnance.",
    "Nous avons dû prolonger notre séjour de {days} nuits à cause de la grève.",
    "Cordialement, {name}.",
]
DOCUMENTS = [
    "FACTURE N° {num} Hôpital {city} Séjour du {day}/11/2026 Montant total {amount} EUR TVA",
    "COMPTE RENDU D'HOSPITALISATION Patient {name} admis aux urgences le {day}/11/2026",
    "Bon d'intervention dépannage remorquage véhicule immatriculé {plate} kilométrage {num}",
    "Reçu taxi course aéroport {city} centre-ville {amount} € TTC chauffeur n° {num}",
    "ORDONNANCE Docteur {name} {city} : traitement antibiotique sept jours",
]
QUERIES: list[tuple[str, Filters]] = [
    ("facture hopital", Filters()),
    ("remboursement", Filters()),
    ("taxi aéroport", Filters()),
    ("rapatriement sanitaire", Filters()),
    ("clinique saint eloi", Filters()),
    ("hospit*", Filters()),
    ("bonjour", Filters()),
    ("AS-2026-004242", Filters()),
    ("crevaison A7", Filters(channel="sms")),
    ("grève", Filters(status="needs_review")),
    ("ordonnance antibiotique", Filters()),
    ("zzzintrouvable", Filters()),
]
CHANNELS = ["email"] * 6 + ["sms"] * 2 + ["chat", "ged"]
STATUSES = ["processed"] * 6 + ["needs_review"] * 3 + ["failed"]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        ref=f"AS-2026-{rng.randrange(1, 20000):06d}",
        city=rng.choice(CITIES),
        amount=f"{rng.randrange(20, 5000)},{rng.randrange(100):02d}",
        day=rng.randrange(1, 29),
        phone=f"06 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} 00",
        days=rng.randrange(1, 6),
        name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        num=rng.randrange(1000, 999999),
        plate=f"{rng.choice('ABCDEFG')}{rng.choice('HJKLMN')}-{rng.randrange(100, 999)}-XY",
    )


def rows(count: int, seed: int = 7) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for number in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        body = " ".join(_fill(rng, s) for s in rng.sample(SENTENCES, rng.randrange(3, 7)))
        contact = {
            "id": number,
            "channel": rng.choice(CHANNELS),
            "natural_key": f"bench-{number}",
            "sender": f"{first.lower()}.{last.lower()}@example.org",
            "sender_name": f"{first} {last}",
            "subject": rng.choice(SUBJECTS),
            "text": body,
            "received_at": start + timedelta(minutes=5 * number),
            "status": rng.choice(STATUSES),
        }
        document = None
        if number % 2 == 0:
            document = {
                "contact_id": number,
                "filename": f"piece-{number}.pdf",
                "sha256": f"{number:064x}",
                "size": 1000,
                "text": " ".join(_fill(rng, d) for d in rng.sample(DOCUMENTS, 2)),
            }
        yield contact, document


def build(url: str, count: int) -> float:
    """Migrate, then bulk insert in batches; returns the seconds it took."""
    started = time.perf_counter()
    migrate.upgrade(url)
    engine = create_engine(sync_url(url))
    batch: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(insert(Contact), [c for c, _ in batch])
            documents = [d for _, d in batch if d]
            if documents:
                conn.execute(insert(Document), documents)
        batch.clear()

    for pair in rows(count):
        batch.append(pair)
        if len(batch) == 5000:
            flush()
    if batch:
        flush()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE contact")
            conn.exec_driver_sql("ANALYZE document")
        else:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    await call()  # warm the caches: every figure below is a warm one
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


async def measure(url: str, rounds: int) -> None:
    store = Store(create_async_engine(url), BlobStore(Path(tempfile.mkdtemp()) / "blobs"))
    dialect = make_url(url).get_backend_name()
    ours: list[float] = []
    scans: list[float] = []
    raws: list[float] = []
    print(f"{'query':32} {'hits':>7} {'guichet':>9} {'LIKE scan':>10} {'raw FTS':>9}  (median ms)")
    try:
        for query, filters in QUERIES:
            words = parse_query(query)
            first = words[0].words[0]

            async def ours_call(q: str = query, f: Filters = filters) -> Any:
                async with store.sessions() as session:
                    return await search(session, q, f, limit=20)

            async def like_call(word: str = first) -> Any:
                # The anchor without an index, doing the same job (a count and a first
                # page): a LIKE over subject and text of every contact.
                op = "ILIKE" if dialect == "postgresql" else "LIKE"
                async with store.sessions() as session:
                    sql = (
                        "SELECT id, count(*) OVER () FROM contact"  # noqa: S608
                        f" WHERE subject {op} :p OR text {op} :p"
                        " ORDER BY received_at DESC LIMIT 20"
                    )
                    return (await session.execute(text(sql), {"p": f"%{word}%"})).all()

            async def raw_call(q: str = query) -> Any:
                async with store.sessions() as session:
                    if dialect == "sqlite":
                        sql = (
                            "SELECT rowid FROM search_contact WHERE search_contact MATCH :q"
                            " ORDER BY rank LIMIT 20"
                        )
                        params = {"q": fts5_query(parse_query(q))}
                    else:
                        sql = (
                            "SELECT id FROM contact,"
                            " websearch_to_tsquery('guichet_french', :q) query"
                            " WHERE search_vector @@ query"
                            " ORDER BY ts_rank(search_vector, query) DESC LIMIT 20"
                        )
                        params = {"q": q.replace("*", "")}
                    return (await session.execute(text(sql), params)).all()

            result = await ours_call()
            mine = await timed(ours_call, rounds)
            scan = await timed(like_call, rounds)
            raw = await timed(raw_call, rounds)
            ours += mine
            scans += scan
            raws += raw
            label = query + (" +filter" if filters != Filters() else "")
            print(
                f"{label:32} {result.total:7d} {statistics.median(mine):9.1f}"
                f" {statistics.median(scan):10.1f} {statistics.median(raw):9.1f}"
            )
    finally:
        await store.close()
    print(
        f"{'all queries':32} {'':7} median {statistics.median(ours):.1f} ms,"
        f" p95 {p95(ours):.1f} ms (target < 200 ms)"
    )
    print(
        f"{'anchors':32} {'':7} LIKE scan median {statistics.median(scans):.1f} ms,"
        f" p95 {p95(scans):.1f}; raw full-text median {statistics.median(raws):.1f} ms,"
        f" p95 {p95(raws):.1f}"
    )
    print(
        f"{'ratios (median)':32} {'':7} guichet / LIKE scan"
        f" {statistics.median(ours) / statistics.median(scans):.3f},"
        f" guichet / raw full-text {statistics.median(ours) / statistics.median(raws):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        print(f"SQLite FTS5: {args.contacts} contacts built in {build(url, args.contacts):.0f} s")
        asyncio.run(measure(url, args.rounds))
    if args.no_postgres:
        return
    base = os.environ.get(
        "GUICHET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    admin = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"guichet_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
        print()
        print(f"PostgreSQL: {args.contacts} contacts built in {build(url, args.contacts):.0f} s")
        asyncio.run(measure(url, args.rounds))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
