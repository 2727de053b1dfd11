"""A throw-away Dovecot IMAP server on loopback for the IMAP channel tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient

from tests.conftest import free_port

DOVECOT = "/usr/sbin/dovecot"
USER = "claims"
PASSWORD = "s3cret-imap"
OTHER_USER = "providers"
OTHER_PASSWORD = "an0ther-imap"

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
{accounts}
mail_location = maildir:{root}/mail/%u
# IDLE learns of new mail through inotify, and falls back to a 30 s check when the machine
# runs out of inotify instances (many Dovecots and test processes at once): check each second.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
# XOAUTH2: bearer tokens are JWTs checked locally against a shared HS256 key (no IdP needed).
passdb {{
  driver = oauth2
  mechanisms = xoauth2
  args = {root}/oauth2.conf.ext
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
  default_fields = uid={mail_uid} gid={mail_gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class Dovecot:
    """Dovecot in the foreground (``-F``) with its own config, mail folder, sockets and log.

    Dovecot never serves mail as root and its login processes refuse root. So when the tests
    run as root (CI), the server gets its own folder under the system temporary folder that
    Dovecot's accounts can enter (pytest's tmp_path is private to root) and the mail belongs
    to ``nobody``; otherwise everything runs as the tests' own account under ``tmp_path``.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.as_root = os.getuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-")) if self.as_root else tmp_path
        self.port = free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        self.oauth_key = secrets.token_bytes(32)
        self._configure()

    def token(self, user: str = USER, valid_seconds: int = 600) -> str:
        """An OAuth2 access token (a signed JWT) this server accepts for ``user``."""

        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        claims = {"sub": user, "iat": now, "nbf": now - 5, "exp": now + valid_seconds}
        header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
        signed = f"{part(header)}.{part(json.dumps(claims).encode())}"
        signature = hmac.new(self.oauth_key, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{part(signature)}"

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    def _configure(self) -> None:
        if self.as_root:
            nobody = pwd.getpwnam("nobody")
            mail_uid, mail_gid, accounts = nobody.pw_uid, nobody.pw_gid, ""
            self.root.chmod(0o755)
        else:
            mail_uid, mail_gid = os.getuid(), os.getgid()
            user = pwd.getpwuid(mail_uid).pw_name
            accounts = (
                f"default_internal_user = {user}\ndefault_login_user = {user}\n"
                f"default_internal_group = {os.getgid()}\n"
            )
        for folder in ("mail", "home"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
            os.chown(self.root / folder, mail_uid, mail_gid)
        (self.root / "dovecot.conf").write_text(
            _CONFIG.format(
                root=self.root,
                port=self.port,
                accounts=accounts,
                mail_uid=mail_uid,
                mail_gid=mail_gid,
            )
        )
        keys = self.root / "keys" / "default" / "HS256"
        keys.mkdir(parents=True, exist_ok=True)
        (keys / "default").write_text(base64.b64encode(self.oauth_key).decode())
        (self.root / "oauth2.conf.ext").write_text(
            "introspection_mode = local\n"
            f"local_validation_key_dict = fs:posix:prefix={self.root}/keys/\n"
            "username_attribute = sub\n"
        )
        passwd = self.root / "passwd"
        passwd.write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}::::::\n{OTHER_USER}:{{PLAIN}}{OTHER_PASSWORD}::::::\n"
        )
        passwd.chmod(0o644)

    def start(self) -> None:
        with (self.root / "dovecot.stderr").open("ab") as stderr:
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # Its own process group: stopping it must end the imap processes too, which
                # outlive their master and would keep serving clients.
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"dovecot did not listen on port {self.port}:\n{self.tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        if self.as_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self) -> str:
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-5000:]}")
        return "\n".join(parts) or "(no log)"

    def client(self, user: str = USER, password: str = PASSWORD) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        client.login(user, password)
        return client

    def append(
        self, raw: bytes, folder: str = "INBOX", user: str = USER, password: str = PASSWORD
    ) -> None:
        with self.client(user, password) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, raw)
