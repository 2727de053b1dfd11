"""The service supervisor: builds every part from the settings, starts them, stops them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta

from aiohttp import web

from channels.delivery import OutboxDelivery
from channels.email_out import SmtpRelaySender
from channels.email_smtp import SmtpIntake, parse_or_keep, smtp_factory
from classifiers.qualify import Qualifier
from guichet.access import Access
from guichet.api import create_app
from guichet.live import LiveFeed
from guichet.parts import mail_identity, open_store, reference_rules, uses_worker_pool
from guichet.privacy import purge_expired
from guichet.settings import Settings, SettingsError
from guichet.sweeps import sla_sweep
from guichet.wiring import ChannelParts, build_channels
from guichet.workers import PoolTimings, WorkerPool
from intake.invoices import load_tariffs
from intake.pipeline import ContactPipeline, IntakeContext
from intake.reading import OcrPool, ReadingLimits
from intake.runner import JobHandler, JobRunner, Periodic, RetryPolicy
from intake.understand import Understanding
from models import migrate
from models.blobs import BlobStoreError
from models.store import Store
from responders.decide import ReplyPolicy, parse_reminder_days
from responders.outbox import missing_list_check
from responders.render import TemplateRenderer

log = logging.getLogger(__name__)

#: Staged raw bytes older than this were left by a front that stopped (its own writer
#: settles them within moments): the periodic task writes them to the blob store.
STAGED_LEFTOVER = timedelta(minutes=1)


def reading_limits(settings: Settings) -> ReadingLimits:
    return ReadingLimits(
        max_bytes=settings.document_max_bytes,
        max_pages=settings.pdf_max_pages,
        ocr_languages=settings.ocr_languages,
        ocr_page_timeout=settings.ocr_page_timeout_seconds,
        ocr_dpi=settings.ocr_dpi,
        archive_max_total_bytes=settings.archive_max_total_bytes,
        archive_max_members=settings.archive_max_members,
        archive_max_ratio=settings.archive_max_ratio,
        nesting_max_depth=settings.nesting_max_depth,
    )


def build_understanding(settings: Settings) -> Understanding:
    return Understanding(
        Qualifier(settings.models_dir, settings.default_language),
        intent_threshold=settings.review_threshold_intent,
        doc_type_threshold=settings.review_threshold_doc_type,
    )


def reply_policy(settings: Settings) -> ReplyPolicy:
    try:
        reminder_days = parse_reminder_days(settings.missing_documents_reminder_days)
    except ValueError as exc:
        raise SettingsError(f"setting missing_documents_reminder_days: {exc}") from exc
    codes = settings.auto_send_refusal_codes.split(",")
    return ReplyPolicy(
        reminder_days=reminder_days,
        auto_send_refusal_codes=frozenset(c.strip() for c in codes if c.strip()),
        max_automatic_per_hour=settings.max_automatic_per_hour,
    )


def build_handlers(
    settings: Settings,
    store: Store,
    ocr: OcrPool,
    understanding: Understanding | None = None,
    channels: ChannelParts | None = None,
) -> dict[str, JobHandler]:
    """Every job handler, whichever engine runs them."""
    identity = mail_identity(settings)
    context = IntakeContext(
        store=store,
        ocr=ocr,
        limits=reading_limits(settings),
        renderer=TemplateRenderer(settings.templates_dir, settings.default_language),
        identity=identity,
        understanding=understanding or build_understanding(settings),
        rules=reference_rules(settings),
        replies=reply_policy(settings),
        tariffs=load_tariffs(settings.config_dir / "tariffs.toml"),
        dossier_locks=uses_worker_pool(settings),
        unpackers={"email": parse_or_keep},
    )
    relay_host, relay_port = settings.relay_address
    channels = channels or ChannelParts()
    email = SmtpRelaySender(
        relay_host,
        relay_port,
        identity.display_name,
        identity.address,
        blobs=store.blobs,
        # A session kept per worker sending at once, at most: the runner closes them once
        # it runs out of work (``release_handlers``).
        keep_connections=max(settings.workers, 1),
    )
    senders = {sender.channel: sender for sender in [email, *channels.senders]}
    pipeline = ContactPipeline(context)
    delivery = OutboxDelivery(store, senders, checks=[missing_list_check, *channels.checks])
    delivery.retry = RetryPolicy(
        settings.delivery_max_attempts, settings.job_backoff_seconds, max_backoff_seconds=300
    )
    handlers: list[JobHandler] = [pipeline, delivery, *channels.handlers]
    return {handler.kind: handler for handler in handlers}


def build_runner(
    settings: Settings,
    store: Store,
    ocr: OcrPool,
    understanding: Understanding | None = None,
    channels: ChannelParts | None = None,
    periodic: Sequence[Periodic] = (),
) -> JobRunner:
    """The embedded runner (also what the CLI and the tests drive with ``run_pending``)."""
    return JobRunner(
        store,
        build_handlers(settings, store, ocr, understanding, channels),
        workers=settings.workers,
        retry=retry_policy(settings),
        poll_seconds=settings.job_poll_seconds,
        lease=timedelta(minutes=15),
        periodic=periodic,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.job_max_attempts, settings.job_backoff_seconds)


def periodic_tasks(settings: Settings, store: Store) -> list[Periodic]:
    """What runs on a schedule beside the jobs, on either engine."""
    tasks = [
        Periodic("sla_sweep", "* * * * *", lambda: sla_sweep(store, settings.inbox_sla_hours)),
        # Raw bytes a front staged and could not write to the blob store before it stopped.
        Periodic(
            "settle_staged", "* * * * *", lambda: store.settle_staged(older_than=STAGED_LEFTOVER)
        ),
    ]
    if settings.retention_days > 0:
        # Nightly, when the inbox is quiet; it deletes one dossier per transaction.
        tasks.append(
            Periodic(
                "retention", "30 3 * * *", lambda: purge_expired(store, settings.retention_days)
            )
        )
    return tasks


def build_engine(
    settings: Settings,
    store: Store,
    ocr: OcrPool,
    understanding: Understanding | None = None,
    channels: ChannelParts | None = None,
) -> JobRunner | WorkerPool:
    periodic = periodic_tasks(settings, store) + (channels.periodic if channels else [])
    if not uses_worker_pool(settings):
        return build_runner(settings, store, ocr, understanding, channels, periodic)
    return WorkerPool(
        store,
        settings.effective_database_url,
        build_handlers(settings, store, ocr, understanding, channels),
        retry=retry_policy(settings),
        timings=PoolTimings(concurrency=settings.workers, poll_seconds=settings.job_poll_seconds),
        periodic=periodic,
    )


class Service:
    """``guichet serve``: HTTP, SMTP intake and the in-process workers in one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.ocr = OcrPool(settings.ocr_pool_size)
        self.understanding = build_understanding(settings)
        # The adapters wake the workers, which do not exist yet: hence the late lookup.
        self.live = LiveFeed(self.store)
        self.channels = build_channels(settings, self.store, self._accepted)
        self.runner = build_engine(
            settings, self.store, self.ocr, self.understanding, self.channels
        )
        self._http: web.AppRunner | None = None
        self._smtp: asyncio.Server | None = None
        self._leftovers: asyncio.Task[None] | None = None

    def _accepted(self) -> None:
        """A contact was stored: the workers take it up and the open inboxes show it."""
        self.runner.wake()
        self.live.poke()

    async def start(self, *, workers: bool = True) -> None:
        s = self.settings
        await asyncio.to_thread(migrate.upgrade, s.effective_database_url)
        # Beside the service, not before it: after a flood there may be many, and the bytes
        # are safe and readable where they are meanwhile.
        self._leftovers = asyncio.create_task(self._settle_leftovers())
        routes = [route for adapter in self.channels.adapters for route in adapter.routes()]
        access = Access(
            self.store, s.templates_dir, secure_cookies=s.public_url.startswith("https://")
        )
        self._http = web.AppRunner(
            create_app(self.store, routes, access, s, self.live), access_log=None
        )
        await self._http.setup()
        await web.TCPSite(self._http, s.http_host, s.http_port).start()
        intake = SmtpIntake(self.store, s.mail_domains, on_accepted=lambda _: self._accepted())
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(
            smtp_factory(intake, s.reply_domain, s.smtp_max_message_bytes), s.smtp_host, s.smtp_port
        )
        log.info(
            "Guichet listening: HTTP http://%s:%d, SMTP %s:%d for %s; relay %s",
            s.http_host,
            s.http_port,
            s.smtp_host,
            s.smtp_port,
            ",".join(s.mail_domains),
            s.smtp_relay,
        )
        if workers:
            # Mail is already accepted and stored meanwhile; processing waits for the models.
            await asyncio.to_thread(self.understanding.qualifier.warm_up)
            await self.runner.start()
        for adapter in self.channels.adapters:
            await adapter.start()
        freeze_what_is_loaded()

    async def _settle_leftovers(self) -> None:
        """Raw bytes the last run committed but had not written to the blob store yet."""
        try:
            settled = await self.store.settle_staged()
        except BlobStoreError as exc:
            # Still safe and readable in the database; new accepts are refused until the
            # folder takes writes again, and the periodic task tries these again.
            log.error("staged raw messages not written to the blob store: %s", exc)
            return
        except Exception:
            log.exception("staged raw messages not written to the blob store")
            return
        if settled:
            log.info("wrote %d staged raw messages to the blob store", settled)

    async def stop(self) -> None:
        if self._leftovers is not None and not self._leftovers.done():
            self._leftovers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leftovers
        for adapter in self.channels.adapters:
            with contextlib.suppress(Exception):
                await adapter.stop()
        if self._smtp is not None:
            self._smtp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._smtp.wait_closed(), 5)
        if self._http is not None:
            await self._http.cleanup()
        await self.runner.stop()
        await asyncio.to_thread(self.ocr.shutdown)
        await self.store.close()


