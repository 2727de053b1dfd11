"""Content-addressed blob store: sha256-named files written tmp, fsync, rename, fsync folder."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


class BlobStoreError(OSError):
    """The blob folder cannot take a write (missing, not writable, full)."""


class InsufficientStorage(BlobStoreError):
    """The disk of the blob folder is (nearly) full: new contacts must wait until space is
    freed, and transports answer with a temporary refusal (SMTP 452, HTTP 503)."""


#: Write errors that mean "no space", whatever the margin said a moment before.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _mb(size: int) -> str:
    # Megabytes, not bytes: the log filter masks long digit runs as if they were account numbers.
    return f"{size / 2**20:.1f} MB"


def write_durably(target: Path, content: bytes) -> None:
    """Write ``target`` whole or not at all, and durably: tmp, fsync, rename, fsync the folder.

    A reader never sees half a file, and a crash right after the return loses nothing.
    """
    _make_folders_durably(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # The rename is only durable once the folder entry itself is on disk.
    _fsync_folder(target.parent)


def _make_folders_durably(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each entry durable before the next is made:
    a file fsync'd into a shard folder whose own entry was lost in a crash is lost with it."""
    missing = []
    here = folder
    while not here.is_dir():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            # Another writer made it at the same moment; its entry may not be synced yet.
            if not new.is_dir():
                raise
        _fsync_folder(new.parent)


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class BlobStore:
    """Raw messages and attachments, stored once each whatever how often they arrive.

    The interface is ``put``/``get``/``exists``/``delete`` on sha256 digests (and
    ``set_aside``/``restore``/``discard`` for a removal that may have to be undone, and
    ``ensure_writable``/``ensure_room`` before an accept) so that a shared folder can later be
    swapped for an object store without touching the callers.
    """

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = root
        #: Space kept free on the disk: new contacts are refused below it, so that those
        #: already accepted can still be processed (documents, replies, the database).
        self.min_free_bytes = min_free_bytes

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the blob folder's disk."""
        # A fresh home has no blob folder yet: its nearest existing parent is on the same disk.
        here = self.root
        while not here.exists() and here.parent != here:
            here = here.parent
        return shutil.disk_usage(here).free

    def ensure_room(self, incoming: int) -> None:
        """Raise ``InsufficientStorage`` when storing ``incoming`` more bytes would leave less
        than ``min_free_bytes`` free; called before a new contact is accepted."""
        if self.min_free_bytes <= 0:
            return
        try:
            free = self.free_bytes()
        except OSError as exc:
            raise BlobStoreError(
                exc.errno, f"blob store {self.root}: cannot measure free space: {exc}"
            ) from exc
        if free - incoming < self.min_free_bytes:
            raise InsufficientStorage(
                errno.ENOSPC,
                f"blob store {self.root}: {_mb(free)} free, {_mb(incoming)} to store, under the"
                f" {_mb(self.min_free_bytes)} kept free (setting min_free_bytes); new contacts"
                " are refused until space is freed",
            )

    def ensure_writable(self) -> None:
        """Raise ``BlobStoreError`` unless a file can be created in the blob folder now; for
        accepts whose bytes wait in the database before they are written here."""
        try:
            if not self.root.is_dir():
                self.root.mkdir(parents=True)
        except OSError as exc:
            error = InsufficientStorage if exc.errno in _NO_SPACE else BlobStoreError
            raise error(exc.errno, f"blob store {self.root}: {exc.strerror or exc}") from exc
        # access(2) answers for permissions and read-only mounts alike, without a write: a
        # probe file cost more than the rest of an accept's checks. Space is ensure_room's.
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise BlobStoreError(errno.EACCES, f"blob store {self.root}: not writable")

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, content: bytes) -> str:
        """Store ``content`` durably and return its sha256; a no-op when it is already there."""
        digest = hashlib.sha256(content).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            return digest
        try:
            write_durably(target, content)
        except OSError as exc:
            error = InsufficientStorage if exc.errno in _NO_SPACE else BlobStoreError
            raise error(exc.errno, f"blob store {self.root}: {exc.strerror or exc}") from exc
        return digest

    def get(self, digest: str) -> bytes:
        return self.path_for(digest).read_bytes()

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).exists()

    def delete(self, digest: str) -> bool:
        """Remove the blob of ``digest`` for good; True if there was one, False if not."""
        try:
            self.path_for(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    # A removal in two steps, for the retention purge: the blob is hidden first, then, once the
    # references have been read again, either restored or discarded. While it is hidden,
    # ``exists``/``get`` do not see it and ``put`` writes it anew, so a writer racing the removal
    # keeps its own copy whatever the outcome, and the hidden bytes survive a crash.

    def _aside(self, digest: str) -> Path:
        # Beside the blob, under a name that is not a digest: get and exists never see it.
        return self.path_for(digest).with_name(f".purge-{digest}")

    def set_aside(self, digest: str) -> bool:
        """Hide the blob of ``digest`` until ``restore`` or ``discard``; False if absent."""
        try:
            os.replace(self.path_for(digest), self._aside(digest))
        except FileNotFoundError:
            return False
        return True

    def restore(self, digest: str) -> bool:
        """Bring back a blob set aside; False if none was. A copy ``put`` wrote meanwhile has
        the same content (it is named by it), so replacing it changes nothing."""
        target = self.path_for(digest)
        try:
            os.replace(self._aside(digest), target)
        except FileNotFoundError:
            return False
        # A restored blob is one a committed row refers to: its name must survive a crash.
        _fsync_folder(target.parent)
        return True

    def discard(self, digest: str) -> bool:
        """Remove a blob set aside for good; False if none was. A copy ``put`` wrote since the
        blob was set aside is someone else's and stays."""
        try:
            self._aside(digest).unlink()
        except FileNotFoundError:
            return False
        return True
