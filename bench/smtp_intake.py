"""SMTP intake rate of Guichet (stored durably before 250) against a bare accept-and-discard server.

Usage: .venv/bin/python bench/smtp_intake.py [--messages N] [--rounds R] [--concurrency C ...]
       [--profile OUT]

Both servers run in their own processes with the same aiosmtpd settings: Guichet's real
``SmtpIntake`` on a SQLite store in a temporary home (blobs fsync'd, rows committed with
``synchronous=FULL``, then ``250``; no workers, so only intake is measured), in Guichet's own
session class (``IntakeSMTP``, which reads DATA in blocks rather than a line at a time), and
stock aiosmtpd with a bare handler that answers ``250`` and keeps nothing. The same client
(smtplib, one thread per connection, connections reused for 50 messages as an MTA does) sends
the same ~20 KB messages (text and HTML alternatives and a photo attached, each unique) to
both, alternately, with 1 and with 16 connections at once. Prints the median messages/s over
the rounds and the ratio (target: >= 0.6).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    add_profile_arguments,
    corpus_messages,
    free_port,
    load_note,
    profile_summary,
    rich_email,
    sampled,
    send_messages,
    server_process,
)


def build(count: int, start: int, texts: list[str]) -> list[tuple[str, bytes]]:
    """``count`` distinct messages from distinct senders (seeds from ``start``)."""
    return [
        (sender := f"assure{n}@example.org", rich_email(n, texts[n % len(texts)], sender))
        for n in range(start, start + count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--per-connection", type=int, default=50)
    add_profile_arguments(parser, "Guichet's server in the last round, most connections")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    texts = corpus_messages()
    batches = {
        (c, r): build(args.messages, (i * args.rounds + r) * args.messages, texts)
        for i, c in enumerate(args.concurrency)
        for r in range(args.rounds)
    }
    size = statistics.mean(len(raw) for batch in batches.values() for _, raw in batch)
    bare_port, guichet_port = free_port(), free_port()
    rates: dict[tuple[str, int], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="guichet-bench-") as home,
        server_process("bare-smtp", "--port", str(bare_port)),
        server_process("guichet-smtp", "--port", str(guichet_port), "--home", home) as guichet,
    ):
        # One message each first: connections, imports and the first SQLite pages are warm.
        warm = build(2, 10**7, texts)
        send_messages(bare_port, warm[:1], 1)
        send_messages(guichet_port, warm[1:], 1)
        for r in range(args.rounds):
            for c in args.concurrency:
                sides = [("bare", bare_port), ("guichet", guichet_port)]
                # Alternate who goes first, so a burst of noise does not always hit one side.
                for name, port in sides if r % 2 == 0 else sides[::-1]:
                    last = name == "guichet" and r == args.rounds - 1 and c == args.concurrency[-1]
                    out = args.profile if last else None
                    with sampled(guichet.process.pid, out, args.py_spy):
                        result = send_messages(port, batches[(c, r)], c, args.per_connection)
                    if result.failures:
                        raise SystemExit(
                            f"{name}: {len(result.failures)} refused, e.g. {result.failures[0]}"
                        )
                    rates.setdefault((name, c), []).append(args.messages / result.elapsed)
    print(
        f"{args.messages} messages of {size / 1024:.1f} KB on average per round and side, "
        f"{args.rounds} rounds (medians); servers and client in separate processes"
    )
    print(f"{'connections':>11} {'bare msg/s':>11} {'guichet msg/s':>14} {'ratio':>6}")
    for c in args.concurrency:
        bare = statistics.median(rates[("bare", c)])
        ours = statistics.median(rates[("guichet", c)])
        print(f"{c:>11} {bare:>11.0f} {ours:>14.0f} {ours / bare:>6.2f}")
    print("target: ratio guichet / bare >= 0.6")
    print(load_note(load))
    if args.profile:
        print(f"\nwhere Guichet's SMTP server spends its time ({args.profile}):")
        print(profile_summary(args.profile))


if __name__ == "__main__":
    main()
