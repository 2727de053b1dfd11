"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from models import blobs as blobs_module
from models.blobs import BlobStore, BlobStoreError


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"facture")
    assert digest == hashlib.sha256(b"facture").hexdigest()
    assert blobs.put(b"facture") == digest
    assert blobs.get(digest) == b"facture"
    path = blobs.path_for(digest)
    assert path.parent.parent.parent == tmp_path
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_unwritable_folder_raises_blob_store_error_and_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a file where the folder should be fails for everyone.
        root = tmp_path / "blobs"
        root.write_bytes(b"not a folder")
    else:
        root = tmp_path / "blobs"
        root.mkdir()
        root.chmod(0o500)
    blobs = BlobStore(root)
    with pytest.raises(BlobStoreError, match="blob store"):
        blobs.put(b"x")


def test_rejects_paths_that_are_not_digests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        BlobStore(tmp_path).get("../../etc/passwd")


def test_delete_removes_a_blob_and_is_quiet_when_there_is_none(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"facture")
    assert blobs.delete(digest) is True
    assert not blobs.exists(digest)
    with pytest.raises(FileNotFoundError):
        blobs.get(digest)
    assert blobs.delete(digest) is False
    assert blobs.delete(hashlib.sha256(b"never stored").hexdigest()) is False
    with pytest.raises(ValueError, match="not a sha256"):
        blobs.delete("../../etc/passwd")


def test_a_blob_set_aside_is_hidden_until_restored_or_discarded(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    kept, dropped = blobs.put(b"kept"), blobs.put(b"dropped")
    assert blobs.set_aside(kept) and blobs.set_aside(dropped)
    assert not blobs.exists(kept) and not blobs.exists(dropped)
    assert blobs.set_aside(kept) is False  # nothing left to hide

    assert blobs.restore(kept) is True
    assert blobs.get(kept) == b"kept"
    assert blobs.discard(dropped) is True
    assert not blobs.exists(dropped)
    # Nothing aside any more: both are no-ops, and the restored blob is left alone.
    assert blobs.restore(dropped) is False and blobs.discard(kept) is False
    assert blobs.get(kept) == b"kept"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [kept]


def test_a_blob_written_again_while_set_aside_survives_either_outcome(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    first, second = blobs.put(b"one"), blobs.put(b"two")
    blobs.set_aside(first)
    blobs.set_aside(second)
    # A writer storing the same contents meanwhile finds them absent and writes them anew.
    assert blobs.put(b"one") == first and blobs.put(b"two") == second
    assert blobs.restore(first) is True
    assert blobs.discard(second) is True
    assert (blobs.get(first), blobs.get(second)) == (b"one", b"two")


def test_new_shard_folders_are_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob's file is fsync'd into its shard folder: the folders' own entries must be on disk
    too, or a crash could lose an acknowledged message with its folder."""
    synced: list[Path] = []
    real = blobs_module._fsync_folder

    def recording(folder: Path) -> None:
        synced.append(folder)
        real(folder)

    monkeypatch.setattr(blobs_module, "_fsync_folder", recording)
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put(b"premier")
    shard = blobs.path_for(digest).parent
    # The root, then each shard level, then the file's own entry in the leaf folder.
    assert synced == [tmp_path, tmp_path / "blobs", shard.parent, shard]
    synced.clear()
    other = b"premier bis"
    blobs.put(other)
    new_shard = blobs.path_for(hashlib.sha256(other).hexdigest()).parent
    # Folders that exist already are not synced again: only what was made, and the file.
    made = [p for p in (new_shard.parent, new_shard) if p not in (shard.parent, shard)]
    assert synced == [p.parent for p in made] + [new_shard]