def freeze_what_is_loaded() -> None:
    """Take what start-up loaded out of the garbage collector's sight, for good.

    The models, spaCy's vocabulary, the templates and SQLAlchemy's mappers live as long as the
    process, yet a full collection walked all of them: about 240 000 objects with the models,
    150 ms on a slow machine, during which no SMTP session, webhook or job moves. Frozen, they
    are never walked again; what requests and jobs create is collected as before.
    """
    gc.collect()
    gc.freeze()


def _stop_on_signals() -> asyncio.Event:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


async def work(settings: Settings) -> None:
    """``guichet worker``: jobs only, from PostgreSQL; run as many as the load needs, on any
    host that sees the database and the blob folder."""
    if not uses_worker_pool(settings):
        raise SettingsError(
            "guichet worker takes its jobs from PostgreSQL: set GUICHET_DATABASE_URL to a "
            "postgresql+psycopg:// URL (with SQLite, guichet serve runs its own workers)"
        )
    stopping = _stop_on_signals()
    store = open_store(settings)
    ocr = OcrPool(settings.ocr_pool_size)
    understanding = build_understanding(settings)
    # The channels' senders and jobs (SMS, chat, MMS media) are needed; their adapters are not
    # started here: fronts receive, workers process.
    channels = build_channels(settings, store, lambda: None)
    pool = build_engine(settings, store, ocr, understanding, channels)
    try:
        await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
        await asyncio.to_thread(understanding.qualifier.warm_up)
        await pool.start()
        freeze_what_is_loaded()
        print(f"Guichet worker is running: {pool.worker_id}", flush=True)
        await stopping.wait()
        log.info("stopping")
    finally:
        await pool.stop()
        await asyncio.to_thread(ocr.shutdown)
        await store.close()


async def serve(settings: Settings, *, workers: bool = True) -> None:
    service = Service(settings)
    stopping = _stop_on_signals()
    try:
        await service.start(workers=workers)
        print(
            f"Guichet is running: http://{settings.http_host}:{settings.http_port}/healthz",
            flush=True,
        )
        await stopping.wait()
        log.info("stopping")
    finally:
        await service.stop()
