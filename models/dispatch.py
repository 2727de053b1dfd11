"""On PostgreSQL, each new job row gets its procrastinate twin in the same transaction.

The ``job`` table stays the ledger (status, attempts, last error, parking: what the inbox and
reports show). procrastinate only carries the dispatch: which worker, on which host, runs a job
and when, with its locks, retries and heartbeats. Because the twin is written by the flush that
writes the job, a contact and the work it needs commit together or not at all, whatever
transaction created them; no call site has to remember it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session

from models.clock import utcnow
from models.jobs import DELIVER_JOB
from models.tables import Job

#: The one procrastinate task: run ledger job N (guichet/workers.py registers it).
TASK = "guichet.run_job"
QUEUE = "guichet"

DEFER = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, :lock, NULL, "
    "CAST(:args AS jsonb), :scheduled_at)::procrastinate_job_to_defer_v1])"
)


#: Work already under way goes before new work: a reply to send, then a contact's dossier
#: steps, then a new contact. Under a backlog this keeps the time from a contact to its
#: acknowledgement short, instead of every reply waiting behind the whole queue. The
#: workers' own upkeep (guichet/workers.py) goes before all of them.
PRIORITY_DELIVER = 20
PRIORITY_LOCKED = 10
PRIORITY_UPKEEP = 100


def priority(job: Job) -> int:
    if job.kind == DELIVER_JOB:
        return PRIORITY_DELIVER
    return PRIORITY_LOCKED if job.lock_key else 0


class StoreSession(Session):
    """The store's session class: the hook below listens on it only."""


def twin_parameters(job: Job) -> dict[str, Any]:
    """The procrastinate row for ``job``: later jobs (a reminder due next week) are scheduled."""
    later = job.run_after is not None and job.run_after > utcnow()
    return {
        "queue": QUEUE,
        "task": TASK,
        "priority": priority(job),
        # A future job holding a lock would hold back every later job of that lock (this is
        # how procrastinate orders a lock's jobs), so only jobs due now carry one.
        "lock": None if later else job.lock_key,
        "args": json.dumps({"job_id": job.id}),
        "scheduled_at": job.run_after if later else None,
    }


def defer_twins(connection: Connection, jobs: Sequence[Job]) -> None:
    """Write the twins of ``jobs`` (flushed, so with their ids) in the connection's
    transaction; nothing on SQLite, where the embedded runner reads the ledger itself."""
    if not jobs or connection.dialect.name != "postgresql":
        return
    for job in jobs:
        connection.execute(DEFER, twin_parameters(job))


@event.listens_for(StoreSession, "after_flush")
def _defer_new_jobs(session: Session, _context: Any) -> None:
    new_jobs = [obj for obj in session.new if isinstance(obj, Job)]
    if new_jobs:
        defer_twins(session.connection(), new_jobs)
