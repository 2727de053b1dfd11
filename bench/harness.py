"""Shared parts of the benchmarks: loopback servers in their own processes, mail, `guichet serve`.

The benchmark scripts import this module; run as a script it is one of the servers they start
in a child process (``python bench/harness.py bare-smtp --port P``, see ``--help``), so the
server and the client never share an interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import queue
import random
import select
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOMAIN = "guichet.localhost"
RCPT = f"sinistres@{DOMAIN}"
#: Messages larger than Guichet's default limit are not what these scripts measure.
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
TRAINING = ROOT / "classifiers" / "training"
SUBJECTS = [
    "Demande de remboursement",
    "Mon dossier",
    "Question",
    "Déclaration de sinistre",
    "Pièces justificatives",
    "Re: votre message",
    "Suivi",
    "Assistance",
]
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100): a value that was actually observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def load_note(at_start: float) -> str:
    """The machine's 1-minute load average at the start and now: the benches share it."""
    return (
        f"machine: {os.cpu_count()} cores; 1-min load average {at_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end"
    )


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a live process: its resident-set high-water mark, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise LookupError(f"no VmHWM for process {pid}")


def children(pid: int) -> list[int]:
    """The direct children of a live process (all its threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


# --- mail -----------------------------------------------------------------------------------------


def corpus_messages() -> list[str]:
    """The project's hand-written training messages (five languages), as realistic bodies."""
    from classifiers.corpus import iter_text_items, read_corpus

    return [text for item, text in iter_text_items(read_corpus(TRAINING)) if item.kind == "message"]


def photo_jpeg(seed: int, size: tuple[int, int] = (300, 220)) -> bytes:
    """A small phone-photo-like JPEG (a receipt on a textured background), unique per seed."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    image = Image.effect_noise(size, 24).convert("RGB").filter(ImageFilter.GaussianBlur(1))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 20, size[0] - 40, size[1] - 20), fill=(236, 232, 224))
    for row in range(9):
        y = 35 + row * 24
        draw.text((55, y), f"TICKET {seed:06d}  ligne {row}  {rng.randint(1, 999)},{row}0 EUR", 0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


def text_email(
    seed: int, body: str, sender: str, attachments: Sequence[tuple[bytes, str, str]] = ()
) -> bytes:
    """A plain text email with a unique Message-ID; ``attachments`` are (bytes, mime, name)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = RCPT
    message["Subject"] = SUBJECTS[seed % len(SUBJECTS)]
    message["Message-ID"] = make_msgid(f"bench{seed}", "example.org")
    message["Date"] = format_datetime(datetime.now().astimezone())
    message.set_content(body)
    for content, mime, name in attachments:
        maintype, _, subtype = mime.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes(policy=SMTP_POLICY)


