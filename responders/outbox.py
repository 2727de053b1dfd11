"""The durable outbox: one reply per key, queued (or held for approval) with its delivery job."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import jobs
from models.clock import utcnow
from models.jobs import DELIVER_JOB
from models.store import audit
from models.tables import Dossier, OutboundMessage
from responders.decide import MISSING_HEADER, why_cancel

CAP_REACHED = "per-recipient cap reached"
#: Statuses that count towards the per-recipient cap: on their way or gone.
_OUTGOING = ("queued", "sending", "sent", "uncertain")


class NotHeld(RuntimeError):
    """Only a held reply can be approved or rejected."""


def idempotency_key(contact_id: int, purpose: str) -> str:
    return f"contact:{contact_id}:{purpose}"


def _state(message: OutboundMessage) -> dict[str, str | None]:
    return {"status": message.status, "reason": message.status_reason}


# Built once: a statement costs more to build than to run, and every reply runs these.
_WHEN = OutboundMessage.__table__.c.created_at.type
_AUTOMATIC_SINCE = (
    select(func.count())
    .select_from(OutboundMessage)
    .where(
        OutboundMessage.recipient == bindparam("recipient"),
        OutboundMessage.status.in_(_OUTGOING),
        OutboundMessage.decided_by.is_(None),
        OutboundMessage.created_at >= bindparam("since", type_=_WHEN),
        or_(
            OutboundMessage.send_after.is_(None),
            OutboundMessage.send_after <= bindparam("now", type_=_WHEN),
        ),
    )
)
_MISSING = select(Dossier.missing).where(Dossier.id == bindparam("dossier_id"))
_BY_KEY = select(OutboundMessage.id).where(OutboundMessage.idempotency_key == bindparam("key"))


async def automatic_in_last_hour(session: AsyncSession, recipient: str, now: datetime) -> int:
    """Automatic replies to ``recipient`` that left or may leave within the past hour."""
    parameters = {"recipient": recipient, "since": now - timedelta(hours=1), "now": now}
    return int(await session.scalar(_AUTOMATIC_SINCE, parameters) or 0)


async def queue_reply(
    session: AsyncSession,
    message: OutboundMessage,
    *,
    hold: str | None = None,
    cap: int | None = None,
    actor: str = "responder",
) -> OutboundMessage | None:
    """Queue ``message`` unless a reply with its key exists (a replayed job sends nothing twice).

    ``hold`` keeps it for a gestionnaire's approval; past ``cap`` automatic replies to the same
    recipient within an hour it is held too, which stops any loop between two robots. Runs in
    the caller's transaction; the unique key is the final guard should two replays race.
    """
    existing = await session.scalar(_BY_KEY, {"key": message.idempotency_key})
    if existing is not None:
        return None
    now = utcnow()
    due_now = message.send_after is None or message.send_after <= now
    if (
        hold is None
        and cap is not None
        and due_now
        and await automatic_in_last_hour(session, message.recipient, now) >= cap
    ):
        hold = CAP_REACHED
    message.status = "held" if hold else "queued"
    message.status_reason = hold
    session.add(message)
    await session.flush()
    if not hold:
        jobs.enqueue(session, DELIVER_JOB, message.id, run_after=message.send_after)
    audit(
        session,
        actor,
        "reply.held" if hold else "reply.queued",
        "outbound_message",
        message.id,
        after={
            "purpose": message.purpose,
            "recipient": message.recipient,
            "channel": message.channel,
            "status": message.status,
            "reason": hold,
            "send_after": message.send_after.isoformat() if message.send_after else None,
        },
    )
    return message


async def approve(session: AsyncSession, message: OutboundMessage, by: str) -> None:
    """A gestionnaire lets a held reply leave: queued, with its delivery job, in one commit."""
    if message.status != "held":
        raise NotHeld(f"reply {message.id} is {message.status}, not held")
    before = _state(message)
    now = utcnow()
    message.status, message.status_reason = "queued", None
    message.decided_by, message.decided_at = by, now
    run_after = message.send_after if message.send_after and message.send_after > now else None
    jobs.enqueue(session, DELIVER_JOB, message.id, run_after=run_after)
    audit(
        session,
        by,
        "reply.approved",
        "outbound_message",
        message.id,
        before=before,
        after=_state(message),
    )


async def reject(session: AsyncSession, message: OutboundMessage, by: str, note: str = "") -> None:
    """A gestionnaire stops a held reply for good."""
    if message.status != "held":
        raise NotHeld(f"reply {message.id} is {message.status}, not held")
    before = _state(message)
    message.status, message.status_reason = "rejected", note or f"rejected by {by}"
    message.decided_by, message.decided_at = by, utcnow()
    audit(
        session,
        by,
        "reply.rejected",
        "outbound_message",
        message.id,
        before=before,
        after=_state(message),
        note=note,
    )


async def missing_list_check(session: AsyncSession, message: OutboundMessage) -> str | None:
    """Pre-send check for the delivery job: a missing-documents request or reminder whose
    dossier no longer misses what it asks for must not leave (returns why)."""
    if message.dossier_id is None:
        return None
    if message.headers.get(MISSING_HEADER):
        # Only a request says what it asked for; an acknowledgement needs no look-up here.
        missing = await session.scalar(_MISSING, {"dossier_id": message.dossier_id})
        reason = why_cancel(message.headers, list(missing or []))
        if reason is not None:
            return reason
    request_key, marker, _ = message.idempotency_key.partition(":reminder:")
    if marker:
        # A reminder of a request that never reached the person (held by the hourly cap and
        # still waiting, rejected, cancelled) would remind them of nothing.
        status = await session.scalar(
            select(OutboundMessage.status).where(OutboundMessage.idempotency_key == request_key)
        )
        if status != "sent":
            return f"its request was not sent (it is {status or 'missing'})"
    return None
