"""Contacts per second through a real `guichet serve`, from SMTP to the acknowledgement queued.

Usage: .venv/bin/python bench/end_to_end.py [--text N] [--scanned M] [--rounds R] [--single K]
       [--profile OUT] [--postgres URL [--workers W]]

Starts ``guichet serve`` (SQLite in a temporary home, the demo data loaded, default workers and
OCR processes) with an accept-and-discard SMTP server as its relay, and, per round, sends N
text emails (the project's training messages, each from its own sender) over SMTP, then M
emails carrying a 3-page scanned PDF (rendered from text, then rasterised: OCR only). A round
ends when every contact of it is processed (step ``done``) and its acknowledgement is in the
outbox; its figure is contacts / (end - first SMTP connection). The time to the relay (ack
sent) is shown beside it. Latencies are the database's own timestamps: contact received ->
acknowledgement queued (and -> sent), pooled over the rounds. Under a burst they are mostly
time spent waiting in the queue, so K more text emails are then sent one at a time, each
followed to its end: the latency of a contact with nothing in front of it.

The anchor, from the same run, is a bare aiosmtpd server that accepts and discards the same
messages from the same client. Target: >= 150 text contacts/s on 2 cores. With ``--postgres``
the scale-out deployment is measured instead: a scratch database on that server, ``guichet
serve --no-workers`` for the front and W ``guichet worker`` processes. With ``--profile``
(py-spy on PATH or ``--py-spy``), the service is sampled during the last text round and the
functions where its time goes are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    ROOT,
    GuichetServe,
    SendResult,
    add_profile_arguments,
    corpus_messages,
    free_port,
    load_note,
    parse_time,
    percentile,
    profile_summary,
    sampled,
    scanned_pdf,
    scratch_database,
    send_messages,
    server_process,
    text_email,
)

sys.path.insert(0, str(ROOT))

from tests.guichet.documents import TEXTS

SCAN_PAGES = [TEXTS["medical_invoice"], TEXTS["medical_certificate"], TEXTS["bank_details"]]


@dataclass
class Round:
    count: int
    queued_s: float
    sent_s: float
    to_queue: list[float] = field(default_factory=list)
    to_send: list[float] = field(default_factory=list)


def text_batch(count: int, start: int, texts: Sequence[str]) -> list[tuple[str, bytes]]:
    return [
        (sender := f"assure{n}@example.org", text_email(n, texts[n % len(texts)], sender))
        for n in range(start, start + count)
    ]


def scanned_batch(count: int, start: int) -> list[tuple[str, bytes]]:
    body = (
        "Bonjour,\n\nVous trouverez ci-joint la facture, le certificat médical et mon RIB "
        "numérisés.\n\nCordialement,\nJean Dupont"
    )
    return [
        (
            sender := f"assure{n}@example.org",
            text_email(
                n,
                body,
                sender,
                [(scanned_pdf(SCAN_PAGES, seed=n), "application/pdf", f"scan-{n}.pdf")],
            ),
        )
        for n in range(start, start + count)
    ]


def last_contact(service: GuichetServe) -> int:
    return int(service.query("SELECT coalesce(max(id), 0) FROM contact")[0][0])


def run_round(
    service: GuichetServe,
    batch: list[tuple[str, bytes]],
    concurrency: int,
    timeout: float,
) -> Round:
    """Send ``batch`` and follow its contacts until every acknowledgement is queued, then
    sent; the database is polled every 20 ms beside the running service."""
    after = last_contact(service)
    count = len(batch)
    started = time.perf_counter()
    outcome: list[SendResult] = []
    sender = threading.Thread(
        target=lambda: outcome.append(send_messages(service.smtp_port, batch, concurrency)),
        daemon=True,
    )
    sender.start()
    queued_at = sent_at = 0.0
    while not sent_at:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"round not finished after {timeout}s: {progress(service, after)}")
        done, queued, sent = progress(service, after)
        now = time.perf_counter() - started
        if not queued_at and done == count and queued == count:
            queued_at = now
        if queued_at and sent == count:
            sent_at = now
        time.sleep(0.02)
    sender.join()
    if not outcome or outcome[0].failures:
        raise SystemExit(f"SMTP refused: {outcome[0].failures[:3] if outcome else 'no result'}")
    rows = service.query(
        "SELECT c.received_at, o.created_at, o.sent_at FROM contact c JOIN outbound_message o"
        " ON o.contact_id = c.id AND o.purpose = 'acknowledgement' WHERE c.id > ?",
        after,
    )
    result = Round(count, queued_at, sent_at)
    for received, created, sent in rows:
        result.to_queue.append((parse_time(created) - parse_time(received)).total_seconds())
        result.to_send.append((parse_time(sent) - parse_time(received)).total_seconds())
    return result


def progress(service: GuichetServe, after: int) -> tuple[int, int, int]:
    row = service.query(
        "SELECT (SELECT count(*) FROM contact WHERE id > ? AND step = 'done'),"
        " (SELECT count(*) FROM outbound_message WHERE contact_id > ?"
        "   AND purpose = 'acknowledgement'),"
        " (SELECT count(*) FROM outbound_message WHERE contact_id > ?"
        "   AND purpose = 'acknowledgement' AND status = 'sent')",
        after,
        after,
        after,
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


def report(name: str, rounds: list[Round], anchor: float | None = None) -> None:
    """One table row: the median round's rate (rounds of one contact: all of them pooled)."""
    if all(r.count == 1 for r in rounds):
        count = len(rounds)
        rate = count / sum(r.queued_s for r in rounds)
        sent_rate = count / sum(r.sent_s for r in rounds)
    else:
        count = rounds[0].count
        rate = statistics.median(r.count / r.queued_s for r in rounds)
        sent_rate = statistics.median(r.count / r.sent_s for r in rounds)
    queue = [x * 1000 for r in rounds for x in r.to_queue]
    send = [x * 1000 for r in rounds for x in r.to_send]
    ratio = f"{rate / anchor:.3f}" if anchor else "-"
    print(
        f"{name:20} {count:>5} {rate:>9.1f} {sent_rate:>9.1f} "
        f"{percentile(queue, 50):>8.0f} {percentile(queue, 95):>8.0f} "
        f"{percentile(send, 50):>8.0f} {percentile(send, 95):>8.0f} {ratio:>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=int, default=600, help="text emails per round")
    parser.add_argument("--scanned", type=int, default=10, help="scanned-PDF emails per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=20, help="text emails sent one by one")
    parser.add_argument("--concurrency", type=int, default=8, help="SMTP connections at once")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per round")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="scale out instead: a scratch database on this PostgreSQL server, "
        "guichet serve --no-workers and --workers guichet worker processes",
    )
    parser.add_argument("--workers", type=int, default=2, help="with --postgres: processes")
    add_profile_arguments(parser, "the service during the text rounds")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    texts = corpus_messages()
    text_batches = [text_batch(args.text, r * args.text, texts) for r in range(args.rounds)]
    base = args.rounds * args.text
    scan_batches = [
        scanned_batch(args.scanned, base + r * args.scanned) for r in range(args.rounds)
    ]
    anchor_rates = []
    relay_port, bare_port = free_port(), free_port()
    with (
        tempfile.TemporaryDirectory(prefix="guichet-bench-") as tmp,
        server_process("bare-smtp", "--port", str(relay_port)),
        server_process("bare-smtp", "--port", str(bare_port)),
        scratch_database(args.postgres) if args.postgres else nullcontext("") as database,
    ):
        extra = {"GUICHET_DATABASE_URL": database} if database else {}
        service = GuichetServe(Path(tmp) / "home", relay_port, extra)
        service.cli("db", "upgrade")
        service.cli("demo")
        if database:
            service.start("--no-workers")
            service.start_workers(args.workers)
        else:
            service.start()
        try:
            # Workers start once the models are loaded; the language detector and spaCy still
            # load some parts on first use (0.5-2 s each), which a running service has behind
            # it: a warm-up round in every language, and one scan for the OCR processes.
            run_round(service, text_batch(60, 10**7, texts), args.concurrency, 300)
            run_round(service, scanned_batch(2, 10**7 + 100), args.concurrency, 300)
            text_rounds = []
            for batch in text_batches:
                anchor = send_messages(bare_port, batch, args.concurrency)
                anchor_rates.append(len(batch) / anchor.elapsed)
                # The last round is sampled: py-spy writes one profile per run.
                last = batch is text_batches[-1]
                with sampled(service.pid, args.profile if last else None, args.py_spy):
                    text_rounds.append(run_round(service, batch, args.concurrency, args.timeout))
            scan_rounds = [
                run_round(service, batch, args.concurrency, args.timeout) for batch in scan_batches
            ]
            # Latency without a queue in front: one contact at a time, each to its end.
            alone = [
                run_round(service, [item], 1, args.timeout)
                for item in text_batch(args.single, 2 * 10**7, texts)
            ]
        finally:
            service.stop()
    anchor_rate = statistics.median(anchor_rates)
    where = (
        f"guichet serve --no-workers and {args.workers} guichet worker processes on PostgreSQL"
        if args.postgres
        else "guichet serve on SQLite"
    )
    print(
        f"{where}, {args.rounds} rounds, {args.concurrency} SMTP connections; "
        f"rates are medians, latencies pooled"
    )
    print(
        f"{'':20} {'n':>5} {'queued/s':>9} {'sent/s':>9} {'q p50ms':>8} {'q p95ms':>8} "
        f"{'s p50ms':>8} {'s p95ms':>8} {'/ anchor':>8}"
    )
    print(f"{'bare SMTP accept':20} {args.text:>5} {anchor_rate:>9.1f}")
    report("text emails", text_rounds, anchor_rate)
    report("3-page scanned PDF", scan_rounds)
    if alone:
        report("text, one at a time", alone, None)
    print("target: >= 150 text contacts/s (queued/s column)")
    print(load_note(load))
    if args.profile:
        print(f"\nwhere the service's time goes in the last text round ({args.profile}):")
        print(profile_summary(args.profile))


if __name__ == "__main__":
    main()
