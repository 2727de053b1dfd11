"""What every channel offers: a sender for outbound messages, and the registry of channels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aiohttp import web

from models.tables import OutboundMessage


class DeliveryError(Exception):
    """Sending failed; ``permanent`` says whether trying again could ever help, ``uncertain``
    that the peer may have taken the message all the same (so it must not be sent again)."""

    def __init__(self, reason: str, *, permanent: bool = False, uncertain: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.uncertain = uncertain


class Sender(Protocol):
    """The outbound half of a channel adapter: it delivers a rendered record, nothing more."""

    channel: str

    async def send(self, message: OutboundMessage) -> str:
        """Deliver ``message`` and return the provider's id or acceptance line.

        Raises ``DeliveryError``; anything else is treated as temporary.
        """
        ...


class Adapter(Protocol):
    """The inbound half of a channel that runs beside the service: a poller, a folder watcher,
    HTTP endpoints (webhooks, websocket), or several. ``guichet.wiring`` builds them from the
    settings; the service mounts their routes, then starts them once the store is migrated, and
    stops them first on the way out so nothing new arrives while the workers drain."""

    name: str

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """HTTP routes to mount on the service's application (none for a pure poller)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
