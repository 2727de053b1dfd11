"""The drop-folder watcher on a real folder: stability, ignored names, failures, collisions."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from channels.drops import DropFolder, TryLater, move_done, move_error

STABLE = 0.3
POLL = 0.05


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(POLL)


def watcher(
    folder: Path,
    handle: Callable[[Path], Awaitable[None]],
    *,
    sidecar_suffix: str | None = None,
    orphan_sidecar_seconds: float | None = None,
) -> DropFolder:
    return DropFolder(
        folder,
        handle,
        stable_seconds=STABLE,
        poll_seconds=POLL,
        name="test",
        sidecar_suffix=sidecar_suffix,
        orphan_sidecar_seconds=orphan_sidecar_seconds,
    )


class Recorder:
    """A handler that keeps what it read and files it in done/."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, path: Path) -> None:
        content = await asyncio.to_thread(path.read_bytes)
        self.seen.append((path.name, content))
        await asyncio.to_thread(move_done, path)


async def test_a_file_written_in_chunks_is_taken_once_stable(tmp_path: Path) -> None:
    recorder = Recorder()
    drops = watcher(tmp_path, recorder)
    await drops.start()
    try:
        target = tmp_path / "scan.pdf"
        with target.open("wb") as out:
            for n in range(6):
                out.write(bytes([n]) * 1000)
                out.flush()
                await asyncio.sleep(STABLE / 2)
                assert recorder.seen == [], "taken while still being written"
        await eventually(lambda: len(recorder.seen) == 1)
        await asyncio.sleep(STABLE * 2)
    finally:
        await drops.stop()
    assert recorder.seen == [("scan.pdf", b"".join(bytes([n]) * 1000 for n in range(6)))]
    assert (tmp_path / "done" / "scan.pdf").read_bytes() == recorder.seen[0][1]
    assert not target.exists()


async def test_hidden_temporary_and_subfolder_entries_are_ignored(tmp_path: Path) -> None:
    ignored = [".hidden.pdf", "upload.pdf.part", "copy.tmp", "~lock.pdf", "x.PART"]
    for name in ignored:
        (tmp_path / name).write_bytes(b"not yet")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "inner.pdf").write_bytes(b"inner")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "old.pdf").write_bytes(b"old")
    (tmp_path / "real.pdf").write_bytes(b"real")
    recorder = Recorder()
    drops = watcher(tmp_path, recorder)
    await drops.start()
    try:
        await eventually(lambda: len(recorder.seen) == 1)
        await asyncio.sleep(STABLE * 2)
    finally:
        await drops.stop()
    assert recorder.seen == [("real.pdf", b"real")]
    for name in ignored:
        assert (tmp_path / name).read_bytes() == b"not yet"
    assert (tmp_path / "nested" / "inner.pdf").exists()
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["old.pdf", "real.pdf"]


async def test_a_failing_handler_sends_the_file_to_error_and_the_next_goes_on(
    tmp_path: Path,
) -> None:
    handled: list[str] = []

    async def handle(path: Path) -> None:
        handled.append(path.name)
        if path.name.startswith("bad"):
            raise ValueError("not a document we know")
        await asyncio.to_thread(move_done, path)

    # Arrival order: the bad file first, then the good one; both already stable.
    (tmp_path / "bad.pdf").write_bytes(b"bad")
    old = time.time() - 60
    os.utime(tmp_path / "bad.pdf", (old, old))
    drops = watcher(tmp_path, handle)
    await drops.start()
    try:
        await asyncio.sleep(POLL * 2)
        (tmp_path / "good.pdf").write_bytes(b"good")
        await eventually(lambda: (tmp_path / "done" / "good.pdf").exists())
        await asyncio.sleep(STABLE * 2)
    finally:
        await drops.stop()
    assert handled == ["bad.pdf", "good.pdf"]
    assert (tmp_path / "error" / "bad.pdf").read_bytes() == b"bad"
    reason = (tmp_path / "error" / "bad.pdf.reason.txt").read_text(encoding="utf-8")
    assert reason == "ValueError: not a document we know\n"


async def test_a_file_vanishing_mid_read_is_skipped_not_retried(tmp_path: Path) -> None:
    calls: list[str] = []

    async def handle(path: Path) -> None:
        calls.append(path.name)
        if path.name == "gone.pdf":
            # The mailroom took it back while we were reading it.
            await asyncio.to_thread(path.unlink)
            await asyncio.to_thread(path.read_bytes)
        await asyncio.to_thread(move_done, path)

    (tmp_path / "gone.pdf").write_bytes(b"soon gone")
    (tmp_path / "stays.pdf").write_bytes(b"stays")
    drops = watcher(tmp_path, handle)
    await drops.start()
    try:
        await eventually(lambda: (tmp_path / "done" / "stays.pdf").exists())
        await asyncio.sleep(STABLE * 2)
    finally:
        await drops.stop()
    assert sorted(calls) == ["gone.pdf", "stays.pdf"]
    assert not (tmp_path / "error").exists()


