"""PostgreSQL scale-out: procrastinate workers run the embedded runner's job handlers.

The ``job`` table stays the ledger; ``models.dispatch`` gives every job a procrastinate twin
in the transaction that creates it. A worker here takes a twin, claims its ledger row and runs
the same handler, with the same retry and parking rules, as the embedded runner
(``intake.runner.execute``). procrastinate brings what one process cannot: any number of
workers on any number of hosts, per-dossier locks, heartbeats (a SIGKILLed worker's jobs go to
another worker) and periodic tasks that run once per tick across the whole pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import procrastinate
from procrastinate import jobs as procrastinate_jobs
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from intake.runner import JobHandler, Periodic, RetryPolicy, every, execute, release_handlers
from models import jobs
from models.clock import utcnow
from models.dispatch import DEFER, PRIORITY_UPKEEP, QUEUE, TASK, twin_parameters
from models.store import Store
from models.tables import Job

log = logging.getLogger(__name__)

#: A job whose ledger could not even be written (database unreachable) is tried again this
#: often, this many times, before procrastinate gives up on it; the reconcile task (below)
#: dispatches its ledger row again once the database is back.
STORE_FAILURE_RETRY_SECONDS = 5
STORE_FAILURE_ATTEMPTS = 20


class RetryLater(Exception):
    """The ledger says: try this job again after ``delay`` (intake.runner.RetryPolicy)."""

    def __init__(self, delay: timedelta) -> None:
        super().__init__(f"retry in {delay.total_seconds():.0f}s")
        self.delay = delay


class LedgerRetry(BaseRetryStrategy):
    """procrastinate retries when and as often as the ledger decided."""

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate_jobs.Job
    ) -> RetryDecision | None:
        if isinstance(exception, RetryLater):
            return RetryDecision(retry_at=utcnow() + exception.delay)
        if job.attempts < STORE_FAILURE_ATTEMPTS:
            return RetryDecision(retry_at=utcnow() + timedelta(seconds=STORE_FAILURE_RETRY_SECONDS))
        return None


@dataclass(frozen=True)
class PoolTimings:
    concurrency: int = 2
    poll_seconds: float = 1.0
    heartbeat_seconds: float = 2.0
    #: A worker silent this long is dead: its jobs go back to the queue.
    stalled_seconds: float = 10.0
    grace_seconds: float = 20.0


def libpq_url(database_url: str) -> str:
    """procrastinate speaks libpq: drop SQLAlchemy's driver suffix."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class WorkerPool:
    """procrastinate workers in this process; the same interface as ``JobRunner``."""

    def __init__(
        self,
        store: Store,
        database_url: str,
        handlers: Mapping[str, JobHandler],
        *,
        retry: RetryPolicy | None = None,
        timings: PoolTimings | None = None,
        periodic: Sequence[Periodic] = (),
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.retry = retry or RetryPolicy()
        self.timings = timings or PoolTimings()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=libpq_url(database_url),
                min_size=1,
                max_size=self.timings.concurrency + 4,
            )
        )
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self._register(periodic)

    def _register(self, periodic: Sequence[Periodic]) -> None:
        @self.app.task(name=TASK, queue=QUEUE, retry=LedgerRetry())
        async def run_job(job_id: int) -> None:
            await self.run_job(job_id)

        @self.app.periodic(cron=every(self.timings.stalled_seconds / 2))
        @self.app.task(
            name="guichet.retry_stalled",
            queue=QUEUE,
            queueing_lock="retry_stalled",
            priority=PRIORITY_UPKEEP,
        )
        async def retry_stalled(timestamp: int) -> None:
            await self.retry_stalled()

        @self.app.periodic(cron="* * * * *")
        @self.app.task(
            name="guichet.reconcile",
            queue=QUEUE,
            queueing_lock="reconcile",
            priority=PRIORITY_UPKEEP,
        )
        async def reconcile(timestamp: int) -> None:
            await self.reconcile()

        for task in periodic:
            self._register_periodic(task)

    def _register_periodic(self, task: Periodic) -> None:
        async def run(timestamp: int) -> None:
            await task.run()

        wrapped = self.app.task(
            name=f"guichet.{task.name}",
            queue=QUEUE,
            # One pending tick at a time, and never two at once: a slow sweep is not stacked.
            queueing_lock=task.name,
            lock=f"periodic:{task.name}",
            priority=PRIORITY_UPKEEP,
        )(run)
        self.app.periodic(cron=task.cron)(wrapped)

    async def run_job(self, job_id: int) -> None:
        async with self.store.sessions() as session, session.begin():
            job = await jobs.claim_by_id(session, job_id, self.worker_id)
        if job is None:
            log.debug("job %s already finished", job_id)
            return
        handler = self.handlers.get(job.kind)
        if handler is None:
            # A worker of an older or newer release: leave the job for one that knows it.
            raise RuntimeError(f"no handler for job kind {job.kind!r} in this worker")
        delay = await execute(self.store, handler, job, self.retry)
        if isinstance(delay, timedelta):
            raise RetryLater(delay)

    async def retry_stalled(self) -> int:
        """Jobs held by a worker that stopped beating (SIGKILL, lost host) run again."""
        manager = self.app.job_manager
        stalled = list(
            await manager.get_stalled_jobs(seconds_since_heartbeat=self.timings.stalled_seconds)
        )
        for job in stalled:
            log.warning("job %s (%s) of a dead worker: running it again", job.id, job.task_name)
            await manager.retry_job(job)
        return len(stalled)

    async def reconcile(self) -> int:
        """Dispatch every unfinished ledger job that has no live twin: jobs written before the
        switch to PostgreSQL workers, or whose twin procrastinate gave up on while the
        database was unreachable. Nothing is ever left waiting for a dispatch that is gone."""
        async with self.store.sessions() as session, session.begin():
            orphans = list(
                await session.scalars(
                    select(Job)
                    .where(
                        Job.status.in_(("pending", "running")),
                        # A job committed this instant has its twin in the same commit; the
                        # margin only keeps clock skew between hosts out of the question.
                        Job.created_at < utcnow() - timedelta(seconds=5),
                        text(
                            "NOT EXISTS (SELECT 1 FROM procrastinate_jobs p "
                            "WHERE p.task_name = :task AND p.status IN ('todo', 'doing') "
                            "AND (p.args->>'job_id')::bigint = job.id)"
                        ).bindparams(task=TASK),
                    )
                    .order_by(Job.id)
                    .limit(1000)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in orphans:
                await session.execute(DEFER, twin_parameters(job))
        if orphans:
            log.warning("dispatched %d ledger job(s) that had no worker job", len(orphans))
        return len(orphans)

    def wake(self) -> None:
        """Nothing to do: the commit that adds a job NOTIFYs every listening worker."""

    async def start(self) -> None:
        await self.app.open_async()
        self._opened = True
        self._task = asyncio.create_task(self._supervise(), name="guichet-procrastinate")

    async def _supervise(self) -> None:
        """Run the procrastinate worker; start it again if it dies of an error (the database
        restarted under it), so that a worker process never quietly stops working."""
        delay = 1.0
        while True:
            try:
                await self._run_worker()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the worker stopped on an error; starting again in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _run_worker(self) -> None:
        t = self.timings
        await self.app.run_worker_async(
            queues=[QUEUE],
            name=self.worker_id,
            concurrency=t.concurrency,
            fetch_job_polling_interval=t.poll_seconds,
            update_heartbeat_interval=t.heartbeat_seconds,
            stalled_worker_timeout=t.stalled_seconds,
            shutdown_graceful_timeout=t.grace_seconds,
            install_signal_handlers=False,
            # The ledger is the record; procrastinate's finished rows would only pile up.
            delete_jobs="successful",
        )

    async def stop(self, grace_seconds: float = 20.0) -> None:
        """Running jobs finish within the grace period (procrastinate's graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, grace_seconds + 5)
            self._task = None
        if self._opened:
            self._opened = False
            await self.app.close_async()
        await release_handlers(self.handlers)

    async def wait(self) -> None:
        """Until the worker stops by itself (it only does on a fatal error)."""
        if self._task is not None:
            await self._task