def rich_email(seed: int, body: str, sender: str) -> bytes:
    """About 20 KB, as most claim mail is: text and HTML alternatives, and a photo attached."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = RCPT
    message["Subject"] = f"Remboursement frais - envoi {seed}"
    message["Message-ID"] = make_msgid(f"bench{seed}", "example.org")
    message["Date"] = format_datetime(datetime.now().astimezone())
    message.set_content(body)
    paragraphs = "".join(f"<p>{line}</p>" for line in body.splitlines() if line.strip())
    message.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    message.add_attachment(
        photo_jpeg(seed), maintype="image", subtype="jpeg", filename=f"ticket-{seed}.jpg"
    )
    return message.as_bytes(policy=SMTP_POLICY)


def scanned_pdf(pages: Sequence[Sequence[str]], dpi: int = 200, seed: int = 0) -> bytes:
    """A text-less PDF as a scanner makes it: one page per list of lines, rendered from text,
    then rasterised to greyscale JPEG images with a little skew and speckle, so that only OCR
    can read them."""
    import pypdfium2
    from PIL import Image
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)
    buffer = io.BytesIO()
    sheet = canvas.Canvas(buffer, pagesize=A4)
    for number, lines in enumerate(pages, 1):
        sheet.setFont("Helvetica", 11)
        y = 790
        sheet.drawString(50, y, f"Page {number}/{len(pages)} - pièce n° {seed:06d}")
        for line in lines:
            y -= 20
            sheet.drawString(50, y, line)
        sheet.showPage()
    sheet.save()
    document = pypdfium2.PdfDocument(buffer.getvalue())
    images: list[Image.Image] = []
    for index in range(len(document)):
        image = document[index].render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
        image = image.rotate(rng.uniform(-1.2, 1.2), fillcolor=255)
        speckle = Image.effect_noise(image.size, 18).point(lambda v: 255 if v < 175 else 190)
        ink = image.point(lambda v: 255 if v < 250 else 0)
        images.append(Image.composite(image, speckle, ink))
    document.close()
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return out.getvalue()


@dataclass
class SendResult:
    elapsed: float
    #: Seconds since the start at which each message got its 250.
    accepted_at: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def send_messages(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    concurrency: int,
    per_connection: int = 50,
) -> SendResult:
    """Send (MAIL FROM, bytes) pairs over ``concurrency`` SMTP connections at once, each
    connection reused for up to ``per_connection`` messages (as an MTA does), then replaced."""
    work: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
    for item in messages:
        work.put(item)
    for _ in range(concurrency):
        work.put(None)
    result = SendResult(0.0)
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    started = 0.0

    def worker() -> None:
        client: smtplib.SMTP | None = None
        sent = 0
        start_gate.wait()
        while (item := work.get()) is not None:
            sender, raw = item
            try:
                if client is None or sent >= per_connection:
                    if client is not None:
                        client.quit()
                    client = smtplib.SMTP("127.0.0.1", port, timeout=120)
                    client.ehlo("bench.example.org")
                    sent = 0
                client.sendmail(sender, [RCPT], raw)
                sent += 1
                with lock:
                    result.accepted_at.append(time.perf_counter() - started)
            except (smtplib.SMTPException, OSError) as exc:
                # Counted, never retried: a refusal is a result the caller must see.
                with lock:
                    result.failures.append(f"{type(exc).__name__}: {exc}")
                if client is not None:
                    client.close()
                client = None
        if client is not None:
            client.quit()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - started
    return result


# --- servers in their own processes ---------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    #: What the server said after "ready" (the stand-in's address).
    info: str


@contextmanager
def server_process(role: str, *args: str, timeout: float = 60) -> Iterator[Server]:
    """Run ``harness.py ROLE ARGS`` and wait for its "ready" line; stopped at exit."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), role, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        word, _, info = line.strip().partition(" ")
        if word != "ready":
            raise RuntimeError(f"server {role} did not start (said {line!r})")
        yield Server(process, info)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Discard:
    """aiosmtpd handler that accepts every message and keeps nothing: the anchor."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK: discarded"


async def _run_until_stopped(start: Any) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    stop, info = await start()
    print(f"ready {info}".strip(), flush=True)
    await stopping.wait()
    await stop()


async def serve_bare_smtp(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()

    async def start() -> Any:
        server = await loop.create_server(
            lambda: SMTP(
                Discard(),
                data_size_limit=MAX_MESSAGE_BYTES,
                hostname=DOMAIN,
                enable_SMTPUTF8=True,
                decode_data=False,
                loop=loop,
            ),
            "127.0.0.1",
            port,
        )

        async def stop() -> None:
            server.close()

        return stop, ""

    await _run_until_stopped(start)


async def serve_guichet_smtp(port: int, home: Path) -> None:
    """Guichet's own SMTP intake on a SQLite store in ``home``, with no workers behind it."""
    from channels.email_smtp import SmtpIntake, smtp_factory
    from guichet.service import freeze_what_is_loaded
    from guichet.settings import load_settings
    from models import migrate
    from models.store import Store

    settings = load_settings(environ={"GUICHET_HOME": str(home)})
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
    store = Store.open(settings.effective_database_url, settings.blob_dir)
    loop = asyncio.get_running_loop()

    async def start() -> Any:
        intake = SmtpIntake(store, settings.mail_domains)
        factory = smtp_factory(intake, settings.reply_domain, settings.smtp_max_message_bytes)
        server = await loop.create_server(factory, "127.0.0.1", port)
        # As ``guichet serve`` does once started.
        freeze_what_is_loaded()

        async def stop() -> None:
            server.close()
            await store.close()

        return stop, ""

    await _run_until_stopped(start)


async def serve_bare_twiml(port: int, path: str) -> None:
    """An aiohttp app that reads the form and answers the empty TwiML: the webhook anchor."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=EMPTY_TWIML.encode(), content_type="text/xml", charset="utf-8")

    async def start() -> Any:
        app = web.Application()
        app.router.add_post(path, answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner.cleanup, ""

    await _run_until_stopped(start)


async def serve_twilio_api(account_sid: str, auth_token: str) -> None:
    """The project's stand-in of Twilio's REST API (the one allowed in tests): where the
    service's SMS replies go. Says its base URL after "ready"."""
    from tests.channels.twilio_standin import TwilioStandIn

    standin = TwilioStandIn(account_sid=account_sid, auth_token=auth_token)

    async def start() -> Any:
        await standin.start()
        return standin.close, standin.api_base

    await _run_until_stopped(start)


# --- the whole service ----------------------------------------------------------------------------