async def test_names_colliding_in_done_and_error_get_a_suffix(tmp_path: Path) -> None:
    for n in range(3):
        (tmp_path / "scan.pdf").write_bytes(f"copy {n}".encode())
        (tmp_path / "scan.pdf.json").write_text("{}", encoding="utf-8")
        moved = move_done(tmp_path / "scan.pdf", companions=[tmp_path / "scan.pdf.json"])
        assert moved.read_bytes() == f"copy {n}".encode()
        assert moved.with_name(moved.name + ".json").exists()
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == [
        "scan-2.pdf",
        "scan-2.pdf.json",
        "scan-3.pdf",
        "scan-3.pdf.json",
        "scan.pdf",
        "scan.pdf.json",
    ]
    (tmp_path / "error").mkdir()
    (tmp_path / "error" / "x.pdf.reason.txt").write_text("an older reason", encoding="utf-8")
    (tmp_path / "x.pdf").write_bytes(b"x")
    moved = move_error(tmp_path / "x.pdf", "too big")
    assert moved.name == "x-2.pdf"
    assert (tmp_path / "error" / "x.pdf.reason.txt").read_text(encoding="utf-8") == (
        "an older reason"
    )
    assert (tmp_path / "error" / "x-2.pdf.reason.txt").read_text(encoding="utf-8") == "too big\n"


async def test_a_main_file_waits_for_its_sidecar_and_takes_it_along(tmp_path: Path) -> None:
    handled: list[tuple[str, str]] = []

    async def handle(path: Path) -> None:
        sidecar = path.with_name(path.name + ".json")
        handled.append((path.name, await asyncio.to_thread(sidecar.read_text, "utf-8")))
        raise ValueError("refused with its sidecar")

    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4 scan")
    drops = watcher(tmp_path, handle, sidecar_suffix=".json")
    await drops.start()
    try:
        with (tmp_path / "scan.pdf.json").open("w", encoding="utf-8") as out:
            for part in ('{"dossier_ref": ', '"AS-2026-000001"', "}"):
                out.write(part)
                out.flush()
                await asyncio.sleep(STABLE / 2)
                assert handled == [], "taken before its sidecar was complete"
        await eventually(lambda: (tmp_path / "error" / "scan.pdf").exists())
        await asyncio.sleep(STABLE * 2)
    finally:
        await drops.stop()
    assert handled == [("scan.pdf", '{"dossier_ref": "AS-2026-000001"}')]
    assert (tmp_path / "error" / "scan.pdf.json").exists()
    assert (tmp_path / "error" / "scan.pdf.reason.txt").exists()


async def test_a_lonely_sidecar_waits_then_is_handled_as_a_file(tmp_path: Path) -> None:
    recorder = Recorder()
    (tmp_path / "orphan.pdf.json").write_text("{}", encoding="utf-8")
    drops = watcher(tmp_path, recorder, sidecar_suffix=".json", orphan_sidecar_seconds=1.0)
    await drops.start()
    try:
        await asyncio.sleep(STABLE * 2)
        assert recorder.seen == [], "a sidecar may arrive before its scan"
        await eventually(lambda: len(recorder.seen) == 1)
    finally:
        await drops.stop()
    assert recorder.seen == [("orphan.pdf.json", b"{}")]


@pytest.mark.parametrize("bad", ["scan.pdf", "other.pdf.json"])
def test_companions_must_share_the_main_name(tmp_path: Path, bad: str) -> None:
    (tmp_path / "scan.pdf").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be named"):
        move_done(tmp_path / "scan.pdf", companions=[tmp_path / bad])
    assert (tmp_path / "scan.pdf").exists()


async def test_try_later_leaves_the_file_for_another_pass(tmp_path: Path) -> None:
    attempts: list[str] = []

    async def handle(path: Path) -> None:
        attempts.append(path.name)
        if len(attempts) == 1:
            raise TryLater("store unreachable")
        await asyncio.to_thread(move_done, path)

    (tmp_path / "scan.pdf").write_bytes(b"scan")
    drops = watcher(tmp_path, handle)
    await drops.start()
    try:
        await eventually(lambda: (tmp_path / "done" / "scan.pdf").exists())
    finally:
        await drops.stop()
    assert attempts == ["scan.pdf", "scan.pdf"]
    assert not (tmp_path / "error").exists()
