"""Which channel adapters, senders and job handlers run: composed here from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from channels.base import Adapter, Sender
from channels.chat import ChatLimits, WebChat
from channels.delivery import PreSendCheck
from channels.edi import EdiAdapter, EdiIntake
from channels.email_imap import ImapAdapter, MailboxConfigError, MailboxPoller, parse_mailboxes
from channels.ged import GedDrop, GedExport
from channels.twilio_sms import (
    MediaDownload,
    MediaHosts,
    TwilioAccount,
    TwilioSender,
    TwilioWebhooks,
    opt_out_check,
)
from classifiers.corpus import DOC_TYPES
from guichet.parts import uses_worker_pool
from guichet.settings import Settings, SettingsError
from intake.runner import JobHandler, Periodic, every
from models.store import Store


@dataclass
class ChannelParts:
    """What the channels add to the service beside SMTP intake and the email sender."""

    adapters: list[Adapter] = field(default_factory=list)
    senders: list[Sender] = field(default_factory=list)
    handlers: list[JobHandler] = field(default_factory=list)
    checks: list[PreSendCheck] = field(default_factory=list)
    periodic: list[Periodic] = field(default_factory=list)


def build_channels(settings: Settings, store: Store, wake: Callable[[], None]) -> ChannelParts:
    """Every channel the settings turn on. ``wake`` tells the workers a contact is waiting."""
    parts = ChannelParts()
    # Each channel adds its parts below, in one block, so that they can be read side by side.

    # SMS and MMS through Twilio: on when the account's SID and token are set.
    if settings.twilio_account_sid and settings.twilio_auth_token:
        account = TwilioAccount(settings.twilio_account_sid, settings.twilio_auth_token)
        public_url = settings.public_url.rstrip("/")
        parts.adapters.append(TwilioWebhooks(store, account, public_url, wake))
        parts.senders.append(
            TwilioSender(
                account,
                settings.twilio_from,
                settings.twilio_api_base,
                status_callback=f"{public_url}/channels/twilio/status",
            )
        )
        parts.handlers.append(
            MediaDownload(
                store,
                account,
                MediaHosts.parse(settings.twilio_media_hosts),
                settings.twilio_media_max_bytes,
                wake,
            )
        )
        parts.checks.append(opt_out_check)

    # Web chat: always on. One object is both the adapter (page, widget, websocket, upload)
    # and the sender, since replies go to the websockets it holds open.
    chat = WebChat(
        store,
        wake,
        ChatLimits(
            messages_per_minute=settings.chat_max_messages_per_minute,
            messages_per_minute_per_address=settings.chat_max_messages_per_minute_per_address,
            max_upload_bytes=settings.chat_max_upload_bytes,
        ),
    )
    parts.adapters.append(chat)
    parts.senders.append(chat)

    # GED: the drop folder of scanned mail when set; the export of closed dossiers always.
    if settings.ged_drop:
        parts.adapters.append(
            GedDrop(
                store,
                settings.folder(settings.ged_drop),
                doc_types=DOC_TYPES,
                stable_seconds=settings.drop_stable_seconds,
                poll_seconds=settings.drop_poll_seconds,
                on_accepted=lambda _: wake(),
            )
        )
    parts.handlers.append(GedExport(store, settings.folder(settings.ged_export)))

    # EDI: the upload endpoint and the invoice API always; the drop folder when set. Each
    # interchange is answered with a CONTRL written to the outbound folder.
    edi = EdiIntake(store, settings.folder(settings.edi_out), on_accepted=wake)
    parts.adapters.append(
        EdiAdapter(
            edi,
            drop=settings.folder(settings.edi_drop) if settings.edi_drop else None,
            stable_seconds=settings.drop_stable_seconds,
            poll_seconds=settings.drop_poll_seconds,
            max_bytes=settings.document_max_bytes,
        )
    )

    # IMAP mailboxes: one poller per [[imap]] table of the settings file, none by default.
    try:
        mailboxes = parse_mailboxes(settings.extra.get("imap"))
    except MailboxConfigError as exc:
        raise SettingsError(str(exc)) from exc
    if mailboxes and uses_worker_pool(settings):
        # Scaled out, fronts do not read mailboxes (two would read the same mail): each
        # mailbox is a periodic task of the worker pool, which runs one pass at a time.
        for mailbox in mailboxes:
            poller = MailboxPoller(
                mailbox, store, max_message_bytes=settings.smtp_max_message_bytes, wake=wake
            )
            parts.periodic.append(
                Periodic(f"imap_{mailbox.name}", every(mailbox.poll_seconds), poller.run_once)
            )
    elif mailboxes:
        parts.adapters.append(
            ImapAdapter(
                store, mailboxes, max_message_bytes=settings.smtp_max_message_bytes, wake=wake
            )
        )
    return parts
