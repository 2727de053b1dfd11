"""The durable job queue in the store: enqueue with the data, claim, retry with backoff, park."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.clock import utcnow
from models.tables import Job

#: Job kinds: a contact walking through intake, and one outbound message to deliver.
CONTACT_JOB = "contact"
DELIVER_JOB = "deliver"
#: Writing a closed dossier's documents to the GED export folder (channels/ged.py).
GED_EXPORT_JOB = "ged_export"


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    subject_id: int
    attempts: int


def enqueue(
    session: AsyncSession, kind: str, subject_id: int, run_after: datetime | None = None
) -> Job:
    """Add a job inside the caller's transaction, so it exists exactly when its data does.

    ``run_after`` defers it (a reminder due in a week); by default it is ready now.
    """
    job = Job(kind=kind, subject_id=subject_id, status="pending", run_after=run_after or utcnow())
    session.add(job)
    return job


async def claim(
    session: AsyncSession, worker: str, kinds: tuple[str, ...], lease: timedelta
) -> ClaimedJob | None:
    """Take the oldest ready job, or one whose worker's lease ran out (it died holding it)."""
    now = utcnow()
    ready = or_(
        and_(Job.status == "pending", Job.run_after <= now),
        and_(Job.status == "running", Job.locked_at < now - lease),
    )
    candidates = (
        await session.execute(
            select(Job.id)
            .where(ready, Job.kind.in_(kinds))
            .order_by(Job.run_after, Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    for job_id in candidates:
        # The conditional update is the real lock: on SQLite FOR UPDATE is a no-op.
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, ready)
            .values(status="running", locked_by=worker, locked_at=now, attempts=Job.attempts + 1)
            .returning(Job.id, Job.kind, Job.subject_id, Job.attempts)
        )
        row = result.one_or_none()
        if row is not None:
            return ClaimedJob(
                id=row.id, kind=row.kind, subject_id=row.subject_id, attempts=row.attempts
            )
    return None


async def complete(session: AsyncSession, job_id: int) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status="done", finished_at=utcnow(), locked_by=None, last_error=None)
    )


async def retry_later(session: AsyncSession, job_id: int, error: str, run_after: datetime) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status="pending", run_after=run_after, locked_by=None, last_error=error)
    )


async def park(session: AsyncSession, job_id: int, error: str) -> None:
    """The last retry failed: the job stops here, with its reason, and nothing waits for it."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status="failed", finished_at=utcnow(), locked_by=None, last_error=error)
    )


async def release_all_running(session: AsyncSession) -> int:
    """At start-up of the embedded runner every running job belongs to a dead process."""
    result = await session.execute(
        update(Job)
        .where(Job.status == "running")
        .values(status="pending", locked_by=None, run_after=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
