"""Scale-out on PostgreSQL: one front and three worker processes take 500 contacts, a third of
them scanned, while workers are SIGKILLed; nothing is lost, processed twice or answered twice."""

from __future__ import annotations

import asyncio
import io
import smtplib
import time
from collections import Counter
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import psycopg
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import Relay, _libpq
from tests.guichet.service import DOMAIN, GuichetProcess

CONTACTS = 500
SCANNED_EVERY = 3
SENDING_CONNECTIONS = 6
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def scanned_receipt(n: int) -> bytes:
    """A small greyscale scan of a receipt, different for each contact (no OCR shortcut)."""
    image = Image.new("L", (900, 160), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(FONT), 28) if FONT.exists() else ImageFont.load_default()
    draw.text((20, 20), f"Reçu de paiement numéro {n:05d}", fill=0, font=font)
    draw.text((20, 80), f"Montant payé : {40 + n % 60},50 EUR", fill=0, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def contact_mail(n: int) -> bytes:
    msg = EmailMessage()
    # One sender each: the per-recipient hourly cap on automatic replies must not hold any.
    msg["From"] = f"Client {n} <client{n}@example.org>"
    msg["To"] = f"sinistres@{DOMAIN}"
    msg["Subject"] = f"Demande de remboursement {n}"
    msg["Message-ID"] = f"<scale-{n}@example.org>"
    msg.set_content(
        f"Bonjour,\nje vous envoie ma demande de remboursement numéro {n} pour les frais "
        "de dépannage de mon véhicule.\nCordialement"
    )
    if n % SCANNED_EVERY == 0:
        msg.add_attachment(
            scanned_receipt(n), maintype="image", subtype="png", filename=f"recu-{n}.png"
        )
    return msg.as_bytes(policy=SMTP)


def send_all(port: int, numbers: list[int]) -> list[int]:
    """One SMTP connection sending its share; returns the numbers that got 250."""
    accepted = []
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        for n in numbers:
            client.sendmail(f"client{n}@example.org", [f"sinistres@{DOMAIN}"], contact_mail(n))
            accepted.append(n)
    return accepted


def count(url: str, query: str) -> int:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


async def until_done(url: str, contacts: int) -> None:
    """Poll the database (the workers are other processes: no event to wait on here)."""
    while count(url, "SELECT count(*) FROM contact WHERE step = 'done'") < contacts:  # noqa: ASYNC110
        await asyncio.sleep(0.5)


@pytest.mark.timeout(600)
async def test_front_and_three_workers_lose_nothing_when_workers_are_killed(
    tmp_path: Path, postgres_url: str, relay: Relay
) -> None:
    home = tmp_path / "home"
    env = {
        "GUICHET_DATABASE_URL": postgres_url,
        "GUICHET_WORKERS": "2",
        "GUICHET_OCR_PROCESSES": "1",
    }
    front = GuichetProcess(home, relay.port, env, command=("serve", "--no-workers"))
    workers = [
        GuichetProcess(home, relay.port, env, command=("worker",), log_name=f"worker{i}.log")
        for i in range(3)
    ]
    await front.start()
    for worker in workers:
        await worker.start()
    try:
        started = time.monotonic()
        shares = [list(range(i, CONTACTS, SENDING_CONNECTIONS)) for i in range(SENDING_CONNECTIONS)]
        sending = asyncio.gather(
            *(asyncio.to_thread(send_all, front.smtp_port, share) for share in shares)
        )
        # Kill a worker twice while work is in flight, each time starting a new one in its
        # place as an orchestrator would; the dead one's jobs must go to the others.
        killed = 0
        async with asyncio.timeout(420):
            for victim, threshold in ((workers[0], 120), (workers[1], 260)):
                await until_done(postgres_url, threshold)
                victim.kill()
                killed += 1
                await victim.start()
            accepted = sorted(n for share in await sending for n in share)
            sent_at = time.monotonic()
            await until_done(postgres_url, CONTACTS)
            done_at = time.monotonic()
            print(f"sent in {sent_at - started:.0f}s, processed in {done_at - started:.0f}s")
            await relay.wait_for(CONTACTS - 2, timeout=120)
            # Let anything that would (wrongly) be sent a second time arrive.
            await asyncio.sleep(3)
    finally:
        for process in (front, *workers):
            process.stop()
    assert killed == 2
    assert accepted == list(range(CONTACTS))

    with psycopg.connect(_libpq(postgres_url)) as conn:
        contacts = conn.execute(
            "SELECT id, message_id, status FROM contact WHERE direction = 'inbound'"
        ).fetchall()
        audit_pairs = conn.execute(
            "SELECT object_id, action FROM audit_event WHERE object_type = 'contact' "
            "AND actor <> 'sweep'"
        ).fetchall()
        acks = conn.execute(
            "SELECT contact_id, status, message_id FROM outbound_message "
            "WHERE purpose = 'acknowledgement'"
        ).fetchall()
        unfinished = conn.execute("SELECT count(*) FROM job WHERE status <> 'done'").fetchone()
        twins = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs "
            "WHERE task_name = 'guichet.run_job' AND status IN ('todo', 'doing')"
        ).fetchone()
        scanned_read = conn.execute(
            "SELECT count(*) FROM document WHERE text ILIKE '%paiement%'"
        ).fetchone()

    # Every 250 is one contact, and every contact went through every step once.
    assert len(contacts) == CONTACTS
    assert len({message_id for _, message_id, _ in contacts}) == CONTACTS
    assert {status for _, _, status in contacts} <= {"processed", "needs_review"}
    repeated = [pair for pair, n in Counter(audit_pairs).items() if n > 1]
    assert repeated == [], f"steps recorded twice: {repeated[:10]}"
    assert unfinished == (0,)
    assert twins == (0,)
    assert scanned_read is not None and scanned_read[0] >= CONTACTS // SCANNED_EVERY - 1

    # One acknowledgement per contact, sent once. A kill in the instant a reply is handed to
    # the relay leaves it "uncertain" for a person rather than sending it twice: tolerated for
    # as many replies as there were kills, and such a reply reached the relay at most once.
    assert sorted(contact_id for contact_id, _, _ in acks) == sorted(c for c, _, _ in contacts)
    statuses = Counter(status for _, status, _ in acks)
    assert statuses["sent"] + statuses["uncertain"] == CONTACTS, statuses
    assert statuses["uncertain"] <= killed
    relayed = Counter(message["In-Reply-To"] for _, message in relay.received)
    assert max(relayed.values()) == 1, relayed.most_common(3)
    inbound_ids = {f"<{message_id}>" for _, message_id, _ in contacts}
    assert set(relayed) <= inbound_ids
    assert len(relayed) >= statuses["sent"]

    # The dead workers' jobs were taken over, not merely finished by luck before the kill.
    logs = "".join(w.log.read_text() for w in workers)
    assert "of a dead worker: running it again" in logs
