"""The durable job queue: claim once, lease expiry, retry and park."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from models import jobs
from models.clock import utcnow
from models.store import Store
from models.tables import Job

LEASE = timedelta(minutes=5)


async def _enqueue(store: Store, n: int) -> list[int]:
    async with store.sessions() as session, session.begin():
        created = [jobs.enqueue(session, "contact", i) for i in range(n)]
        await session.flush()
        return [j.id for j in created]


async def _claim(store: Store, worker: str) -> jobs.ClaimedJob | None:
    async with store.sessions() as session, session.begin():
        return await jobs.claim(session, worker, ("contact",), LEASE)


async def test_each_job_is_claimed_by_exactly_one_worker(store: Store) -> None:
    ids = await _enqueue(store, 10)
    claimed = await asyncio.gather(*(_claim(store, f"w{n}") for n in range(14)))
    got = [c.id for c in claimed if c is not None]
    assert sorted(got) == ids
    assert all(c.attempts == 1 for c in claimed if c is not None)


async def test_retry_waits_for_its_time_then_parks(store: Store) -> None:
    [job_id] = await _enqueue(store, 1)
    job = await _claim(store, "w")
    assert job is not None
    async with store.sessions() as session, session.begin():
        await jobs.retry_later(session, job_id, "boom", utcnow() + timedelta(hours=1))
    assert await _claim(store, "w") is None  # not before its time
    async with store.sessions() as session, session.begin():
        await session.execute(update(Job).values(run_after=utcnow() - timedelta(seconds=1)))
    again = await _claim(store, "w")
    assert again is not None and again.attempts == 2
    async with store.sessions() as session, session.begin():
        await jobs.park(session, job_id, "boom for good")
    assert await _claim(store, "w") is None
    async with store.sessions() as session:
        parked = await session.get_one(Job, job_id)
        assert (parked.status, parked.last_error) == ("failed", "boom for good")


async def test_a_job_whose_worker_died_is_taken_again_after_its_lease(store: Store) -> None:
    [job_id] = await _enqueue(store, 1)
    assert await _claim(store, "dead") is not None
    assert await _claim(store, "alive") is None
    async with store.sessions() as session, session.begin():
        await session.execute(update(Job).values(locked_at=utcnow() - LEASE - timedelta(seconds=1)))
    taken = await _claim(store, "alive")
    assert taken is not None and taken.id == job_id and taken.attempts == 2


async def test_release_all_running_at_start_up(store: Store) -> None:
    await _enqueue(store, 2)
    await _claim(store, "w")
    async with store.sessions() as session, session.begin():
        assert await jobs.release_all_running(session) == 1
    assert await _claim(store, "w") is not None
    assert await _claim(store, "w") is not None
