"""The durable job queue: claim once, lease expiry, retry and park."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import event, update

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


async def _add(store: Store, kind: str, age_seconds: float) -> int:
    async with store.sessions() as session, session.begin():
        job = jobs.enqueue(session, kind, 0, run_after=utcnow() - timedelta(seconds=age_seconds))
        await session.flush()
        return job.id


async def test_claim_order_expired_leases_then_replies_then_oldest(store: Store) -> None:
    dead = await _add(store, "contact", 1)
    assert await _claim(store, "dead") is not None
    async with store.sessions() as session, session.begin():
        await session.execute(update(Job).values(locked_at=utcnow() - LEASE - timedelta(seconds=1)))
    newer_contact = await _add(store, "contact", 10)
    older_contact = await _add(store, "contact", 60)
    twin_of_older = await _add(store, "contact", 60)
    reply = await _add(store, jobs.DELIVER_JOB, 5)
    other_kind = await _add(store, jobs.GED_EXPORT_JOB, 900)
    kinds = ("contact", jobs.DELIVER_JOB)
    order = []
    async with store.sessions() as session, session.begin():
        while (job := await jobs.claim(session, "w", kinds, LEASE)) is not None:
            order.append(job.id)
    assert order == [dead, reply, older_contact, twin_of_older, newer_contact]
    async with store.sessions() as session:
        assert (await session.get_one(Job, other_kind)).status == "pending"


async def test_a_claim_does_not_sort_the_backlog(store: Store) -> None:
    """Each candidate is the first row of an index range: a backlog of thousands costs a claim
    nothing more. Checked on SQLite's plan (a sort would show as a temporary B-tree)."""
    if store.engine.dialect.name != "sqlite":
        return
    statements: list[tuple[str, object]] = []

    def capture(
        _conn: object, _cursor: object, statement: str, parameters: object, *_: object
    ) -> None:
        if statement.startswith("UPDATE job"):
            statements.append((statement, parameters))

    event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await _add(store, "contact", 1)
        # Several kinds besides replies, as the runner asks: ``kind IN (...)`` must not lead
        # SQLite to the kind index, whose ranges would then need merging by a sort.
        kinds = ("contact", jobs.DELIVER_JOB, jobs.GED_EXPORT_JOB, "media")
        async with store.sessions() as session, session.begin():
            assert await jobs.claim(session, "w", kinds, LEASE) is not None
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = statements
    async with store.engine.connect() as connection:
        plan = [
            str(row[-1])
            for row in await connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement,
                parameters,  # type: ignore[arg-type]
            )
        ]
    assert plan and not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan
