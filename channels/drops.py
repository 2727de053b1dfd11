"""The shared drop-folder watcher: polls a folder and hands over each file once it is stable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

DONE = "done"
ERROR = "error"
#: Names a writer uses while a file is still being written (browsers, rsync, office suites).
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
REASON_SUFFIX = ".reason.txt"


class TryLater(Exception):
    """Raised by a handler when the file is fine but cannot be taken now (the store is down):
    the file stays where it is and is handed over again once it has been stable once more."""


def is_ignored(name: str) -> bool:
    """Hidden and temporary names are someone else's work in progress, never a drop."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


def sidecar_of(path: Path, suffix: str) -> Path:
    """The sidecar that belongs to ``path``: ``scan.pdf`` -> ``scan.pdf.json``."""
    return path.with_name(path.name + suffix)


def _free_name(folder: Path, name: str, extras: Sequence[str]) -> str:
    """``name``, or ``stem-N.ext`` with the first N such that neither it nor any of its
    companions (``name + extra``) exists in ``folder``: nothing there is ever overwritten."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    candidate, n = name, 1
    while any(os.path.lexists(folder / (candidate + extra)) for extra in ("", *extras)):
        n += 1
        candidate = f"{stem}-{n}{dot}{ext}"
    return candidate


def _move(path: Path, subfolder: str, companions: Sequence[Path]) -> Path:
    """Move ``path`` and its companions (``path.name + extra``, e.g. a sidecar) together, under
    one free name, so that they stay paired even after a rename."""
    target = path.parent / subfolder
    target.mkdir(parents=True, exist_ok=True)
    extras = [c.name[len(path.name) :] for c in companions]
    if any(
        not c.name.startswith(path.name) or not extra
        for c, extra in zip(companions, extras, strict=True)
    ):
        raise ValueError(f"companions of {path.name} must be named {path.name}<suffix>")
    name = _free_name(target, path.name, [*extras, REASON_SUFFIX])
    destination = target / name
    os.rename(path, destination)
    for companion, extra in zip(companions, extras, strict=True):
        try:
            os.rename(companion, target / (name + extra))
        except FileNotFoundError:
            log.warning("%s vanished before it could be moved to %s/", companion, subfolder)
    return destination


def move_done(path: Path, *, companions: Sequence[Path] = ()) -> Path:
    """Move a handled file (and its ``companions``, e.g. its sidecar) into ``done/``."""
    return _move(path, DONE, companions)


def move_error(path: Path, reason: str, *, companions: Sequence[Path] = ()) -> Path:
    """Move a refused file (and its companions) into ``error/`` with ``NAME.reason.txt``."""
    destination = _move(path, ERROR, companions)
    destination.with_name(destination.name + REASON_SUFFIX).write_text(
        reason.rstrip("\n") + "\n", encoding="utf-8"
    )
    return destination


@dataclass
class _Seen:
    """What the last poll saw of one file, and since when it has not changed."""

    signature: tuple[int, int]
    since: float
    order: int


class DropFolder:
    """Watches ``folder`` by polling and calls ``handle(path)`` once per stable file.

    A file is stable when its size and mtime stayed unchanged for ``stable_seconds``. With a
    ``sidecar_suffix`` (".json" for GED), ``NAME.json`` is not a drop of its own while ``NAME``
    exists: the main file waits until its sidecar is stable too, and the handler reads both.
    Files are handled one at a time, in the order they were first seen. The handler moves the
    file away (``move_done`` / ``move_error``); should it raise, the watcher moves the file
    to ``error/`` with the exception as reason, and goes on with the next one; should it raise
    ``TryLater``, the file stays and is handed over again later.
    """

    def __init__(
        self,
        folder: Path,
        handle: Callable[[Path], Awaitable[None]],
        *,
        stable_seconds: float,
        poll_seconds: float,
        name: str,
        sidecar_suffix: str | None = None,
        orphan_sidecar_seconds: float | None = None,
    ) -> None:
        self.folder = folder
        self.handle = handle
        self.stable_seconds = stable_seconds
        self.poll_seconds = poll_seconds
        self.name = name
        self.sidecar_suffix = sidecar_suffix
        # A sidecar written before its scan must not be mistaken for a lonely drop at once.
        self.orphan_sidecar_seconds = (
            orphan_sidecar_seconds
            if orphan_sidecar_seconds is not None
            else max(60.0, 10 * stable_seconds)
        )
        self._seen: dict[str, _Seen] = {}
        # Files the watcher could move neither way (permissions): skipped until they change.
        self._stuck: dict[str, tuple[int, int]] = {}
        self._counter = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def routes(self) -> Sequence[web.RouteDef]:
        return ()

    async def start(self) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        self._stopping.clear()
        self._task = asyncio.create_task(self._watch(), name=f"drop-folder-{self.name}")
        log.info("%s: watching %s", self.name, self.folder)

    async def stop(self) -> None:
        """Let the file in hand finish (it may be half way into the store), then stop."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def poll_once(self) -> int:
        """One pass: handle every file that is stable now. Returns how many were handled."""
        listing = await asyncio.to_thread(self._list)
        ready = self._ready(listing)
        for path in ready:
            if self._stopping.is_set():
                break
            await self._handle_one(path)
        return len(ready)

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except Exception:
                # A folder unmounted or unreadable for a while: say so, keep watching.
                log.exception("%s: could not scan %s", self.name, self.folder)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)

    def _list(self) -> dict[str, tuple[int, int]]:
        """Size and mtime of every candidate file, read off the event loop."""
        found: dict[str, tuple[int, int]] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_ignored(entry.name):
                    continue
                try:
                    if not entry.is_file():
                        continue  # done/, error/ and any other folder
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # removed between the listing and the stat
                found[entry.name] = (stat.st_size, stat.st_mtime_ns)
        return found

    def _ready(self, listing: dict[str, tuple[int, int]]) -> list[Path]:
        now = time.monotonic()
        for gone in set(self._seen) - set(listing):
            del self._seen[gone]
        for name in set(self._stuck) - set(listing):
            del self._stuck[name]
        for name, signature in listing.items():
            seen = self._seen.get(name)
            if seen is None:
                self._counter += 1
                self._seen[name] = _Seen(signature, now, self._counter)
            elif seen.signature != signature:
                seen.signature, seen.since = signature, now

        def stable(name: str) -> bool:
            seen = self._seen[name]
            return now - seen.since >= self.stable_seconds and self._stuck.get(name) != (
                seen.signature
            )

        ready: list[str] = []
        suffix = self.sidecar_suffix
        for name in listing:
            if suffix and name.endswith(suffix) and name[: -len(suffix)]:
                if name[: -len(suffix)] in listing:
                    continue  # taken with its main file
                if now - self._seen[name].since < self.orphan_sidecar_seconds:
                    continue  # its main file may still be on its way
            if not stable(name):
                continue
            if suffix and name + suffix in listing and not stable(name + suffix):
                continue  # the sidecar is still being written
            ready.append(name)
        ready.sort(key=lambda n: self._seen[n].order)
        return [self.folder / n for n in ready]

    async def _handle_one(self, path: Path) -> None:
        companions = await asyncio.to_thread(self._companions, path)
        try:
            await self.handle(path)
        except TryLater as exc:
            log.warning("%s: %s left for a later pass: %s", self.name, path.name, exc)
            seen = self._seen.get(path.name)
            if seen is not None:
                seen.since = time.monotonic()
            return
        except FileNotFoundError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await asyncio.to_thread(self._after_failure, path, reason, companions, logged=False)
        except Exception as exc:
            log.exception("%s: handling %s failed", self.name, path.name)
            reason = f"{type(exc).__name__}: {exc}"
            await asyncio.to_thread(self._after_failure, path, reason, companions, logged=True)
        else:
            await asyncio.to_thread(self._after_success, path, companions)
        self._seen.pop(path.name, None)

    def _companions(self, path: Path) -> list[Path]:
        if self.sidecar_suffix is None:
            return []
        sidecar = sidecar_of(path, self.sidecar_suffix)
        return [sidecar] if sidecar.exists() else []

    def _after_failure(
        self, path: Path, reason: str, companions: Sequence[Path], *, logged: bool
    ) -> None:
        if not path.exists():
            # Taken away while being read (the mailroom changed its mind): nothing to move,
            # and nothing to retry either.
            log.warning("%s: %s vanished while it was being handled; skipped", self.name, path)
            return
        if not logged:
            log.error("%s: handling %s failed: %s", self.name, path.name, reason)
        self._settle(path, companions, reason)

    def _after_success(self, path: Path, companions: Sequence[Path]) -> None:
        if path.exists():
            # The handler forgot to move it: never take the same file twice.
            log.warning("%s: handler left %s in place; moving it to done/", self.name, path)
            self._settle(path, companions, None)

    def _settle(self, path: Path, companions: Sequence[Path], reason: str | None) -> None:
        """Move to error/ (with ``reason``) or done/; a file that cannot be moved is
        remembered and left alone until it changes, so it never loops."""
        present = [c for c in companions if c.exists()]
        try:
            if reason is None:
                destination = move_done(path, companions=present)
            else:
                destination = move_error(path, reason, companions=present)
        except FileNotFoundError:
            log.warning("%s: %s vanished before it could be moved", self.name, path)
        except OSError as exc:
            log.error("%s: cannot move %s (%s); skipping it until it changes", self.name, path, exc)
            seen = self._seen.get(path.name)
            if seen is not None:
                self._stuck[path.name] = seen.signature
        else:
            log.info("%s: %s -> %s", self.name, path.name, destination)
