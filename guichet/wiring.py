"""Which channel adapters, senders and job handlers run: composed here from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from channels.base import Adapter, Sender
from channels.delivery import PreSendCheck
from guichet.settings import Settings
from intake.runner import JobHandler
from models.store import Store


@dataclass
class ChannelParts:
    """What the channels add to the service beside SMTP intake and the email sender."""

    adapters: list[Adapter] = field(default_factory=list)
    senders: list[Sender] = field(default_factory=list)
    handlers: list[JobHandler] = field(default_factory=list)
    checks: list[PreSendCheck] = field(default_factory=list)


def build_channels(settings: Settings, store: Store, wake: Callable[[], None]) -> ChannelParts:
    """Every channel the settings turn on. ``wake`` tells the workers a contact is waiting."""
    parts = ChannelParts()
    # Each channel adds its parts below, in one block, so that they can be read side by side.
    return parts
