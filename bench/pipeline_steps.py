"""Where a text contact's time goes: wall time per pipeline step, one worker, in this process.

Usage: .venv/bin/python bench/pipeline_steps.py [--contacts N] [--warm-up W]

A diagnostic beside bench/end_to_end.py, not a comparison: text emails are stored through the
SMTP path's ``ingest_email`` (SQLite in a temporary home, demo data loaded), then one embedded
runner works through their jobs (``run_pending``) with each step of the contact pipeline and
the delivery of the acknowledgement (to an accept-and-discard SMTP relay in another process)
timed. W contacts are processed first and not counted, so that the models and the language
detector are loaded. Prints milliseconds per contact for each step; what is left of the total
is the job queue itself (claim, complete: a transaction each) and the step lookups.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, corpus_messages, free_port, load_note, server_process, text_email

sys.path.insert(0, str(ROOT))

from channels import delivery
from channels.email_smtp import ingest_email
from guichet.parts import open_store
from guichet.service import build_runner
from guichet.settings import load_settings
from intake import pipeline, understand
from intake.reading import OcrPool
from models.store import Envelope

SPENT: defaultdict[str, float] = defaultdict(float)
MODELS = "models"
DELIVER = "deliver (ack to relay)"


def timed(name: str, step: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await step(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    return wrapper


def timed_sync(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    return wrapper


async def measure(environ: dict[str, str], contacts: int, warm_up: int) -> tuple[float, int]:
    settings = load_settings(environ=environ)
    store = open_store(settings)
    ocr = OcrPool(settings.ocr_pool_size)
    texts = corpus_messages()
    try:
        runner = build_runner(settings, store, ocr)
        for phase, count, first in (("warm-up", warm_up, 10**6), ("measure", contacts, 0)):
            for n in range(first, first + count):
                sender = f"assure{n}@example.org"
                raw = text_email(n, texts[n % len(texts)], sender)
                await ingest_email(store, raw, Envelope(sender=sender))
            SPENT.clear()
            started = time.perf_counter()
            jobs = await runner.run_pending()
            elapsed = time.perf_counter() - started
            if phase == "measure":
                return elapsed, jobs
        raise AssertionError("unreachable")
    finally:
        ocr.shutdown()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=60)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    for name, step in list(pipeline.STEPS.items()):
        pipeline.STEPS[name] = timed(name, step)
    # Wrapped on the class, so the runner's handler built below is timed too.
    setattr(delivery.OutboxDelivery, "run", timed(DELIVER, delivery.OutboxDelivery.run))  # noqa: B010
    understand._qualify = timed_sync(MODELS, understand._qualify)
    with (
        tempfile.TemporaryDirectory(prefix="guichet-bench-") as home,
        server_process("bare-smtp", "--port", str(relay := free_port())),
    ):
        environ = {
            **os.environ,
            "GUICHET_HOME": home,
            "GUICHET_SMTP_RELAY": f"127.0.0.1:{relay}",
        }
        for command in (["db", "upgrade"], ["demo"]):
            subprocess.run(
                [sys.executable, "-m", "guichet.cli", *command],
                env=environ,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        elapsed, jobs = asyncio.run(measure(environ, args.contacts, args.warm_up))
    per = 1000 / args.contacts
    print(
        f"{args.contacts} text contacts, {jobs} jobs, one worker: {elapsed * per:.1f} ms per "
        f"contact ({args.contacts / elapsed:.1f} contacts/s)"
    )
    for name in pipeline.STEPS:
        print(f"  {name:24} {SPENT[name] * per:6.1f} ms")
        if name == "classify":
            print(f"    {'of which the models':22} {SPENT[MODELS] * per:6.1f} ms")
    print(f"  {DELIVER:24} {SPENT[DELIVER] * per:6.1f} ms")
    rest = elapsed - sum(v for k, v in SPENT.items() if k != MODELS)
    print(f"  {'job queue, step lookups':24} {rest * per:6.1f} ms")
    print(load_note(load))


if __name__ == "__main__":
    main()