class GuichetServe:
    """``guichet serve`` in a child process with its own home (SQLite, or the PostgreSQL
    database ``extra_env`` names), ports and relay; ``guichet worker`` processes beside it."""

    def __init__(self, home: Path, relay_port: int, extra_env: Mapping[str, str] | None = None):
        self.home = home
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.env = {
            **os.environ,
            "GUICHET_HOME": str(home),
            "GUICHET_HTTP_PORT": str(self.http_port),
            "GUICHET_SMTP_PORT": str(self.smtp_port),
            "GUICHET_SMTP_RELAY": f"127.0.0.1:{relay_port}",
            "GUICHET_MAIL_DOMAINS": DOMAIN,
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.log = home / "serve.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def database(self) -> Path:
        return self.home / "guichet.sqlite3"

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "guichet.cli", *args],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=600,
        )

    def start(self, *args: str, wrapper: Sequence[str] = ()) -> None:
        """Start the service (``wrapper`` goes before it: a profiler) and wait for /healthz."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*wrapper, sys.executable, "-m", "guichet.cli", "serve", *args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"guichet serve exited: {self.log.read_text()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{self.http_port}/healthz"
                # A loopback URL built right here.
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"guichet serve did not come up: {self.log.read_text()[-3000:]}")

    def start_workers(self, count: int) -> None:
        """``count`` ``guichet worker`` processes beside the service (PostgreSQL only)."""
        for n in range(count):
            with (self.home / f"worker-{n}.log").open("ab") as log:
                self.workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "guichet.cli", "worker"],
                        env=self.env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def stop(self) -> None:
        for process in [*self.workers, self.process]:
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.process]:
            if process is None:
                continue
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the service's database beside it: its SQLite file (WAL: readers do not block
        it), or the PostgreSQL database ``GUICHET_DATABASE_URL`` names (``?`` placeholders)."""
        url = self.env.get("GUICHET_DATABASE_URL", "")
        if url.startswith("postgresql"):
            import psycopg
            from sqlalchemy.engine import make_url

            libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
            with psycopg.connect(libpq) as db:
                return list(db.execute(sql.replace("?", "%s"), params).fetchall())
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            return list(db.execute(sql, params))


def add_profile_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="OUT",
        help=f"sample {what} with py-spy (--gil), keep the raw profile in OUT, print its top",
    )
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy"),
        help="the py-spy executable (pip install py-spy, outside the project)",
    )


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the server ``server_url`` names, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"guichet_bench_{os.getpid()}"
    admin = server.set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name}")
        db.execute(f"CREATE DATABASE {name}")
    try:
        yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def sampled(pid: int, out: Path | None, py_spy: str | None) -> Iterator[None]:
    """py-spy on ``pid`` while the block runs (nothing when ``out`` is None). ``--gil``: only
    the thread holding the GIL is sampled, which is where a Python server's CPU goes."""
    if out is None:
        yield
        return
    if not py_spy:
        raise SystemExit("--profile needs py-spy (pip install py-spy, outside the project)")
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--gil",
            "-r",
            "200",
            "--format",
            "raw",
            "-o",
            str(out),
            "--pid",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=120)


def profile_summary(path: Path, top: int = 15) -> str:
    """The functions of Guichet's own packages where a py-spy ``--format raw`` profile spent
    its samples (inclusive), then the frames that were on top of the stack (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_frame(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    if not total:
        return "no samples"
    mine = [
        (frame, n)
        for frame, n in inclusive.most_common()
        if frame.split(" ", 1)[1].split("/")[0] in PACKAGES
    ][:top]
    lines = [f"{total} samples; inclusive, Guichet's code:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in mine]
    lines.append("self (top of stack), any code:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


PACKAGES = {"guichet", "channels", "intake", "classifiers", "responders", "models"}


def _frame(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func module-path`` relative to the checkout or to
    site-packages, without the line number."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0]
    for marker in (str(ROOT) + "/", "site-packages/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} {where}"


def parse_time(value: str | datetime) -> datetime:
    """A timestamp as the database gives it: text from SQLite, a datetime from PostgreSQL."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["bare-smtp", "guichet-smtp", "bare-twiml", "twilio-api"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account", default="", help="twilio-api: the account SID")
    parser.add_argument("--token", default="", help="twilio-api: the auth token")
    parser.add_argument("--home", type=Path, help="guichet-smtp: the data folder")
    parser.add_argument("--path", default="/channels/twilio/sms", help="bare-twiml: the path")
    args = parser.parse_args()
    if args.role == "bare-smtp":
        asyncio.run(serve_bare_smtp(args.port))
    elif args.role == "guichet-smtp":
        if args.home is None:
            parser.error("guichet-smtp needs --home")
        asyncio.run(serve_guichet_smtp(args.port, args.home))
    elif args.role == "bare-twiml":
        asyncio.run(serve_bare_twiml(args.port, args.path))
    else:
        asyncio.run(serve_twilio_api(args.account, args.token))


if __name__ == "__main__":
    main()
