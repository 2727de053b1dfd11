"""Latency of signed Twilio SMS webhooks at a fixed rate: `guichet serve` against a bare aiohttp.

Usage: .venv/bin/python bench/twilio_webhook.py [--rate RPS ...] [--duration S] [--rounds R]
       [--profile OUT]

An open-loop load generator (aiohttp client, in its own process) sends ``POST
/channels/twilio/sms`` on a fixed schedule, never waiting for answers, each form signed with
``X-Twilio-Signature`` by the twilio package's ``RequestValidator`` as Twilio does, each a new
MessageSid from its own number. Latency runs from the scheduled send time to the full answer,
so a slow server is not hidden by a generator that waits (coordinated omission). Per round, on
the same machine:

* anchor: a bare aiohttp app answering the same path with the same empty TwiML after reading
  the body (no signature check, nothing stored);
* ``guichet serve --no-workers``: the front only (signature check, contact committed before
  the answer), as deployed with separate workers;
* ``guichet serve``: all in one process, its two workers taking up the new SMS contacts (and
  sending their replies to the project's Twilio REST stand-in) while the webhooks come in;
  started afresh each round, since it cannot drain 200 contacts/s.

Prints p50/p90/p99/max in ms (medians over rounds) and how late the generator itself was.
Target: p99 <= 20 ms at 200 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    GuichetServe,
    add_profile_arguments,
    free_port,
    load_note,
    percentile,
    profile_summary,
    sampled,
    server_process,
)

PATH = "/channels/twilio/sms"
OUR_NUMBER = "+33700000001"


def forms(count: int, account_sid: str, first: int) -> list[list[tuple[str, str]]]:
    """Inbound SMS webhook forms as Twilio posts them, one sender number each."""
    bodies = [
        "Bonjour, où en est mon dossier AS-2026-000001 ?",
        "Ma voiture est en panne sur l'A7 près de Valence, il me faut un dépanneur",
        "Merci pour votre aide",
        "J'ai envoyé la facture de l'hôpital hier, l'avez-vous reçue ?",
    ]
    result = []
    for n in range(first, first + count):
        sid = "SM" + secrets.token_hex(16)
        result.append(
            [
                ("ToCountry", "FR"),
                ("SmsMessageSid", sid),
                ("NumMedia", "0"),
                ("SmsSid", sid),
                ("SmsStatus", "received"),
                ("Body", bodies[n % len(bodies)]),
                ("To", OUR_NUMBER),
                ("NumSegments", "1"),
                ("MessageSid", sid),
                ("AccountSid", account_sid),
                ("From", f"+336{n % 10**8:08d}"),
                ("ApiVersion", "2010-04-01"),
            ]
        )
    return result


# --- the load generator (its own process) ---------------------------------------------------------


async def generate(
    target: str,
    signed_url: str,
    token: str,
    account_sid: str,
    rate: float,
    duration: float,
    first: int,
) -> dict[str, Any]:
    import aiohttp
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(token)
    count = int(rate * duration)
    prepared = []
    for form in forms(count, account_sid, first):
        signature = validator.compute_signature(signed_url, dict(form))
        prepared.append((urlencode(form).encode(), signature))
    latencies: list[float] = []
    late: list[float] = []
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()

        async def one(body: bytes, signature: str, due: float) -> None:
            late.append(loop.time() - due)
            headers = {
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
            }
            try:
                async with http.post(target, data=body, headers=headers) as response:
                    text = await response.text()
                    if response.status != 200 or "<Response>" not in text:
                        failures.append(f"{response.status} {text[:80]}")
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(loop.time() - due)

        tasks = []
        start = loop.time() + 0.2
        for i, (body, signature) in enumerate(prepared):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body, signature, due)))
        await asyncio.gather(*tasks)
    return {"latencies": latencies, "late": late, "failures": failures[:5], "failed": len(failures)}


def run_generator(
    target: str,
    signed_url: str,
    token: str,
    account_sid: str,
    rate: float,
    duration: float,
    first: int,
) -> dict[str, Any]:
    """Run the generator in a child process; its result comes back as JSON on stdout."""
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--generate",
            target,
            "--signed-url",
            signed_url,
            "--token",
            token,
            "--account",
            account_sid,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--first",
            str(first),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    if result["failed"]:
        raise SystemExit(f"{target}: {result['failed']} requests failed, e.g. {result['failures']}")
    return result


# --- the comparison -------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> dict[str, float]:
    ms = [x * 1000 for x in result["latencies"]]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "late99": percentile([x * 1000 for x in result["late"]], 99),
    }


BARE, FRONT, ALL = "bare aiohttp", "guichet --no-workers", "guichet (workers on)"
SIDES = (BARE, FRONT, ALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[200.0], help="requests per second (each)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm-up", type=float, default=1.0, help="seconds at the rate first")
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=SIDES,
        default=list(SIDES),
        help="what to measure (default: all three)",
    )
    add_profile_arguments(
        parser, "the last Guichet side measured (the front alone by default), highest rate"
    )
    # The generator's own command line (the script runs itself as the load generator).
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--signed-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--account", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        result = asyncio.run(
            generate(
                args.generate,
                args.signed_url,
                args.token,
                args.account,
                args.rate[0],
                args.duration,
                args.first,
            )
        )
        print(json.dumps(result))
        return

    load = os.getloadavg()[0]
    account_sid = "AC" + secrets.token_hex(16)
    token = secrets.token_hex(16)
    sides = [side for side in SIDES if side in args.sides]
    profiled = [side for side in sides if side != BARE][-1:]
    figures: dict[tuple[str, float], list[dict[str, float]]] = {}
    sequence = 0

    def measure(side: str, rate: float, target: str) -> None:
        nonlocal sequence
        if args.warm_up:
            run_generator(target, target, token, account_sid, rate, args.warm_up, sequence)
            sequence += int(rate * args.warm_up)
        result = run_generator(target, target, token, account_sid, rate, args.duration, sequence)
        sequence += int(rate * args.duration)
        figures.setdefault((side, rate), []).append(summary(result))

    anchor_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="guichet-bench-") as tmp,
        server_process("bare-twiml", "--port", str(anchor_port), "--path", PATH),
        server_process("twilio-api", "--account", account_sid, "--token", token) as api,
        server_process("bare-smtp", "--port", str(relay := free_port())),
    ):
        for r in range(args.rounds):
            for rate in args.rate:
                if BARE in sides:
                    measure(BARE, rate, f"http://127.0.0.1:{anchor_port}{PATH}")
                for side, home, serve_args in (
                    (FRONT, Path(tmp) / "front", ["--no-workers"]),
                    # A fresh home each time: the backlog of the last run is not inherited.
                    (ALL, Path(tmp) / f"all-{r}-{rate:.0f}", []),
                ):
                    if side not in sides:
                        continue
                    service = GuichetServe(home, relay)
                    public = f"http://127.0.0.1:{service.http_port}"
                    service.env.update(
                        GUICHET_PUBLIC_URL=public,
                        GUICHET_TWILIO_ACCOUNT_SID=account_sid,
                        GUICHET_TWILIO_AUTH_TOKEN=token,
                        GUICHET_TWILIO_FROM=OUR_NUMBER,
                        GUICHET_TWILIO_API_BASE=api.info,
                    )
                    service.start(*serve_args)
                    try:
                        if not serve_args:
                            prime(service, public + PATH, token, account_sid)
                        last = r == args.rounds - 1 and rate == max(args.rate)
                        out = args.profile if last and side in profiled else None
                        with sampled(service.pid, out, args.py_spy):
                            measure(side, rate, public + PATH)
                    finally:
                        service.stop()
    print(
        f"open loop, {args.duration:.0f} s per measurement, {args.rounds} rounds (medians of the "
        "per-round percentiles); ms from the scheduled send to the whole answer"
    )
    print(f"{'rate':>5} {'':22} {'p50':>6} {'p90':>6} {'p99':>7} {'max':>7} {'gen late p99':>13}")
    for rate in args.rate:
        for side in sides:
            rows = figures[(side, rate)]
            row = {k: statistics.median(f[k] for f in rows) for k in rows[0]}
            print(
                f"{rate:>5.0f} {side:22} {row['p50']:>6.1f} {row['p90']:>6.1f} "
                f"{row['p99']:>7.1f} {row['max']:>7.1f} {row['late99']:>13.1f}"
            )
    print("target: p99 <= 20 ms at 200 requests/s")
    print(load_note(load))
    if args.profile:
        print(f"\nwhere {profiled[0]} spends its time ({args.profile}):")
        print(profile_summary(args.profile))


def prime(service: GuichetServe, url: str, token: str, account_sid: str) -> None:
    """Post one signed SMS and wait until the workers have processed it: they start once the
    models are loaded, which takes the service a few seconds after /healthz answers."""
    from twilio.request_validator import RequestValidator

    form = forms(1, account_sid, 10**8 - 1)[0]
    signature = RequestValidator(token).compute_signature(url, dict(form))
    # A loopback URL built right here.
    request = urllib.request.Request(  # noqa: S310
        url, data=urlencode(form).encode(), headers={"X-Twilio-Signature": signature}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        response.read()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if service.query("SELECT count(*) FROM contact WHERE step = 'done'")[0][0]:
            return
        time.sleep(0.2)
    raise SystemExit(f"the service's workers did not start: {service.log.read_text()[-2000:]}")


if __name__ == "__main__":
    main()
