"""The content-addressed blob store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

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
