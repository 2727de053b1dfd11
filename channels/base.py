"""What every channel offers: a sender for outbound messages, and the registry of channels."""

from __future__ import annotations

from typing import Protocol

from models.tables import OutboundMessage


class DeliveryError(Exception):
    """Sending failed; ``permanent`` says whether trying again could ever help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Sender(Protocol):
    """The outbound half of a channel adapter: it delivers a rendered record, nothing more."""

    channel: str

    async def send(self, message: OutboundMessage) -> str:
        """Deliver ``message`` and return the provider's id or acceptance line.

        Raises ``DeliveryError``; anything else is treated as temporary.
        """
        ...
