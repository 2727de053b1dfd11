"""Who is asking: argon2 passwords, login sessions with CSRF tokens, API bearer tokens, roles."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.clock import utcnow
from models.store import audit
from models.tables import ApiToken, User, WebSession

ROLES = ("gestionnaire", "superviseur", "admin")
#: Each role may do what the roles before it may.
RANK = {role: n for n, role in enumerate(ROLES)}
SESSION_LIFETIME = timedelta(hours=12)
TOKEN_PREFIX = "gch_"  # noqa: S105 - a recognisable prefix, not a secret
MIN_PASSWORD_LENGTH = 4

_hasher = PasswordHasher()
# Verified against when the user does not exist, so that a wrong name costs as long as a wrong
# password and response times do not tell which usernames exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccessError(ValueError):
    """A user or token operation that cannot be done (unknown user, bad role, weak password)."""


@dataclass(frozen=True)
class Identity:
    """The person (or integration) behind a request."""

    user_id: int
    username: str
    display_name: str
    role: str
    #: "session" (browser, CSRF-checked) or "token" (integration, no cookie to forge).
    via: str
    csrf_token: str | None = None

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def digest(token: str) -> str:
    """Session and API tokens are long random strings: a plain digest is enough to keep them."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccessError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


async def _user(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise AccessError(f"no user {username!r}")
    return user


async def add_user(
    session: AsyncSession,
    username: str,
    password: str,
    *,
    role: str = "gestionnaire",
    display_name: str = "",
    actor: str = "cli",
) -> User:
    name = username.strip().lower()
    if not name or not name.replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise AccessError(f"username {username!r}: letters, digits, '.', '-' and '_' only")
    if role not in ROLES:
        raise AccessError(f"role {role!r}: one of {', '.join(ROLES)}")
    if await session.scalar(select(User.id).where(User.username == name)) is not None:
        raise AccessError(f"user {name!r} already exists")
    user = User(
        username=name,
        display_name=display_name or name,
        role=role,
        password_hash=hash_password(password),
        active=True,
    )
    session.add(user)
    await session.flush()
    audit(session, actor, "user.added", "user", user.id, after={"username": name, "role": role})
    return user


async def set_password(
    session: AsyncSession, username: str, password: str, *, actor: str = "cli"
) -> None:
    user = await _user(session, username)
    user.password_hash = hash_password(password)
    # A new password ends every open session: whoever knew the old one is logged out.
    await _end_sessions(session, user.id)
    audit(session, actor, "user.password_changed", "user", user.id)


async def disable_user(session: AsyncSession, username: str, *, actor: str = "cli") -> None:
    user = await _user(session, username)
    user.active = False
    await _end_sessions(session, user.id)
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    audit(session, actor, "user.disabled", "user", user.id, before={"active": True})


async def _end_sessions(session: AsyncSession, user_id: int) -> None:
    await session.execute(
        update(WebSession).where(WebSession.user_id == user_id).values(expires_at=utcnow())
    )


async def create_token(
    session: AsyncSession, username: str, *, label: str = "", actor: str = "cli"
) -> str:
    """A new API token for ``username``; the only time it exists in clear is this return."""
    user = await _user(session, username)
    if not user.active:
        raise AccessError(f"user {user.username!r} is disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(token_hash=digest(token), user_id=user.id, label=label)
    session.add(row)
    await session.flush()
    audit(session, actor, "token.created", "user", user.id, note=f"token {row.id} {label}".strip())
    return token


async def check_password(session: AsyncSession, username: str, password: str) -> User | None:
    """The active user with this name and password, or None (same cost either way)."""
    user = await session.scalar(select(User).where(User.username == username.strip().lower()))
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active or stored is _DUMMY_HASH:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return user


async def open_session(session: AsyncSession, user: User) -> tuple[str, str]:
    """Start a login: returns the cookie token and the session's CSRF token."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = utcnow()
    session.add(
        WebSession(
            token_hash=digest(token),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    audit(session, user.username, "user.login", "user", user.id)
    return token, csrf


async def close_session(session: AsyncSession, token: str) -> None:
    row = await session.scalar(select(WebSession).where(WebSession.token_hash == digest(token)))
    if row is not None:
        row.expires_at = utcnow()
        audit(session, "web", "user.logout", "user", row.user_id)


async def session_identity(session: AsyncSession, token: str) -> Identity | None:
    now = utcnow()
    found = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == digest(token))
        )
    ).first()
    if found is None:
        return None
    row, user = found
    if row.expires_at <= now or not user.active:
        return None
    row.last_seen_at = now
    return Identity(user.id, user.username, user.display_name, user.role, "session", row.csrf_token)


async def token_identity(session: AsyncSession, token: str) -> Identity | None:
    found = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == digest(token))
        )
    ).first()
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or not user.active:
        return None
    row.last_used_at = utcnow()
    return Identity(user.id, user.username, user.display_name, user.role, "token")


def same_secret(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))


class LoginThrottle:
    """Failed logins per (username, address) within a window: past the limit, refuse for a
    while without even checking the password, so guessing costs the guesser time."""

    def __init__(
        self,
        limit: int = 5,
        window_seconds: float = 900,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._failures: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] < self.clock() - self.window:
            failures.popleft()
        return failures

    def blocked(self, username: str, address: str) -> bool:
        return len(self._recent((username.lower(), address))) >= self.limit

    def failed(self, username: str, address: str) -> None:
        self._recent((username.lower(), address)).append(self.clock())

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop((username.lower(), address), None)


def any_of(paths: Iterable[str], path: str) -> bool:
    """Whether ``path`` is one of ``paths`` or below one of those ending in ``/``."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in paths)
