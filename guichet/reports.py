"""Activity reports (tableaux de synthèse): figures by SQL over a date range, as a page,
CSV, standalone HTML or an Excel workbook."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy import String, case, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from guichet.access import language, require
from guichet.parts import web_pages
from models.clock import utcnow
from models.store import Store
from models.tables import (
    AuditEvent,
    Contact,
    ContactTriage,
    Document,
    OutboundMessage,
    User,
)

Cell = str | int | float | None

#: Longest range a report covers; a longer one is refused rather than left to run for minutes.
MAX_DAYS = 400
#: Statuses of a contact the machine has not finished with, or that wait for a person.
OPEN_STATUSES = ("received", "processing", "needs_review", "failed")
#: Backlog buckets by age: (upper bound in hours or None, key).
AGE_BUCKETS: tuple[tuple[int | None, str], ...] = (
    (24, "lt_1d"),
    (72, "1d_3d"),
    (168, "3d_7d"),
    (720, "7d_30d"),
    (None, "gt_30d"),
)
#: Audit objects a person acts on for a contact: the contact, its replies, its documents.
HUMAN_OBJECTS = ("contact", "outbound_message", "document")

LABELS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Tableaux de synthèse",
        "volumes": "Volumes par canal et par jour",
        "intents": "Motifs des contacts",
        "doc_types": "Types de documents",
        "matching": "Rattachement automatique",
        "acknowledgement": "Délai d'accusé de réception automatique",
        "first_action": "Délai de première action humaine",
        "backlog": "Contacts en attente par ancienneté",
        "work": "Travail par gestionnaire",
        "held": "Réponses retenues",
        "day": "Jour",
        "channel": "Canal",
        "contacts": "Contacts",
        "intent": "Motif",
        "doc_type": "Type",
        "documents": "Documents",
        "share": "Part (%)",
        "matched": "Rattachés automatiquement",
        "rate": "Taux (%)",
        "measured": "Contacts mesurés",
        "p50": "Médiane (min)",
        "p95": "95e centile (min)",
        "age": "Ancienneté",
        "user": "Gestionnaire",
        "action": "Action",
        "events": "Actions",
        "purpose": "Objet",
        "oldest": "Plus ancienne (h)",
        "lt_1d": "moins d'un jour",
        "1d_3d": "1 à 3 jours",
        "3d_7d": "3 à 7 jours",
        "7d_30d": "7 à 30 jours",
        "gt_30d": "plus de 30 jours",
        "none": "(aucun)",
        "period": "Du {since} au {until} (jours UTC, inclus)",
        "snapshot": "État au moment du rapport",
        "show": "Afficher",
        "from": "Du",
        "to": "Au",
        "chart": "Graphique",
        "empty": "Rien sur la période.",
        "export": "Exporter",
    },
    "en": {
        "title": "Activity reports",
        "volumes": "Volumes per channel and day",
        "intents": "Intent mix",
        "doc_types": "Document-type mix",
        "matching": "Automatic matching",
        "acknowledgement": "Time to automatic acknowledgement",
        "first_action": "Time to first human action",
        "backlog": "Backlog by age",
        "work": "Work per gestionnaire",
        "held": "Held replies",
        "day": "Day",
        "channel": "Channel",
        "contacts": "Contacts",
        "intent": "Intent",
        "doc_type": "Type",
        "documents": "Documents",
        "share": "Share (%)",
        "matched": "Matched automatically",
        "rate": "Rate (%)",
        "measured": "Contacts measured",
        "p50": "Median (min)",
        "p95": "95th percentile (min)",
        "age": "Age",
        "user": "Gestionnaire",
        "action": "Action",
        "events": "Actions",
        "purpose": "Purpose",
        "oldest": "Oldest (h)",
        "lt_1d": "under a day",
        "1d_3d": "1 to 3 days",
        "3d_7d": "3 to 7 days",
        "7d_30d": "7 to 30 days",
        "gt_30d": "over 30 days",
        "none": "(none)",
        "period": "From {since} to {until} (UTC days, inclusive)",
        "snapshot": "As of the time of the report",
        "show": "Show",
        "from": "From",
        "to": "To",
        "chart": "Chart",
        "empty": "Nothing in this period.",
        "export": "Export",
    },
}


class ReportError(ValueError):
    """A report that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Table:
    """One table of the report: column keys (translated by LABELS) and rows of plain values."""

    key: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    #: Column indexes (label, value) drawn as a bar chart on the page.
    chart: tuple[int, int] | None = None
    #: True when the table is a state at the time of the report, not over the range.
    snapshot: bool = False


