"""Live updates of the open inboxes: a small in-process broadcaster fed by the service's wake-ups
and by a poll of the newest contact and audit event (other processes store contacts too),
served to browsers as server-sent events at /inbox/events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from models.store import Store
from models.tables import AuditEvent, Contact

log = logging.getLogger(__name__)

#: A browser that does not read its events for this many is dropped (it reconnects).
QUEUE_SIZE = 100
HEARTBEAT_SECONDS = 15.0
CLOSE = "close"


class LiveFeed:
    """Publishes ``contact`` (a new contact) and ``change`` (anything audited) events."""

    def __init__(self, store: Store, poll_seconds: float = 2.0) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self._queues: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._newest_contact: int | None = None
        self._newest_event: int | None = None
        self._closing = False

    # ------------------------------------------------------------------ publishing

    def publish(self, event: str, data: dict[str, Any]) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait((event, data))
            except asyncio.QueueFull:
                self._queues.discard(queue)

    def poke(self) -> None:
        """Something was stored: look now rather than at the next poll. With nobody listening
        the regular poll is enough: under a flood, a look per contact cost the fronts two
        queries each for no one."""
        if self._queues:
            self._poke.set()

    async def check(self) -> None:
        """Publish what appeared in the store since the last look."""
        async with self.store.sessions() as session:
            contact = await session.scalar(select(func.max(Contact.id)))
            event = await session.scalar(select(func.max(AuditEvent.id)))
            new_ids: list[int] = []
            if self._newest_contact is not None and contact and contact > self._newest_contact:
                new_ids = list(
                    (
                        await session.scalars(
                            select(Contact.id)
                            .where(Contact.id > self._newest_contact)
                            .order_by(Contact.id)
                            .limit(50)
                        )
                    ).all()
                )
        for contact_id in new_ids:
            self.publish("contact", {"id": contact_id})
        if self._newest_event is not None and event and event > self._newest_event:
            self.publish("change", {"event": event})
        self._newest_contact = contact or 0
        self._newest_event = event or 0

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                # The database may be restarting: the next poll tries again.
                log.exception("live feed: polling the store failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll_seconds)
            self._poke.clear()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._run())
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def on_shutdown(self, app: web.Application) -> None:
        # Open streams would otherwise hold the server's shutdown for its whole grace time.
        self._closing = True
        self.publish(CLOSE, {})

    # ------------------------------------------------------------------ serving

    @contextlib.contextmanager
    def subscription(self) -> Any:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``GET /inbox/events``: the event stream of one open inbox."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        with self.subscription() as queue:
            while not self._closing:
                try:
                    event, data = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    chunk = b": keep-alive\n\n"
                else:
                    if event == CLOSE:
                        break
                    chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
                try:
                    await response.write(chunk)
                except (ConnectionResetError, RuntimeError):
                    break
        return response
