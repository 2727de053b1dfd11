"""PostgreSQL workers: dispatch in the job's transaction, ledger retries and parking, dossier
locks, reconciliation; and the SLA sweep on both back ends."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from guichet.sweeps import SLA_BREACHED, sla_sweep
from guichet.workers import PoolTimings, WorkerPool
from intake.runner import RetryPolicy
from models import jobs
from models.clock import utcnow
from models.inbound import InboundContact
from models.jobs import ClaimedJob
from models.store import Store
from models.tables import AuditEvent, Contact, ContactTriage, Job


class Recorder:
    """A job handler for these tests: records when each job ran, fails as told."""

    def __init__(self, kind: str, *, fail_times: int = 0, seconds: float = 0.0) -> None:
        self.kind = kind
        self.fail_times = fail_times
        self.seconds = seconds
        self.runs: list[tuple[int, float, float]] = []
        self.parked: list[int] = []

    async def run(self, job: ClaimedJob) -> None:
        start = time.monotonic()
        await asyncio.sleep(self.seconds)
        self.runs.append((job.id, start, time.monotonic()))
        if job.attempts <= self.fail_times:
            raise RuntimeError(f"attempt {job.attempts} fails on purpose")

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        self.parked.append(job.id)


#: procrastinate is PostgreSQL's: these tests take the ``store`` fixture on PostgreSQL only.
POSTGRESQL_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


async def _twins(store: Store, job_id: int) -> list[tuple[str, str | None, object]]:
    async with store.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT status::text, lock, scheduled_at FROM procrastinate_jobs "
                "WHERE (args->>'job_id')::bigint = :id"
            ),
            {"id": job_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def _enqueue(store: Store, kind: str, *, lock: str | None = None) -> int:
    async with store.sessions() as session, session.begin():
        job = jobs.enqueue(session, kind, 1, lock=lock)
        await session.flush()
        return job.id


@POSTGRESQL_ONLY
async def test_a_job_and_its_dispatch_commit_or_roll_back_together(store: Store) -> None:
    accepted = await store.accept_contact(
        InboundContact(
            channel="email",
            natural_key="<twin@example.org>",
            sender="a@example.org",
            text="Bonjour",
        ),
        b"raw",
    )
    async with store.sessions() as session:
        job_id = await session.scalar(select(Job.id).where(Job.subject_id == accepted.contact_id))
    assert job_id is not None
    assert await _twins(store, job_id) == [("todo", None, None)]

    async with store.sessions() as session:
        transaction = await session.begin()
        lost = jobs.enqueue(session, "contact", 99)
        await session.flush()
        # Written by the flush, in this transaction: seen here, not yet from outside.
        mine = await session.scalar(
            text("SELECT count(*) FROM procrastinate_jobs WHERE (args->>'job_id')::bigint = :id"),
            {"id": lost.id},
        )
        assert mine == 1
        assert await _twins(store, lost.id) == []
        await transaction.rollback()
    assert await _twins(store, lost.id) == []
    async with store.sessions() as session:
        assert await session.get(Job, lost.id) is None

    # A reminder due next week is scheduled, and carries no lock: a future job holding a
    # dossier's lock would hold back that dossier's other jobs until then.
    async with store.sessions() as session, session.begin():
        later = jobs.enqueue(session, "deliver", 5, utcnow() + timedelta(days=7), lock="dossier:5")
        await session.flush()
    [(status, lock, scheduled_at)] = await _twins(store, later.id)
    assert (status, lock) == ("todo", None)
    assert scheduled_at is not None


@POSTGRESQL_ONLY
async def test_workers_retry_park_and_keep_a_dossier_lock(store: Store, database_url: str) -> None:
    flaky = Recorder("flaky", fail_times=2)
    broken = Recorder("broken", fail_times=99)
    locked = Recorder("locked", seconds=0.3)
    pool = WorkerPool(
        store,
        database_url,
        {h.kind: h for h in (flaky, broken, locked)},
        retry=RetryPolicy(max_attempts=3, backoff_seconds=0.1),
        timings=PoolTimings(concurrency=3, poll_seconds=0.2),
    )
    flaky_id = await _enqueue(store, "flaky")
    broken_id = await _enqueue(store, "broken")
    locked_ids = [await _enqueue(store, "locked", lock="dossier:7") for _ in range(4)]
    await pool.start()
    try:
        async with asyncio.timeout(60):
            while True:
                async with store.sessions() as session:
                    unfinished = await session.scalar(
                        select(func.count()).where(Job.status.in_(("pending", "running")))
                    )
                if unfinished == 0:
                    break
                await asyncio.sleep(0.2)
    finally:
        await pool.stop()

    async with store.sessions() as session:
        ledger = {j.id: j for j in await session.scalars(select(Job))}
    assert (ledger[flaky_id].status, ledger[flaky_id].attempts) == ("done", 3)
    assert (ledger[broken_id].status, ledger[broken_id].attempts) == ("failed", 3)
    assert "fails on purpose" in (ledger[broken_id].last_error or "")
    assert broken.parked == [broken_id]
    assert all(ledger[i].status == "done" for i in locked_ids)
    # One dossier's jobs ran one after the other, in order, though three workers were free.
    spans = sorted((start, end, job_id) for job_id, start, end in locked.runs)
    assert [job_id for _, _, job_id in spans] == locked_ids
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert start >= end


@POSTGRESQL_ONLY
async def test_reconcile_dispatches_a_ledger_job_that_lost_its_twin(
    store: Store, database_url: str
) -> None:
    handler = Recorder("plain")
    job_id = await _enqueue(store, "plain")
    async with store.sessions() as session, session.begin():
        await session.execute(text("DELETE FROM procrastinate_jobs"))
        # Written before the switch to workers, say: old enough for the reconciler to trust.
        await session.execute(
            text("UPDATE job SET created_at = :at WHERE id = :id"),
            {"at": utcnow() - timedelta(minutes=5), "id": job_id},
        )
    pool = WorkerPool(store, database_url, {"plain": handler})
    assert await pool.reconcile() == 1
    assert [status for status, _, _ in await _twins(store, job_id)] == ["todo"]
    assert await pool.reconcile() == 0


async def test_the_sla_sweep_announces_each_late_contact_once(store: Store) -> None:
    now = utcnow()
    ids = []
    for n, (hours, done) in enumerate([(30, False), (30, True), (2, False)]):
        accepted = await store.accept_contact(
            InboundContact(
                channel="email",
                natural_key=f"<sla{n}@example.org>",
                sender="a@example.org",
                text="Bonjour",
            ),
            b"raw",
        )
        ids.append(accepted.contact_id)
        async with store.sessions() as session, session.begin():
            contact = await session.get_one(Contact, accepted.contact_id)
            contact.received_at = now - timedelta(hours=hours)
            if done:
                session.add(ContactTriage(contact_id=contact.id, done_at=now, done_by="tester"))

    assert await sla_sweep(store, 24, now) == 1
    assert await sla_sweep(store, 24, now) == 0
    async with store.sessions() as session:
        announced = list(
            await session.scalars(
                select(AuditEvent.object_id).where(AuditEvent.action == SLA_BREACHED)
            )
        )
    assert announced == [str(ids[0])]
