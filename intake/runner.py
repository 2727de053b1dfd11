"""The embedded job runner: workers that claim durable jobs, retry with backoff, then park."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import croniter
from sqlalchemy.ext.asyncio import AsyncSession

from models import jobs
from models.clock import utcnow
from models.jobs import ClaimedJob
from models.store import Store

log = logging.getLogger(__name__)


class JobHandler(Protocol):
    """Does one kind of job. ``run`` must be safe to repeat: a crash replays it. A handler may
    carry its own ``retry`` policy (``policy_for``), and an ``async release()`` for what it
    keeps open between jobs (``release_handlers``)."""

    kind: str

    async def run(self, job: ClaimedJob) -> None: ...

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        """Record, in the job's final transaction, that its subject failed for good."""
        ...


@dataclass(frozen=True)
class Periodic:
    """Work that runs on a schedule (SLA sweep, retention purge, mailbox polling): ``cron``
    with an optional sixth field, last, for the seconds (croniter's order). The embedded
    runner ticks it here; PostgreSQL workers through procrastinate, once per tick across the
    whole pool."""

    name: str
    cron: str
    run: Callable[[], Awaitable[object]]


def every(seconds: float) -> str:
    """A cron schedule of about every ``seconds``: in seconds below a minute, else minutes."""
    if seconds < 60:
        return f"* * * * * */{max(round(seconds), 1)}"
    return f"*/{min(max(round(seconds / 60), 1), 59)} * * * *"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 600.0

    def delay(self, attempts: int) -> timedelta:
        seconds = min(self.backoff_seconds * 2 ** max(attempts - 1, 0), self.max_backoff_seconds)
        return timedelta(seconds=seconds)


class JobRunner:
    """The embedded (SQLite, one process) runner. On PostgreSQL, guichet/workers.py runs the
    same handlers through procrastinate behind the same interface (start, wake, stop)."""

    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, JobHandler],
        *,
        workers: int = 2,
        retry: RetryPolicy | None = None,
        poll_seconds: float = 1.0,
        lease: timedelta = timedelta(minutes=15),
        periodic: Sequence[Periodic] = (),
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.workers = workers
        self.retry = retry or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.periodic = tuple(periodic)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0

    async def start(self) -> None:
        async with self.store.sessions() as session, session.begin():
            released = await jobs.release_all_running(session)
        if released:
            log.warning("resuming %d job(s) left running by a previous process", released)
        self._tasks = [
            asyncio.create_task(self._work(n), name=f"guichet-worker-{n}")
            for n in range(self.workers)
        ] + [
            asyncio.create_task(self._tick(task), name=f"guichet-{task.name}")
            for task in self.periodic
        ]

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self, grace_seconds: float = 20.0) -> None:
        """Let running jobs finish (a reply half handed to the relay would become uncertain),
        then cancel whatever is still running after ``grace_seconds``."""
        self._stopping = True
        self._stop.set()
        self._wakeup.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_seconds)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        await release_handlers(self.handlers)

    async def run_pending(self) -> int:
        """Run ready jobs in this task until none is ready (for the CLI and for tests)."""
        count = 0
        finished: list[int] = []
        while await self._run_one(self.worker_id, finished):
            count += 1
        await release_handlers(self.handlers)
        return count

    async def _work(self, n: int) -> None:
        worker = f"{self.worker_id}/{n}"
        finished: list[int] = []
        idle = True
        while not self._stopping:
            try:
                ran = await self._run_one(worker, finished)
            except Exception:
                # The store itself failed (database down): wait and try again, never die.
                log.exception("worker %s could not reach the store", worker)
                ran = False
                await asyncio.sleep(self.poll_seconds)
            if not ran and not idle:
                # Out of work: what the handlers keep open for the next job is idle now.
                await release_handlers(self.handlers)
            idle = not ran
            if not ran and not self._stopping:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_seconds)
        if finished:
            # Stopping with a job done but not yet marked: mark it now. Were this lost too
            # (the process killed), the job would run again, which every handler allows.
            async with self.store.sessions() as session, session.begin():
                await jobs.complete(session, *finished)

    async def _tick(self, task: Periodic) -> None:
        schedule = croniter(task.cron, datetime.now(UTC))
        while not self._stop.is_set():
            due = schedule.get_next(float)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(due - time.time(), 0))
            if self._stop.is_set():
                return
            try:
                await task.run()
            except Exception:
                # One failed tick is logged; the next one tries again.
                log.exception("periodic task %s failed", task.name)

    async def _run_one(self, worker: str, finished: list[int]) -> bool:
        """Claim a job and run it. The jobs this worker finished before are marked done in the
        claim's transaction: one transaction less per job, on every contact and reply."""
        async with self.store.sessions() as session, session.begin():
            await jobs.complete(session, *finished)
            job = await jobs.claim(session, worker, tuple(self.handlers), self.lease)
        finished.clear()
        if job is None:
            return False
        outcome = await execute(
            self.store, self.handlers[job.kind], job, self.retry, complete=False
        )
        if outcome is SUCCEEDED:
            finished.append(job.id)
        return True


async def release_handlers(handlers: Mapping[str, JobHandler]) -> None:
    """Let the handlers close what they keep open between jobs (connections to a relay):
    called when the runner runs out of work and when it stops, so nothing stays open idle."""
    for handler in handlers.values():
        release = getattr(handler, "release", None)
        if release is None:
            continue
        try:
            await release()
        except Exception:
            log.exception("releasing the %s handler failed", handler.kind)


def policy_for(handler: JobHandler, default: RetryPolicy) -> RetryPolicy:
    own = getattr(handler, "retry", None)
    return own if isinstance(own, RetryPolicy) else default


class _Succeeded:
    """What ``execute`` returns for a job that ran but is not marked done yet."""


SUCCEEDED = _Succeeded()


async def execute(
    store: Store, handler: JobHandler, job: ClaimedJob, retry: RetryPolicy, *, complete: bool = True
) -> timedelta | _Succeeded | None:
    """Run a claimed job and write its outcome to the ledger: done, parked, or to be tried
    again after the returned delay. Shared by the embedded runner and the PostgreSQL workers
    (guichet/workers.py), so both retry and park the same way.

    With ``complete=False`` a job that ran is not marked done here: ``SUCCEEDED`` says the
    caller will (the embedded runner, in its next claim's transaction).
    """
    try:
        await handler.run(job)
    except Exception as exc:
        return await _failed(store, handler, job, exc, policy_for(handler, retry))
    if not complete:
        return SUCCEEDED
    async with store.sessions() as session, session.begin():
        await jobs.complete(session, job.id)
    return None


async def _failed(
    store: Store, handler: JobHandler, job: ClaimedJob, exc: Exception, retry: RetryPolicy
) -> timedelta | None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    async with store.sessions() as session, session.begin():
        if job.attempts >= retry.max_attempts:
            log.error("job %s %s/%s parked: %s", job.id, job.kind, job.subject_id, error)
            await jobs.park(session, job.id, error)
            await handler.on_parked(session, job, error)
            return None
        log.warning(
            "job %s %s/%s attempt %d failed: %s",
            job.id,
            job.kind,
            job.subject_id,
            job.attempts,
            error,
        )
        delay = retry.delay(job.attempts)
        await jobs.retry_later(session, job.id, error, utcnow() + delay)
        return delay
