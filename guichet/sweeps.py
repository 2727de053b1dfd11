"""Periodic sweeps: contacts past their SLA are announced once, in the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, exists, select

from models.clock import utcnow
from models.store import Store, audit
from models.tables import AuditEvent, Contact, ContactTriage

SLA_BREACHED = "contact.sla_breached"
#: One sweep records at most this many; the next tick takes the rest.
SWEEP_BATCH = 500


async def sla_sweep(store: Store, sla_hours: float, now: datetime | None = None) -> int:
    """Record ``contact.sla_breached`` for each open inbound contact older than the SLA, once.

    The inbox already shows the breach; the event is what the live feed, the reports and an
    alerting hook can follow, and it says when the breach was first seen.
    """
    limit = (now or utcnow()) - timedelta(hours=sla_hours)
    announced = exists().where(
        AuditEvent.object_type == "contact",
        AuditEvent.action == SLA_BREACHED,
        # object_id is text: compared as text on both back ends.
        AuditEvent.object_id == Contact.id.cast(AuditEvent.object_id.type),
    )
    done = exists().where(
        ContactTriage.contact_id == Contact.id, ContactTriage.done_at.is_not(None)
    )
    async with store.sessions() as session, session.begin():
        rows = (
            await session.execute(
                select(Contact.id, Contact.received_at)
                .where(
                    and_(Contact.direction == "inbound", Contact.received_at < limit),
                    ~done,
                    ~announced,
                )
                .order_by(Contact.id)
                .limit(SWEEP_BATCH)
            )
        ).all()
        for contact_id, received_at in rows:
            audit(
                session,
                "sweep",
                SLA_BREACHED,
                "contact",
                contact_id,
                note=f"open since {received_at.isoformat(timespec='minutes')}, "
                f"over the {sla_hours:g} h SLA",
            )
    return len(rows)