@dataclass(frozen=True)
class Report:
    since: date
    until: date
    made_at: datetime
    tables: list[Table] = field(default_factory=list)

    def table(self, key: str) -> Table:
        return next(t for t in self.tables if t.key == key)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _share(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def _utc_day(column: Any, dialect: str) -> Any:
    # SQLite keeps naive UTC text; PostgreSQL would take the session's zone without timezone().
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _day_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


async def build_report(
    session: AsyncSession, since: date, until: date, now: datetime | None = None
) -> Report:
    """Every table over inbound contacts received from ``since`` to ``until`` (UTC days,
    inclusive); the backlog and held replies are states at ``now``."""
    if since > until:
        raise ReportError("from must not be after to")
    if (until - since).days >= MAX_DAYS:
        raise ReportError(f"a report covers at most {MAX_DAYS} days")
    now = now or utcnow()
    start = datetime.combine(since, time(), tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time(), tzinfo=UTC)
    dialect = session.get_bind().dialect.name
    in_range = (
        Contact.direction == "inbound",
        Contact.received_at >= start,
        Contact.received_at < end,
    )
    report = Report(since, until, now)
    tables = report.tables

    day = _utc_day(Contact.received_at, dialect).label("day")
    volumes = await session.execute(
        select(day, Contact.channel, func.count())
        .where(*in_range)
        .group_by(day, Contact.channel)
        .order_by(day, Contact.channel)
    )
    tables.append(
        Table(
            "volumes",
            ("day", "channel", "contacts"),
            [(_day_text(d), channel, n) for d, channel, n in volumes],
            chart=(0, 2),
        )
    )

    total = int(await session.scalar(select(func.count()).where(*in_range)) or 0)
    intent_rows = (
        await session.execute(
            select(Contact.intent, func.count())
            .where(*in_range)
            .group_by(Contact.intent)
            .order_by(func.count().desc(), func.coalesce(Contact.intent, ""))
        )
    ).all()
    tables.append(
        Table(
            "intents",
            ("intent", "contacts", "share"),
            [(intent, n, _share(n, total)) for intent, n in intent_rows],
            chart=(0, 1),
        )
    )

    doc_rows = (
        await session.execute(
            select(Document.doc_type, func.count())
            .join(Contact, Contact.id == Document.contact_id)
            .where(*in_range)
            .group_by(Document.doc_type)
            .order_by(func.count().desc(), func.coalesce(Document.doc_type, ""))
        )
    ).all()
    documents = sum(n for _, n in doc_rows)
    tables.append(
        Table(
            "doc_types",
            ("doc_type", "documents", "share"),
            [(doc_type, n, _share(n, documents)) for doc_type, n in doc_rows],
            chart=(0, 1),
        )
    )

    # Matched by a rule of intake, not attached by a person (guichet.actions writes "attached
    # by NAME" as the rule) and still attached.
    automatic = int(
        await session.scalar(
            select(func.count()).where(
                *in_range,
                Contact.dossier_id.is_not(None),
                Contact.match_rule.is_not(None),
                Contact.match_rule.not_like("attached by %"),
            )
        )
        or 0
    )
    tables.append(
        Table(
            "matching",
            ("contacts", "matched", "rate"),
            [(total, automatic, _share(automatic, total))],
        )
    )

    first_ack = (
        select(Contact.received_at, func.min(OutboundMessage.sent_at))
        .join(OutboundMessage, OutboundMessage.contact_id == Contact.id)
        .where(
            *in_range,
            OutboundMessage.purpose == "acknowledgement",
            OutboundMessage.sent_at.is_not(None),
        )
        .group_by(Contact.id, Contact.received_at)
    )
    delays = [
        (sent - got).total_seconds()
        for got, sent in await session.execute(first_ack)
        if sent is not None
    ]
    tables.append(_delay_table("acknowledgement", delays, total))

    users = select(User.username)
    contact_id = cast(Contact.id, String)
    actions = union_all(
        select(Contact.id.label("contact_id"), AuditEvent.at.label("at"))
        .join(
            AuditEvent,
            (AuditEvent.object_type == "contact") & (AuditEvent.object_id == contact_id),
        )
        .where(*in_range, AuditEvent.actor.in_(users)),
        select(Contact.id, AuditEvent.at)
        .join(OutboundMessage, OutboundMessage.contact_id == Contact.id)
        .join(
            AuditEvent,
            (AuditEvent.object_type == "outbound_message")
            & (AuditEvent.object_id == cast(OutboundMessage.id, String)),
        )
        .where(*in_range, AuditEvent.actor.in_(users)),
        select(Contact.id, AuditEvent.at)
        .join(Document, Document.contact_id == Contact.id)
        .join(
            AuditEvent,
            (AuditEvent.object_type == "document")
            & (AuditEvent.object_id == cast(Document.id, String)),
        )
        .where(*in_range, AuditEvent.actor.in_(users)),
    ).subquery()
    first_human = (
        select(Contact.received_at, func.min(actions.c.at))
        .join(actions, actions.c.contact_id == Contact.id)
        .group_by(Contact.id, Contact.received_at)
    )
    delays = [(acted - got).total_seconds() for got, acted in await session.execute(first_human)]
    tables.append(_delay_table("first_action", delays, total))

    bucket_case = case(
        *[
            (Contact.received_at > now - timedelta(hours=hours), literal(key))
            for hours, key in AGE_BUCKETS
            if hours is not None
        ],
        else_=literal(AGE_BUCKETS[-1][1]),
    ).label("bucket")
    done = select(ContactTriage.contact_id).where(ContactTriage.done_at.is_not(None))
    backlog: dict[str, int] = dict(
        (
            await session.execute(
                select(bucket_case, func.count())
                .where(
                    Contact.direction == "inbound",
                    Contact.status.in_(OPEN_STATUSES),
                    Contact.id.not_in(done),
                )
                .group_by(bucket_case)
            )
        ).all()
    )
    tables.append(
        Table(
            "backlog",
            ("age", "contacts"),
            [(key, int(backlog.get(key, 0))) for _, key in AGE_BUCKETS],
            chart=(0, 1),
            snapshot=True,
        )
    )

    work = await session.execute(
        select(AuditEvent.actor, AuditEvent.action, func.count())
        .where(
            AuditEvent.at >= start,
            AuditEvent.at < end,
            AuditEvent.actor.in_(users),
            AuditEvent.object_type != "user",
        )
        .group_by(AuditEvent.actor, AuditEvent.action)
        .order_by(AuditEvent.actor, AuditEvent.action)
    )
    tables.append(Table("work", ("user", "action", "events"), [tuple(row) for row in work]))

    held = await session.execute(
        select(OutboundMessage.purpose, func.count(), func.min(OutboundMessage.created_at))
        .where(OutboundMessage.status == "held")
        .group_by(OutboundMessage.purpose)
        .order_by(OutboundMessage.purpose)
    )
    tables.append(
        Table(
            "held",
            ("purpose", "contacts", "oldest"),
            [
                (purpose, n, round((now - oldest).total_seconds() / 3600, 1) if oldest else None)
                for purpose, n, oldest in held
            ],
            snapshot=True,
        )
    )
    return report


def _delay_table(key: str, seconds: list[float], total: int) -> Table:
    return Table(
        key,
        ("measured", "contacts", "p50", "p95"),
        [
            (
                len(seconds),
                total,
                _minutes(percentile(seconds, 50)),
                _minutes(percentile(seconds, 95)),
            )
        ],
    )


# --------------------------------------------------------------------------- formats


def _label(value: Cell, column: str, labels: dict[str, str]) -> Cell:
    if value is None and column in ("intent", "doc_type", "purpose"):
        return labels["none"]
    if column == "age" and isinstance(value, str):
        return labels.get(value, value)
    return value


def localized_rows(table: Table, lang: str) -> list[tuple[Cell, ...]]:
    labels = LABELS[lang]
    return [
        tuple(_label(v, c, labels) for v, c in zip(row, table.columns, strict=True))
        for row in table.rows
    ]


def to_csv(report: Report, lang: str = "fr") -> str:
    """One section per table: its title line, its header, its rows, then a blank line."""
    labels = LABELS[lang]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([labels["title"], report.since.isoformat(), report.until.isoformat()])
    writer.writerow([])
    for table in report.tables:
        writer.writerow([f"# {labels[table.key]}"])
        writer.writerow([labels[c] for c in table.columns])
        writer.writerows(
            ["" if v is None else v for v in row] for row in localized_rows(table, lang)
        )
        writer.writerow([])
    return out.getvalue()


def to_xlsx(report: Report, target: Path | io.BytesIO, lang: str = "fr") -> None:
    """One sheet per table, named by its key; the header row in bold."""
    # Here, not at the top: every ``guichet`` command imports this module, few write xlsx.
    from openpyxl import Workbook
    from openpyxl.styles import Font

    labels = LABELS[lang]
    book = Workbook()
    if book.active is not None:
        book.remove(book.active)
    bold = Font(bold=True)
    for table in report.tables:
        sheet = book.create_sheet(table.key)
        sheet.append([labels[c] for c in table.columns])
        for cell in sheet[1]:
            cell.font = bold
        for row in localized_rows(table, lang):
            sheet.append(list(row))
        for index, column in enumerate(table.columns, start=1):
            width = max([len(labels[column])] + [len(str(r[index - 1] or "")) for r in table.rows])
            sheet.column_dimensions[sheet.cell(1, index).column_letter].width = min(60, width + 2)
    book.save(target)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    y: int
    width: float

    @property
    def text(self) -> str:
        return f"{self.value:g}"


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    height: int
    label_width: int = 160
    bar_width: int = 320


BAR_HEIGHT = 22


def chart(table: Table, lang: str) -> Chart | None:
    """Horizontal bars for one table (values summed by label): drawn by the template as SVG."""
    if table.chart is None or not table.rows:
        return None
    label_at, value_at = table.chart
    sums: dict[str, float] = {}
    for row in localized_rows(table, lang):
        value = row[value_at]
        sums[str(row[label_at])] = sums.get(str(row[label_at]), 0) + float(
            value if isinstance(value, int | float) else 0
        )
    top = max(sums.values()) or 1
    bars = [
        Bar(label, value, index * BAR_HEIGHT, 320 * value / top)
        for index, (label, value) in enumerate(sums.items())
    ]
    return Chart(bars, len(bars) * BAR_HEIGHT)


def to_html(
    report: Report, pages: jinja2.Environment, lang: str = "fr", *, standalone: bool = True
) -> str:
    """A self-contained HTML file, or (``standalone=False``) the page in the web workspace."""
    return pages.get_template("reports.html").render(
        lang=lang,
        t=LABELS[lang],
        report=report,
        tables=[
            (table, localized_rows(table, lang), chart(table, lang)) for table in report.tables
        ],
        standalone=standalone,
    )


# --------------------------------------------------------------------------- HTTP


def parse_range(raw_from: str | None, raw_to: str | None, today: date) -> tuple[date, date]:
    """The range asked for, or the last 30 days up to ``today``; ReportError on a bad date."""
    try:
        until = date.fromisoformat(raw_to) if raw_to else today
        since = date.fromisoformat(raw_from) if raw_from else until - timedelta(days=29)
    except ValueError:
        raise ReportError("from and to must be dates YYYY-MM-DD") from None
    return since, until


class ReportViews:
    """``GET /inbox/reports`` (the page) and ``GET /api/reports`` (JSON), for superviseurs."""

    def __init__(self, store: Store, templates_dir: Path) -> None:
        self.store = store
        self.pages = web_pages(templates_dir, strict=False)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/inbox/reports", self.page), web.get("/api/reports", self.api)]

    async def _report(self, request: web.Request) -> Report:
        since, until = parse_range(
            request.query.get("from"), request.query.get("to"), utcnow().date()
        )
        async with self.store.sessions() as session:
            return await build_report(session, since, until)

    async def api(self, request: web.Request) -> web.Response:
        try:
            require(request, "superviseur")
        except web.HTTPForbidden as exc:
            return web.json_response({"error": exc.text}, status=403)
        try:
            report = await self._report(request)
        except ReportError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(
            {
                "from": report.since.isoformat(),
                "to": report.until.isoformat(),
                "made_at": report.made_at.isoformat(),
                "tables": {
                    table.key: [dict(zip(table.columns, row, strict=True)) for row in table.rows]
                    for table in report.tables
                },
            }
        )

    async def page(self, request: web.Request) -> web.Response:
        require(request, "superviseur")
        lang = language(request)
        try:
            report = await self._report(request)
        except ReportError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        body = to_html(report, self.pages, lang, standalone=False)
        response = web.Response(text=body, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response


def routes(store: Store, templates_dir: Path) -> list[web.AbstractRouteDef]:
    return ReportViews(store, templates_dir).routes()
