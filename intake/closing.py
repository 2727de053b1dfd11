"""Closing a dossier: its status, the audit event, and the durable job that archives it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import jobs
from models.store import audit
from models.tables import Dossier

CLOSED = "closed"


class UnknownDossier(LookupError):
    """No dossier has this reference."""


async def close_dossier(session: AsyncSession, ref: str, actor: str) -> Dossier:
    """Close dossier ``ref`` in the caller's transaction and enqueue its GED export there too,
    so the export exists exactly when the closing does. Closing a closed dossier changes
    nothing (a double click, a replayed request)."""
    dossier = await session.scalar(select(Dossier).where(Dossier.ref == ref).with_for_update())
    if dossier is None:
        raise UnknownDossier(f"no dossier {ref}")
    if dossier.status == CLOSED:
        return dossier
    before = dossier.status
    dossier.status = CLOSED
    await session.flush()
    jobs.enqueue(session, jobs.GED_EXPORT_JOB, dossier.id, lock=jobs.dossier_lock(dossier.id))
    audit(
        session,
        actor,
        "dossier.closed",
        "dossier",
        dossier.ref,
        before={"status": before},
        after={"status": CLOSED},
    )
    return dossier
