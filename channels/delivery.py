"""The outbox job: deliver a queued reply through its channel's sender, exactly once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import DeliveryError, Sender
from intake.runner import RetryPolicy
from models.clock import utcnow
from models.jobs import DELIVER_JOB, ClaimedJob
from models.store import Store, audit
from models.tables import Contact, OutboundMessage

log = logging.getLogger(__name__)

FINAL = frozenset({"sent", "failed", "uncertain", "cancelled", "rejected"})

#: A check run just before sending, in the delivery's transaction: it returns why the reply must
#: not leave any more (it is then ``cancelled``), or None. The composition root supplies them, so
#: that channels never import the responders that know what a reply depends on.
PreSendCheck = Callable[[AsyncSession, OutboundMessage], Awaitable[str | None]]


# Built once: every reply runs it, and building it cost more than running it.
_FOR_SENDING = (
    select(OutboundMessage).where(OutboundMessage.id == bindparam("message_id")).with_for_update()
)


class OutboxDelivery:
    """Job handler for ``deliver`` jobs.

    The record is marked ``sending`` in its own commit before the transport is touched. If the
    process dies during the exchange, the replayed job finds ``sending`` and cannot know whether
    the peer got the message: it parks it as ``uncertain`` for a person, since DESIGN rule 3
    forbids sending twice.
    """

    kind = DELIVER_JOB

    def __init__(
        self,
        store: Store,
        senders: Mapping[str, Sender],
        checks: Sequence[PreSendCheck] = (),
    ) -> None:
        self.store = store
        self.senders = dict(senders)
        self.checks = tuple(checks)
        #: Its own retry policy, set by the composition root (intake.runner.policy_for).
        self.retry: RetryPolicy | None = None

    async def run(self, job: ClaimedJob) -> None:
        async with self.store.sessions() as session, session.begin():
            message = await session.scalar(_FOR_SENDING, {"message_id": job.subject_id})
            # A held reply waits for a gestionnaire; its approval enqueues a new job.
            if message is None or message.status in FINAL or message.status == "held":
                return
            if message.status == "sending":
                await self._uncertain(session, message)
                return
            for check in self.checks:
                reason = await check(session, message)
                if reason is not None:
                    self._cancel(session, message, reason)
                    return
            sender = self.senders.get(message.channel)
            if sender is None:
                message.status = "failed"
                message.status_reason = f"no sender for channel {message.channel}"
                return
            message.status = "sending"
            message.attempts += 1
        try:
            provider_id = await sender.send(message)
        except DeliveryError as exc:
            if exc.uncertain:
                # Sending again could deliver it twice (DESIGN rule 3): a person decides.
                async with self.store.sessions() as session, session.begin():
                    sending = await session.get_one(OutboundMessage, message.id)
                    await self._uncertain(session, sending, exc.reason)
                return
            await self._finish(message.id, "failed" if exc.permanent else "queued", exc.reason)
            if not exc.permanent:
                raise
            return
        except Exception as exc:
            await self._finish(message.id, "queued", f"{type(exc).__name__}: {exc}")
            raise
        await self._finish(message.id, "sent", None, provider_id)

    async def _finish(
        self, message_id: int, status: str, reason: str | None, provider_id: str | None = None
    ) -> None:
        async with self.store.sessions() as session, session.begin():
            message = await session.get_one(OutboundMessage, message_id)
            message.status = status
            message.status_reason = reason
            event: dict[str, str | None] = {
                "at": utcnow().isoformat(),
                "status": status,
                "detail": reason or provider_id,
            }
            message.events = [*message.events, event]
            if status == "sent":
                message.sent_at = utcnow()
                message.provider_id = provider_id
            if status in ("sent", "failed"):
                audit(
                    session,
                    f"channel:{message.channel}",
                    f"reply.{status}",
                    "outbound_message",
                    message.id,
                    note=reason or provider_id or "",
                )

    def _cancel(self, session: AsyncSession, message: OutboundMessage, reason: str) -> None:
        before = {"status": message.status, "reason": message.status_reason}
        message.status = "cancelled"
        message.status_reason = reason
        message.events = [
            *message.events,
            {"at": utcnow().isoformat(), "status": "cancelled", "detail": reason},
        ]
        audit(
            session,
            "outbox",
            "reply.cancelled",
            "outbound_message",
            message.id,
            before=before,
            after={"status": "cancelled", "reason": reason},
            note=reason,
        )

    async def _uncertain(
        self,
        session: AsyncSession,
        message: OutboundMessage,
        reason: str = (
            "the service stopped while handing this reply to the transport; "
            "it may or may not have left"
        ),
    ) -> None:
        message.status = "uncertain"
        message.status_reason = reason
        audit(
            session,
            "channel:" + message.channel,
            "reply.uncertain",
            "outbound_message",
            message.id,
            note=reason,
        )
        if message.contact_id is not None:
            contact = await session.get(Contact, message.contact_id)
            if contact is not None:
                contact.status = "needs_review"
                contact.status_reason = (
                    f"{message.purpose} delivery uncertain: check and resend by hand"
                )

    async def release(self) -> None:
        """Let each sender close what it keeps open between replies (kept relay sessions)."""
        for sender in self.senders.values():
            release = getattr(sender, "release", None)
            if release is not None:
                await release()

    async def on_parked(self, session: AsyncSession, job: ClaimedJob, error: str) -> None:
        message = await session.get(OutboundMessage, job.subject_id)
        if message is not None and message.status not in FINAL:
            message.status = "failed"
            message.status_reason = f"gave up after {job.attempts} attempts: {error}"
            audit(
                session,
                "channel:" + message.channel,
                "reply.failed",
                "outbound_message",
                message.id,
                note=message.status_reason,
            )
