"""The job runner: retries with backoff, parks with the reason, never lets one job block others."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from intake.runner import JobRunner, Periodic, RetryPolicy
from models import jobs
from models.jobs import ClaimedJob
from models.store import Store, audit
from models.tables import AuditEvent, Job


class Flaky:
    """Fails its first ``failures`` runs for each subject, then succeeds; always fails subject 0."""

    kind = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs: dict[int, int] = {}
        self.done: list[int] = []

    async def run(self, job: ClaimedJob) -> None:
        self.runs[job.subject_id] = self.runs.get(job.subject_id, 0) + 1
        if job.subject_id == 0 or self.runs[job.subject_id] <= self.failures:
            raise RuntimeError(f"subject {job.subject_id} is broken")
        self.done.append(job.subject_id)

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        audit(session, "test", "parked", "subject", job.subject_id, note=error)


async def _enqueue(store: Store, subjects: list[int]) -> None:
    async with store.sessions() as session, session.begin():
        for subject in subjects:
            jobs.enqueue(session, "flaky", subject)


async def test_retries_then_succeeds_and_parks_the_hopeless_one(store: Store) -> None:
    handler = Flaky(failures=1)
    await _enqueue(store, [0, 1, 2])
    runner = JobRunner(
        store, {"flaky": handler}, workers=2, retry=RetryPolicy(3, 0.05), poll_seconds=0.05
    )
    await runner.start()
    try:
        async with asyncio.timeout(20):
            while True:
                async with store.sessions() as session:
                    statuses = (
                        await session.scalars(select(Job.status).order_by(Job.subject_id))
                    ).all()
                if all(s in ("done", "failed") for s in statuses):
                    break
                await asyncio.sleep(0.05)
    finally:
        await runner.stop()
    assert statuses == ["failed", "done", "done"]
    assert handler.runs == {0: 3, 1: 2, 2: 2}
    assert sorted(handler.done) == [1, 2]
    async with store.sessions() as session:
        parked = await session.scalar(select(Job).where(Job.subject_id == 0))
        assert parked is not None
        assert parked.last_error == "RuntimeError: subject 0 is broken"
        note = await session.scalar(select(AuditEvent.note).where(AuditEvent.action == "parked"))
        assert note == "RuntimeError: subject 0 is broken"


async def test_backoff_doubles() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_seconds=2, max_backoff_seconds=10)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(seconds=2),
        timedelta(seconds=4),
        timedelta(seconds=8),
        timedelta(seconds=10),
    ]


async def test_a_failing_job_does_not_hold_up_the_queue(store: Store) -> None:
    handler = Flaky(failures=0)
    await _enqueue(store, [0, *range(1, 6)])
    runner = JobRunner(store, {"flaky": handler}, workers=1, retry=RetryPolicy(5, 30))
    assert await runner.run_pending() == 6  # subject 0 failed once and waits 30 s
    assert sorted(handler.done) == [1, 2, 3, 4, 5]


async def test_periodic_tasks_tick_and_a_failing_tick_does_not_stop_them(store: Store) -> None:
    ticks: list[float] = []
    third = asyncio.Event()

    async def tick() -> None:
        ticks.append(asyncio.get_running_loop().time())
        if len(ticks) == 3:
            third.set()
        if len(ticks) == 1:
            raise RuntimeError("the first tick fails on purpose")

    # Every second (croniter's sixth field is the seconds).
    runner = JobRunner(store, {}, workers=0, periodic=[Periodic("tick", "* * * * * *", tick)])
    await runner.start()
    try:
        await asyncio.wait_for(third.wait(), 10)
    finally:
        await runner.stop(grace_seconds=1)
    assert all(later - earlier > 0.5 for earlier, later in itertools.pairwise(ticks))


async def test_a_reply_is_claimed_before_older_contacts(store: Store) -> None:
    async with store.sessions() as session, session.begin():
        for subject in (1, 2):
            jobs.enqueue(session, jobs.CONTACT_JOB, subject)
        jobs.enqueue(session, jobs.DELIVER_JOB, 3)
    kinds = (jobs.CONTACT_JOB, jobs.DELIVER_JOB)
    order = []
    for _ in range(3):
        async with store.sessions() as session, session.begin():
            job = await jobs.claim(session, "w", kinds, timedelta(minutes=1))
        assert job is not None
        order.append((job.kind, job.subject_id))
    assert order == [("deliver", 3), ("contact", 1), ("contact", 2)]


class StopsTheRunner:
    """Records its runs; on subject 2 it stops the runner that runs it, mid-job."""

    kind = "flaky"

    def __init__(self) -> None:
        self.runner: JobRunner | None = None
        self.ran: list[int] = []
        self.first_done = asyncio.Event()
        self.stopping: asyncio.Task[None] | None = None
        self.stop_begun = asyncio.Event()

    async def run(self, job: ClaimedJob) -> None:
        self.ran.append(job.subject_id)
        if job.subject_id == 1:
            self.first_done.set()
        if job.subject_id == 2 and self.runner is not None:
            self.stopping = asyncio.create_task(self.runner.stop())
            await asyncio.sleep(0)  # the stop begins: the worker will not claim again
            self.stop_begun.set()

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        raise AssertionError("nothing fails here")


async def test_a_job_is_marked_done_with_the_next_claim_and_when_the_worker_stops(
    store: Store,
) -> None:
    """The runner marks a finished job done in its next claim's transaction; a worker that
    stops marks its last one before it goes, so nothing runs twice after a clean stop."""
    handler = StopsTheRunner()
    await _enqueue(store, [1])
    runner = JobRunner(store, {"flaky": handler}, workers=1, poll_seconds=30)
    handler.runner = runner
    await runner.start()
    try:
        async with asyncio.timeout(20):
            await handler.first_done.wait()
            # The worker went straight on to its next claim, which found nothing and marked
            # the job done in its transaction; it now waits (30 s) for a wake-up.
            assert await _statuses_once_idle(store) == ["done"]
            await _enqueue(store, [2])
            runner.wake()
            await handler.stop_begun.wait()
            assert handler.stopping is not None
            await handler.stopping
    finally:
        await runner.stop()
    assert handler.ran == [1, 2]
    # Stopped right after job 2, before any further claim: marked done on the way out.
    assert await _statuses(store) == ["done", "done"]


async def _statuses_once_idle(store: Store) -> list[str]:
    for _ in range(500):
        statuses = await _statuses(store)
        if "running" not in statuses:
            return statuses
        await asyncio.sleep(0.02)
    return statuses


async def _statuses(store: Store) -> list[str]:
    async with store.sessions() as session:
        return list((await session.scalars(select(Job.status).order_by(Job.subject_id))).all())


class KeepsSomethingOpen(Flaky):
    """Counts the runner's calls to ``release`` (a relay sender's kept sessions, in life)."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.released = 0
        self.release_seen = asyncio.Event()

    async def release(self) -> None:
        self.released += 1
        self.release_seen.set()


async def test_handlers_release_what_they_keep_when_work_runs_out_and_at_stop(
    store: Store,
) -> None:
    handler = KeepsSomethingOpen()
    await _enqueue(store, [1, 2])
    runner = JobRunner(store, {"flaky": handler}, workers=1, poll_seconds=0.05)
    assert await runner.run_pending() == 2
    assert handler.released == 1

    await _enqueue(store, [3])
    handler.release_seen.clear()
    await runner.start()
    try:
        async with asyncio.timeout(20):
            await handler.release_seen.wait()  # job 3 done, no more work: released
        assert sorted(handler.done) == [1, 2, 3]
        await asyncio.sleep(0.3)  # polls while idle release nothing more
        assert handler.released == 2
    finally:
        await runner.stop()
    assert handler.released == 3
