"""Run the real ``guichet`` service in a subprocess for end-to-end and crash tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from guichet import auth
from guichet.settings import load_settings
from models import migrate
from models.store import Store
from models.tables import User
from tests.conftest import free_port

DOMAIN = "guichet.localhost"


class GuichetProcess:
    """``guichet serve`` with its own home, ports and relay; restartable on the same data."""

    def __init__(
        self,
        home: Path,
        relay_port: int,
        extra_env: Mapping[str, str] | None = None,
        command: Sequence[str] = ("serve",),
        log_name: str = "serve.log",
    ) -> None:
        self.home = home
        self.command = tuple(command)
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.env = {
            **os.environ,
            "GUICHET_HOME": str(home),
            "GUICHET_HTTP_PORT": str(self.http_port),
            "GUICHET_SMTP_PORT": str(self.smtp_port),
            "GUICHET_SMTP_RELAY": f"127.0.0.1:{relay_port}",
            "GUICHET_MAIL_DOMAINS": DOMAIN,
            "GUICHET_JOB_BACKOFF_SECONDS": "0.3",
            "GUICHET_JOB_POLL_SECONDS": "0.2",
            "GUICHET_OCR_PROCESSES": "1",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.log = home / log_name

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "guichet.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    async def _ensure_token(self) -> None:
        """An admin account and its API token, made once in the service's own database: every
        API route is behind the login, as in production."""
        if self.token:
            return
        settings = load_settings(environ=self.env)
        await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
        store = Store.open(settings.effective_database_url, settings.blob_dir)
        try:
            async with store.sessions() as session, session.begin():
                known = await session.scalar(select(User.id).where(User.username == "tester"))
                if known is None:
                    await auth.add_user(session, "tester", "tester password", role="admin")
                self.token = await auth.create_token(session, "tester", label="tests")
        finally:
            await store.close()

    async def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        await self._ensure_token()
        with self.log.open("ab") as log:
            # Popen only forks; the waiting happens below, asynchronously.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "guichet.cli", *self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"guichet {self.command[0]} exited: {self.log.read_text()[-3000:]}"
                )
            if self.command[0] == "worker":
                # A worker has no HTTP port: it says when it is taking jobs.
                if b"Guichet worker is running" in self.log.read_bytes():
                    return
                await asyncio.sleep(0.1)
                continue
            try:
                if (await self.get("/healthz"))["status"] == "ok":
                    return
            except OSError:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"guichet serve did not come up: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, body if body is not None else {})

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request to the API with the test admin's token; returns the decoded body."""

        def fetch() -> Any:
            url = f"http://127.0.0.1:{self.http_port}{path}"
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            # A loopback http URL built right here: no scheme from outside to audit.
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())

        return await asyncio.to_thread(fetch)

    async def send(
        self,
        raw: bytes,
        rcpt: str = f"sinistres@{DOMAIN}",
        mail_from: str = "jean.dupont@example.org",
    ) -> tuple[int, bytes]:
        """One SMTP conversation; returns the reply to DATA, or the first refusal."""

        def conversation() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60) as client:
                client.ehlo()
                for code, reply in (client.mail(mail_from), client.rcpt(rcpt)):
                    if code != 250:
                        return code, reply
                return client.data(raw)

        return await asyncio.to_thread(conversation)

    async def wait_contact(
        self, contact_id: int, statuses: tuple[str, ...], timeout: float = 90
    ) -> Any:
        contact: Any = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    contact = await self.get(f"/api/contacts/{contact_id}")
                    # Reminders wait in the queue for days: only what is due now must have left.
                    due = [r for r in contact["replies"] if not r.get("send_after")]
                    if (
                        contact["status"] in statuses
                        and contact.get("step") == "done"
                        and all(r["status"] not in ("queued", "sending") for r in due)
                    ):
                        return contact
                    await asyncio.sleep(0.2)
        except TimeoutError:
            # Say where it stood: a bare timeout tells nothing about a flaky end-to-end run.
            raise AssertionError(
                f"contact {contact_id} not {statuses} after {timeout}s: {contact!r}\n"
                f"service log tail:\n{self.log.read_text()[-4000:]}"
            ) from None
